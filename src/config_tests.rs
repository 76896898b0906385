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
fn bad_files_and_open_listeners_are_refused() {
    let (_dir, cfg) = temp_file("b.toml", "host-id = 4\ncolour = \"red\"\n");
    let e = DaemonConfig::resolve(&serve_args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = DaemonConfig::resolve(&serve_args(&["--host-id", "1", "--listen", "0.0.0.0:80"]))
        .unwrap_err();
    assert!(e.contains("without authentication"), "{e}");
    let ok = DaemonConfig::resolve(&serve_args(&[
        "--host-id",
        "1",
        "--listen",
        "0.0.0.0:80",
        "--insecure-no-auth",
    ]));
    assert!(ok.is_ok());
    let (_tdir, token) = temp_file("token", "s3cret\n");
    let c = DaemonConfig::resolve(&serve_args(&[
        "--host-id",
        "1",
        "--listen",
        "0.0.0.0:80",
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
