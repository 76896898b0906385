//! Root tests of `creepy-meow setup` on the real kernel, on simulated servers in namespaces the
//! lab creates (and removes, even on failure).

mod common;

use std::net::Ipv4Addr;
use std::process::Output;

use common::serve::BIN;
use common::{Lab, Server};

fn setup(server: &Server, args: &[&str]) -> Output {
    server.run(BIN, std::iter::once("setup").chain(args.iter().copied()))
}

fn setup_ok(server: &Server, args: &[&str]) -> String {
    let out = setup(server, args);
    assert!(
        out.status.success(),
        "setup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links(server: &Server) -> String {
    server.run_ok("ip", ["-d", "link", "show"])
}

fn addrs(server: &Server) -> String {
    server.run_ok("ip", ["-4", "-br", "addr", "show"])
}

#[test]
fn two_servers_reach_each_other_over_every_vlan_and_a_rerun_changes_nothing() {
    let lab = Lab::new(2);
    for s in lab.servers() {
        let host_id = s.host_id.to_string();
        let out = setup_ok(s, &["--host-id", &host_id]);
        assert!(out.contains("create vxlan vxlan2"), "{out}");
    }
    let s1 = lab.server(1);
    for v in 2..=4u8 {
        let vx = s1.run_ok("ip", ["-d", "link", "show", &format!("vxlan{v}")]);
        for want in [
            format!("vxlan id {v} group 239.0.0.{v} dev eth1"),
            "dstport 4789".to_string(),
            format!("master br{v}"),
            "mtu 1450".to_string(),
        ] {
            assert!(vx.contains(&want), "vxlan{v} lacks {want:?}:\n{vx}");
        }
        let br = s1.run_ok(
            "ip",
            ["-4", "-br", "addr", "show", "dev", &format!("br{v}")],
        );
        assert!(br.contains(&format!("192.168.{v}.1/24")), "{br}");
        let port = s1.run_ok(
            "ip",
            ["-4", "-br", "addr", "show", "dev", &format!("vxlan{v}")],
        );
        assert!(
            !port.contains("192.168"),
            "the host address must not be on the port: {port}"
        );
        assert!(
            s1.ping(Ipv4Addr::new(192, 168, v, 2)),
            "server 1 cannot reach server 2 on vlan {v}"
        );
    }
    assert!(
        s1.ping_size(Ipv4Addr::new(192, 168, 2, 2), 1450 - 28, true),
        "full-MTU packet lost"
    );

    let (before_links, before_addrs) = (links(s1), addrs(s1));
    let out = setup_ok(s1, &["--host-id", "1"]);
    assert_eq!(
        out.trim(),
        "mode: multicast (VLAN V floods to group 239.0.0.V)\nfabric is up to date; nothing changed"
    );
    assert_eq!(addrs(s1), before_addrs);
    assert_eq!(
        strip_counters(&links(s1)),
        strip_counters(&before_links),
        "a second setup changed links"
    );
}

/// `ip -d link` shows timers that move on their own; keep the lines that describe config.
fn strip_counters(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.contains("timer"))
        .map(|l| l.split(" hold_timer").next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn wrong_attributes_are_repaired_and_foreign_links_refused() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    setup_ok(s, &["--host-id", "1"]);
    s.run_ok("ip", ["link", "del", "vxlan2"]);
    s.run_ok(
        "ip",
        [
            "link",
            "add",
            "vxlan2",
            "type",
            "vxlan",
            "id",
            "7",
            "group",
            "239.0.0.2",
            "dev",
            "eth1",
            "dstport",
            "8472",
        ],
    );
    s.run_ok("ip", ["addr", "add", "192.168.3.1/24", "dev", "vxlan3"]);
    s.run_ok("ip", ["addr", "del", "192.168.3.1/24", "dev", "br3"]);
    let out = setup_ok(s, &["--host-id", "1"]);
    assert!(
        out.contains("delete vxlan2: vxlan2 has VNI 7 (want 2), dstport 8472 (want 4789)"),
        "{out}"
    );
    assert!(out.contains("remove 192.168.3.1/24 from vxlan3"), "{out}");
    assert!(out.contains("add 192.168.3.1/24 to br3"), "{out}");
    let vx = s.run_ok("ip", ["-d", "link", "show", "vxlan2"]);
    assert!(
        vx.contains("vxlan id 2 ") && vx.contains("dstport 4789") && vx.contains("master br2"),
        "{vx}"
    );
    assert!(setup_ok(s, &["--host-id", "1"])
        .trim()
        .ends_with("\nfabric is up to date; nothing changed"));

    // A link of another kind under a fabric name is not ours to delete.
    s.run_ok("ip", ["link", "del", "br4"]);
    s.run_ok(
        "ip",
        [
            "link", "add", "br4", "type", "veth", "peer", "name", "br4peer",
        ],
    );
    let before = links(s);
    let out = setup(s, &["--host-id", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("link br4 exists but is a veth, not a bridge"),
        "{err}"
    );
    assert_eq!(
        strip_counters(&links(s)),
        strip_counters(&before),
        "a refused setup changed the host"
    );
}

#[test]
fn bad_input_gets_one_line_and_exit_2_and_leaves_the_host_alone() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let before = (links(s), addrs(s));
    let cases: [(&[&str], &str); 10] = [
        (&["--host-id", "0"], "host id 0 is out of range"),
        (&["--host-id", "255"], "host id 255 is out of range"),
        (
            &["--host-id", "1", "--vlans", "2,2"],
            "vlan 2 is listed twice",
        ),
        (
            &["--host-id", "1", "--vlans", "2,300"],
            "vlan 300 is out of range",
        ),
        (
            &["--host-id", "1", "--underlay", "eth7"],
            "underlay interface eth7 not found; pass --underlay",
        ),
        (&["--host-id", "1", "--mtu", "1500"], "at most 1450"),
        (
            &["--host-id", "1", "--peers", "10.77.0.2,10.77.0.2"],
            "peer 10.77.0.2 is listed twice",
        ),
        (
            &["--host-id", "1", "--peers", "10.77.0.2,239.0.0.2"],
            "peer 239.0.0.2 is a multicast address",
        ),
        (
            &["--host-id", "1", "--peers", "127.0.0.1"],
            "peer 127.0.0.1 is a loopback address",
        ),
        (
            &["--host-id", "1", "--peers", "10.77.0.2,server3"],
            "peer \"server3\" is not an IPv4 address",
        ),
    ];
    for (args, want) in cases {
        let out = setup(s, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!((links(s), addrs(s)), before);
}

#[test]
fn custom_vlans_and_removal() {
    let lab = Lab::new(2);
    for s in lab.servers() {
        setup_ok(s, &["--host-id", &s.host_id.to_string(), "--vlans", "5,7"]);
    }
    let s1 = lab.server(1);
    let all = links(s1);
    assert!(all.contains("br5") && all.contains("vxlan7"), "{all}");
    assert!(
        !all.contains("br2:") && !all.contains("vxlan2:"),
        "default VLANs were built: {all}"
    );
    assert!(s1.ping(Ipv4Addr::new(192, 168, 7, 2)));

    // A container-like port on br5 blocks removal until --force.
    s1.run_ok(
        "ip",
        [
            "link",
            "add",
            "vethc_br9",
            "type",
            "veth",
            "peer",
            "name",
            "vethc_9",
        ],
    );
    s1.run_ok("ip", ["link", "set", "vethc_br9", "master", "br5"]);
    let out = setup(s1, &["--remove", "--vlans", "5,7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("br5 still has container ports (vethc_br9)")
    );
    let out = setup_ok(s1, &["--remove", "--force", "--vlans", "5,7"]);
    assert!(
        out.contains("delete br5") && out.contains("delete vxlan7"),
        "{out}"
    );
    let left = s1.run_ok("ip", ["-br", "link"]);
    assert!(!left.contains("br5") && !left.contains("vxlan7"), "{left}");
    assert_eq!(
        setup_ok(s1, &["--remove", "--vlans", "5,7"]).trim(),
        "nothing to remove"
    );
}
