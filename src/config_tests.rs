use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};
use crate::test_support::TempDir;

fn serve_args(argv: &[&str]) -> ServeArgs {
    let mut full = vec!["creepy-meow", "serve"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Serve(a) => a,
        other => panic!("{other:?}"),
    }
}

/// Writes `text` to a file in a directory removed when the returned guard drops.
fn temp_file(name: &str, text: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("config");
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

#[test]
fn defaults_are_safe() {
    let c = DaemonConfig::resolve(&serve_args(&["--host-id", "3"])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.fabric.underlay, "eth1");
    assert_eq!(c.fabric.vlans.len(), 3);
    assert_eq!(c.templates.names(), ["busybox"]);
    assert!(c.token.is_none());
    assert_eq!(c.step_timeout, crate::steps::DEFAULT_STEP_TIMEOUT);
}

#[test]
fn flags_win_over_the_file() {
    let (_dir, cfg) = temp_file(
        "a.toml",
        "host-id = 4\nvlans = [2, 5]\nunderlay = \"ens4\"\ntemplate = \"download\"\nkeep-jobs = 50\nkeep-days = 2\n",
    );
    let c = DaemonConfig::resolve(&serve_args(&[
        "--config",
        cfg.to_str().unwrap(),
        "--underlay",
        "eth9",
    ]))
    .unwrap();
    assert_eq!(c.fabric.host_id.get(), 4);
    assert_eq!(c.fabric.underlay, "eth9");
    assert_eq!(
        c.fabric.vlans.iter().map(|v| v.get()).collect::<Vec<_>>(),
        [2, 5]
    );
    assert_eq!(c.templates.default_template().lxc_template, "download");
    assert_eq!(c.store.keep_finished, 50);
    assert_eq!(c.store.keep_for.as_secs(), 2 * 24 * 3600);
}

#[test]
fn the_step_timeout_comes_from_the_flag_over_the_file_and_is_never_zero() {
    let (_dir, cfg) = temp_file("s.toml", "host-id = 1\nstep-timeout = 90\n");
    let path = cfg.to_str().unwrap();
    let c = DaemonConfig::resolve(&serve_args(&["--config", path])).unwrap();
    assert_eq!(c.step_timeout.as_secs(), 90);
    let c = DaemonConfig::resolve(&serve_args(&["--config", path, "--step-timeout", "5"]));
    assert_eq!(c.unwrap().step_timeout.as_secs(), 5);
    let e = DaemonConfig::resolve(&serve_args(&["--config", path, "--step-timeout", "0"]));
    let e = e.unwrap_err();
    assert_eq!(e, "--step-timeout must be at least 1 second");
}

#[test]
fn bad_files_and_open_listeners_are_refused() {
    let (_dir, cfg) = temp_file("b.toml", "host-id = 4\ncolour = \"red\"\n");
    let e = DaemonConfig::resolve(&serve_args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = DaemonConfig::resolve(&serve_args(&["--host-id", "1", "--listen", "0.0.0.0:80"]))
        .unwrap_err();
    assert!(e.contains("without TLS and without authentication"), "{e}");
    let ok = DaemonConfig::resolve(&serve_args(&[
        "--host-id",
        "1",
        "--listen",
        "0.0.0.0:80",
        "--insecure-no-auth",
        "--insecure-plain-http",
    ]));
    assert!(ok.is_ok());
    let (_tdir, token) = temp_file("token", "s3cret\n");
    let c = DaemonConfig::resolve(&serve_args(&[
        "--host-id",
        "1",
        "--listen",
        "0.0.0.0:80",
        "--insecure-plain-http",
        "--token-file",
        token.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(c.token.as_deref(), Some("s3cret"));
    let e = DaemonConfig::resolve(&serve_args(&["--listen", "127.0.0.1:1"])).unwrap_err();
    assert!(e.contains("--host-id is required"), "{e}");
}

#[test]
fn the_files_vlan_list_is_checked_like_the_flag() {
    for (text, want) in [
        ("vlans = [2, 2]\n", "config vlans: vlan 2 is listed twice"),
        ("vlans = []\n", "config vlans: the vlan list is empty"),
        ("vlans = [2, 5000]\n", "config vlans: "),
    ] {
        let (_dir, cfg) = temp_file("v.toml", text);
        let err = DaemonConfig::resolve(&serve_args(&[
            "--host-id",
            "1",
            "--config",
            cfg.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(err.starts_with(want), "{text}: {err}");
    }
}

#[test]
fn peers_come_from_the_flag_over_the_file_checked_alike() {
    let (_dir, cfg) = temp_file(
        "p.toml",
        "host-id = 1\npeers = [\"10.0.0.2\", \"10.0.0.3\"]\n",
    );
    let path = cfg.to_str().unwrap();
    let c = DaemonConfig::resolve(&serve_args(&["--config", path])).unwrap();
    assert_eq!(
        c.fabric.peers,
        [[10, 0, 0, 2], [10, 0, 0, 3]].map(std::net::Ipv4Addr::from)
    );
    assert_eq!(c.fabric.mode().to_string(), "unicast");
    let flag = DaemonConfig::resolve(&serve_args(&["--config", path, "--peers", "10.0.0.9"]));
    assert_eq!(
        flag.unwrap().fabric.peers,
        [std::net::Ipv4Addr::new(10, 0, 0, 9)]
    );
    let none = DaemonConfig::resolve(&serve_args(&["--host-id", "1"])).unwrap();
    assert_eq!(none.fabric.mode().to_string(), "multicast");
    for (text, want) in [
        (
            "peers = [\"10.0.0.2\", \"10.0.0.2\"]\n",
            "config peers: peer 10.0.0.2 is listed twice",
        ),
        (
            "peers = [\"224.0.0.5\"]\n",
            "config peers: peer 224.0.0.5 is a multicast address",
        ),
        (
            "peers = [\"::1\"]\n",
            "config peers: peer ::1 is an IPv6 address",
        ),
    ] {
        let (_dir, cfg) = temp_file("q.toml", text);
        let args = ["--host-id", "1", "--config", cfg.to_str().unwrap()];
        let err = DaemonConfig::resolve(&serve_args(&args)).unwrap_err();
        assert!(err.starts_with(want), "{text}: {err}");
    }
    let bad = Cli::try_parse_from(["creepy-meow", "setup", "--peers", "10.0.0.2,127.0.0.1"]);
    let err = bad.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("peer 127.0.0.1 is a loopback address"),
        "{err}"
    );
}

#[test]
fn several_templates_with_their_options_the_first_the_default() {
    let (_dir, cfg) = temp_file(
        "t.toml",
        "host-id = 4\ntemplates = [\"busybox\", \"alt\"]\n[template-options.alt]\nlxc-template = \"busybox\"\nargs = [\"--busybox-path\", \"/bin/busybox\"]\n",
    );
    let c = DaemonConfig::resolve(&serve_args(&["--config", cfg.to_str().unwrap()])).unwrap();
    assert_eq!(c.templates.names(), ["busybox", "alt"]);
    let alt = c.templates.resolve(Some("alt")).unwrap();
    assert_eq!(
        (alt.lxc_template.as_str(), alt.args.clone()),
        (
            "busybox",
            vec!["--busybox-path".to_string(), "/bin/busybox".into()]
        )
    );
    let flags = DaemonConfig::resolve(&serve_args(&[
        "--config",
        cfg.to_str().unwrap(),
        "--templates",
        "alt,busybox",
    ]))
    .unwrap();
    assert_eq!(flags.templates.default_template().name, "alt");
}

#[test]
fn a_template_list_mixed_with_a_single_template_or_unknown_options_is_refused() {
    let mixed = DaemonConfig::resolve(&serve_args(&[
        "--host-id",
        "3",
        "--templates",
        "busybox",
        "--template",
        "download",
    ]))
    .unwrap_err();
    assert!(mixed.contains("not both"), "{mixed}");
    let (_dir, cfg) = temp_file(
        "u.toml",
        "host-id = 4\ntemplates = [\"busybox\"]\n[template-options.other]\nargs = []\n",
    );
    let unknown =
        DaemonConfig::resolve(&serve_args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    assert!(unknown.contains("template-options.other"), "{unknown}");
}

#[test]
fn off_loopback_a_listener_needs_tls_and_a_token_each_unless_waived() {
    let open: SocketAddr = "0.0.0.0:8443".parse().unwrap();
    let all = Exposure {
        tls: true,
        token: true,
        ..Exposure::default()
    };
    assert_eq!(all.check(open), Ok(()));
    assert!(all.warnings(open).is_empty());
    let no_tls = Exposure { tls: false, ..all };
    let e = no_tls.check(open).unwrap_err();
    assert_eq!(
        e,
        "refusing to listen on 0.0.0.0:8443 without TLS: pass --tls-cert FILE --tls-key FILE (or --insecure-plain-http)"
    );
    let no_token = Exposure {
        token: false,
        ..all
    };
    let e = no_token.check(open).unwrap_err();
    assert!(
        e.ends_with("without authentication: pass --token-file FILE (or --insecure-no-auth)"),
        "{e}"
    );
    // Each waiver lets its own protection go, and is warned about; never the other one.
    let plain = Exposure {
        insecure_plain_http: true,
        ..no_tls
    };
    assert_eq!(plain.check(open), Ok(()));
    assert!(Exposure {
        token: false,
        ..plain
    }
    .check(open)
    .is_err());
    let warned = plain.warnings(open);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("serving plain HTTP on 0.0.0.0:8443"),
        "{warned:?}"
    );
    let no_auth = Exposure {
        insecure_no_auth: true,
        ..no_token
    };
    assert_eq!(no_auth.check(open), Ok(()));
    assert!(no_auth.warnings(open)[0].starts_with("serving without authentication"));
    // Loopback needs neither, for IPv4 and IPv6 alike, and warns of nothing.
    for local in ["127.0.0.1:8080", "[::1]:8080"] {
        let local: SocketAddr = local.parse().unwrap();
        assert_eq!(Exposure::default().check(local), Ok(()));
        assert!(Exposure::default().warnings(local).is_empty());
    }
    // TLS and its waiver together are a mistake, wherever it listens.
    let both = Exposure {
        insecure_plain_http: true,
        ..all
    };
    assert!(both
        .check("127.0.0.1:1".parse().unwrap())
        .unwrap_err()
        .contains("contradicts"));
}

#[test]
fn tls_files_are_read_at_resolve_and_a_bad_one_is_one_sentence() {
    let (_dir, junk) = temp_file("junk.pem", "not a certificate\n");
    let junk = junk.to_str().unwrap();
    let resolve = |extra: &[&str]| {
        let mut argv = vec!["--host-id", "1"];
        argv.extend_from_slice(extra);
        DaemonConfig::resolve(&serve_args(&argv))
    };
    let e = resolve(&["--tls-cert", junk]).unwrap_err();
    assert_eq!(
        e,
        "--tls-cert needs --tls-key, the certificate's private key"
    );
    let e = resolve(&["--tls-key", junk]).unwrap_err();
    assert_eq!(
        e,
        "--tls-key needs --tls-cert, the certificate it belongs to"
    );
    let e = resolve(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", junk]).unwrap_err();
    assert!(
        e.starts_with("cannot read the TLS certificate file /nonexistent/cert.pem: "),
        "{e}"
    );
    let e = resolve(&["--tls-cert", junk, "--tls-key", junk]).unwrap_err();
    assert_eq!(
        e,
        format!("the TLS certificate file {junk} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)")
    );
    let (_bdir, broken) = temp_file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let e = resolve(&["--tls-cert", broken.to_str().unwrap(), "--tls-key", junk]).unwrap_err();
    assert!(e.contains("is not valid PEM"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn the_config_file_names_the_tls_keys_as_the_flags() {
    let (_dir, cfg) = temp_file(
        "tls.toml",
        "host-id = 2\nlisten = \"0.0.0.0:8443\"\ntls-cert = \"/nonexistent/c.pem\"\ntls-key = \"/nonexistent/k.pem\"\n",
    );
    let e = DaemonConfig::resolve(&serve_args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    assert!(e.contains("/nonexistent/c.pem"), "{e}");
    let (_dir, lab) = temp_file(
        "lab.toml",
        "host-id = 2\nlisten = \"0.0.0.0:8080\"\ninsecure-plain-http = true\ninsecure-no-auth = true\n",
    );
    let c = DaemonConfig::resolve(&serve_args(&["--config", lab.to_str().unwrap()])).unwrap();
    assert!(c.tls.is_none() && c.token.is_none());
}

#[test]
fn cluster_mode_comes_from_etcd_and_makes_the_fabric_unicast() {
    let alone = DaemonConfig::resolve(&serve_args(&["--host-id", "1"])).unwrap();
    assert!(alone.cluster.is_none());
    let (_dir, cfg) = temp_file(
        "c.toml",
        "host-id = 1\netcd = [\"http://10.0.0.9:2379\"]\ncluster = \"lab\"\n",
    );
    let path = cfg.to_str().unwrap();
    let c = DaemonConfig::resolve(&serve_args(&["--config", path])).unwrap();
    let cluster = c.cluster.clone().unwrap();
    assert_eq!(cluster.endpoints, ["http://10.0.0.9:2379"]);
    assert_eq!(
        (cluster.name.as_str(), cluster.api_url.as_str()),
        ("lab", "http://127.0.0.1:8080")
    );
    assert!(c.fabric.cluster_peers);
    assert_eq!(c.fabric.mode().to_string(), "unicast");
    let flags = [
        "--config",
        path,
        "--etcd",
        "http://a:2379,http://b:2379",
        "--api-url",
        "https://s1:8443",
    ];
    let c = DaemonConfig::resolve(&serve_args(&flags))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(c.endpoints, ["http://a:2379", "http://b:2379"]);
    assert_eq!(
        (c.name.as_str(), c.api_url.as_str()),
        ("lab", "https://s1:8443")
    );
    for (argv, want) in [
        (&["--etcd", "10.0.0.9:2379"][..], "is not a URL"),
        (
            &["--etcd", "https://e:2379"][..],
            "etcd over TLS is not supported yet",
        ),
        (
            &["--etcd", "http://e:2379", "--cluster", "a/b"][..],
            "cluster name \"a/b\"",
        ),
        (&["--cluster", "lab"][..], "give --etcd too"),
        (
            &["--etcd", "http://e:2379", "--peers", "10.0.0.2"][..],
            "leave out --peers",
        ),
    ] {
        let mut args = vec!["--host-id", "1"];
        args.extend_from_slice(argv);
        let err = DaemonConfig::resolve(&serve_args(&args)).unwrap_err();
        assert!(err.contains(want), "{argv:?}: {err}");
    }
}
