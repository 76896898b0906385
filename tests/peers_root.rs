//! Unicast VXLAN peers (issue 15) on three simulated servers whose switch drops IPv4
//! multicast, as most clouds do: the multicast fabric is proven blocked, then `--peers` makes
//! every pair of containers in one VLAN reach each other across all three servers, with the
//! VLANs still apart; a peer removed from the list loses its entries and nothing else changes;
//! the same list again changes nothing; switching modes keeps the running containers.

mod common;

use std::net::Ipv4Addr;
use std::process::Output;

use common::containers::{pid_of, ping_from};
use common::daemon::{Daemon, API};
use common::serve::BIN;
use common::switch::{drop_multicast, flood_peers, switch_nft};
use common::{Lab, Server};

/// Every server's underlay address, this one's included (it is skipped).
const ALL: &str = "10.77.0.1,10.77.0.2,10.77.0.3";

/// The VLAN 2 containers, one per server (index = host id - 1): `container1N` at
/// `192.168.2.1N`.
const VLAN2: [u32; 3] = [11, 12, 13];
/// A VLAN 3 container on server 2, in VLAN 2's subnet: reaching it would cross VLANs.
const OTHER_VLAN: u32 = 14;
/// An operator's static entry for a real MAC on server 1's `vxlan2`: not the fabric's.
const OPERATORS_MAC: &str = "52:54:00:12:34:56 dst 10.77.0.9";

fn addr(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 2, id as u8)
}

fn name(id: u32) -> String {
    format!("container{id}")
}

fn setup(server: &Server, extra: &[&str]) -> Output {
    let id = server.host_id.to_string();
    let args = ["setup", "--host-id", &id, "--vlans", "2,3"];
    server.run(BIN, args.iter().chain(extra))
}

/// `setup` that must succeed; returns what it printed.
fn setup_ok(server: &Server, extra: &[&str]) -> String {
    let out = setup(server, extra);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "setup {extra:?} on {}: {text}{}",
        server.netns,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Links (config lines: without timers), IPv4 addresses and the static forwarding entries of
/// `server`: what a `setup` that changes nothing must leave exactly as it was.
fn snapshot(server: &Server) -> String {
    let links = server.run_ok("ip", ["-d", "link", "show"]);
    let links: Vec<&str> = links
        .lines()
        .filter(|l| !l.contains("timer"))
        .map(|l| l.split(" hold_timer").next().unwrap_or(l))
        .collect();
    let addrs = server.run_ok("ip", ["-4", "-br", "addr", "show"]);
    let fdb = server.run_ok("bridge", ["fdb", "show"]);
    let fdb: Vec<&str> = fdb.lines().filter(|l| l.contains("permanent")).collect();
    format!("{}\n{addrs}\n{}", links.join("\n"), fdb.join("\n"))
}

/// A container's identity on its server: its init PID and its host veth's index. Both change
/// if the container is made or started again.
fn identity(server: &Server, id: u32) -> (String, String) {
    let veth = server.run_ok("ip", ["-o", "link", "show", &format!("vethc_br{id}")]);
    let index = veth.split(':').next().unwrap_or("").to_string();
    (pid_of(server, &name(id)), index)
}

/// Creates container `id` on `vlan` at `192.168.2.<id>` through `d`, and waits for it.
fn create(d: &Daemon, id: u32, vlan: u8) {
    let body = format!("id={id}&vlan={vlan}&ip=192.168.2.{id}/24");
    let url = format!("{API}/api/container/create");
    let accepted = d.json(&["-s", "--data", &body, &url]);
    let job = d.wait(accepted["job_id"].as_str().expect("accepted"));
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
}

/// Every ordered pair of VLAN 2 containers on different servers pings.
fn assert_all_pairs_reach(lab: &Lab, when: &str) {
    for (i, &from) in VLAN2.iter().enumerate() {
        for &to in VLAN2.iter().filter(|&&to| to != from) {
            assert!(
                ping_from(lab.server(i + 1), &name(from), addr(to)),
                "{when}: {} cannot reach {}",
                name(from),
                name(to)
            );
        }
    }
}

/// No VLAN 2 container reaches the VLAN 3 one, though it sits in the same subnet.
fn assert_vlans_apart(lab: &Lab, when: &str) {
    for (i, &from) in [VLAN2[0], VLAN2[2]].iter().enumerate() {
        let server = lab.server(if i == 0 { 1 } else { 3 });
        assert!(
            !ping_from(server, &name(from), addr(OTHER_VLAN)),
            "{when}: {} (VLAN 2) reached {} (VLAN 3)",
            name(from),
            name(OTHER_VLAN)
        );
    }
}

/// The containers' identities ([`identity`]) on `servers`, the VLAN 2 container of each.
fn identities(servers: &[&Server]) -> Vec<(String, String)> {
    let ids = servers.iter().map(|s| VLAN2[usize::from(s.host_id) - 1]);
    servers
        .iter()
        .zip(ids)
        .map(|(s, id)| identity(s, id))
        .collect()
}

#[test]
fn peers_carry_the_overlay_where_the_switch_drops_multicast() {
    let lab = Lab::new(3);
    drop_multicast(&lab);
    let all: Vec<&Server> = lab.servers().iter().collect();

    multicast_is_blocked(&lab);
    let before = identities(&all);
    switch_to_unicast(&lab);
    assert_eq!(
        identities(&all),
        before,
        "a container was made or started again by the switch"
    );
    same_list_changes_nothing(lab.server(1));
    server_3_leaves(&lab);
    serve_with_peers(lab.server(1));

    // Back to multicast, once the switch lets it through: the containers stay and reach
    // each other again.
    switch_nft(&lab, &["flush", "ruleset"]);
    let pair = [lab.server(1), lab.server(2)];
    let kept = identities(&pair);
    for s in pair {
        let out = setup_ok(s, &[]);
        assert!(out.starts_with("mode: multicast"), "{out}");
        assert!(
            out.contains("delete vxlan2: vxlan2 has group none (want 239.0.0.2)"),
            "{out}"
        );
        assert_eq!(flood_peers(s, "vxlan2"), ["239.0.0.2"]);
    }
    assert!(ping_from(pair[0], &name(VLAN2[0]), addr(VLAN2[1])));
    assert!(ping_from(pair[1], &name(VLAN2[1]), addr(VLAN2[0])));
    assert_eq!(
        identities(&pair),
        kept,
        "a container was made again by the switch back"
    );
}

/// Multicast mode, as before: daemons make the containers (VLAN 2 on each server, VLAN 3 on
/// server 2), and none reaches across the switch, whose rule counted the multicast it dropped.
/// The daemons are stopped after; the containers run on.
fn multicast_is_blocked(lab: &Lab) {
    let mut daemons: Vec<Daemon> = lab
        .servers()
        .iter()
        .map(|s| Daemon::start_with(s, None, &["--vlans", "2,3"]))
        .collect();
    for (d, &id) in daemons.iter().zip(&VLAN2) {
        create(d, id, 2);
    }
    create(&daemons[1], OTHER_VLAN, 3);
    assert!(
        !ping_from(lab.server(1), &name(VLAN2[0]), addr(VLAN2[1])),
        "multicast crossed a switch that drops it: the test proves nothing"
    );
    let counted = switch_nft(lab, &["list", "ruleset"]);
    assert!(
        !counted.contains("counter packets 0 "),
        "the drop rule saw no multicast: {counted}"
    );
    for d in &mut daemons {
        assert!(d.sigterm().success());
    }
}

/// Unicast with the same list everywhere, each server skipping itself: only the VXLAN devices
/// are made again, each lists the two others, every pair reaches, the VLANs stay apart.
fn switch_to_unicast(lab: &Lab) {
    let vxlan_only = [
        "delete vxlan",
        "create vxlan",
        "attach vxlan",
        "add peer ",
        "bring vxlan",
    ];
    for s in lab.servers() {
        let out = setup_ok(s, &["--peers", ALL]);
        let me = s.underlay_ip.to_string();
        let others: Vec<String> = ALL
            .split(',')
            .filter(|p| *p != me)
            .map(String::from)
            .collect();
        let mode = format!(
            "mode: unicast from {me} to 2 peers ({}); {me} is this server's own: skipped",
            others.join(", ")
        );
        assert_eq!(out.lines().next(), Some(mode.as_str()), "{out}");
        // No bridge, address or other port is touched.
        for action in out.lines().skip(1) {
            let ok = vxlan_only.iter().any(|p| action.starts_with(p));
            assert!(ok, "{}: {action}", s.netns);
        }
        for vx in ["vxlan2", "vxlan3"] {
            assert_eq!(flood_peers(s, vx), others, "{} {vx}", s.netns);
            let link = s.run_ok("ip", ["-d", "link", "show", vx]);
            let unicast = link.contains(&format!("local {me}")) && !link.contains("group 239.");
            assert!(unicast, "{link}");
        }
    }
    assert_all_pairs_reach(lab, "unicast");
    assert_vlans_apart(lab, "unicast");
}

/// The same list again changes nothing on `s`, not even an operator's entry for a real MAC
/// (which stays for the steps after).
fn same_list_changes_nothing(s: &Server) {
    let (mac, dst) = OPERATORS_MAC.split_once(" dst ").expect("mac dst");
    s.run_ok(
        "bridge",
        ["fdb", "append", mac, "dev", "vxlan2", "dst", dst],
    );
    let snap = snapshot(s);
    let out = setup_ok(s, &["--peers", ALL]);
    assert!(
        out.ends_with("fabric is up to date; nothing changed\n"),
        "{out}"
    );
    assert_eq!(
        snapshot(s),
        snap,
        "a second setup with the same peers changed the host"
    );
}

/// Servers 1 and 2 drop server 3 from their lists: only its entries go, and they still reach
/// each other; server 3's fabric is removed, its flood entries with it.
fn server_3_leaves(lab: &Lab) {
    for s in [lab.server(1), lab.server(2)] {
        let snap = snapshot(s);
        let out = setup_ok(s, &["--peers", "10.77.0.1,10.77.0.2"]);
        let actions: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(
            actions,
            [
                "remove peer 10.77.0.3 from vxlan2: not a peer any more",
                "remove peer 10.77.0.3 from vxlan3: not a peer any more",
            ],
            "{out}"
        );
        let gone: Vec<&str> = snap
            .lines()
            .filter(|l| !l.contains("dst 10.77.0.3 "))
            .collect();
        assert_eq!(snapshot(s).lines().collect::<Vec<_>>(), gone);
        let other = if s.host_id == 1 {
            "10.77.0.2"
        } else {
            "10.77.0.1"
        };
        assert_eq!(flood_peers(s, "vxlan2"), [other]);
    }
    let s1 = lab.server(1);
    let fdb = s1.run_ok("bridge", ["fdb", "show", "dev", "vxlan2"]);
    assert!(
        fdb.contains(OPERATORS_MAC),
        "the operator's entry went: {fdb}"
    );
    assert!(ping_from(s1, &name(VLAN2[0]), addr(VLAN2[1])));
    assert!(ping_from(lab.server(2), &name(VLAN2[1]), addr(VLAN2[0])));
    let s3 = lab.server(3);
    let out = setup_ok(s3, &["--remove", "--force"]);
    let removal = "delete vxlan2: fabric removal, with its flood entries to 10.77.0.1, 10.77.0.2";
    assert!(out.contains(removal), "{out}");
    assert!(!s3.run_ok("bridge", ["fdb", "show"]).contains("dst "));
}

/// `serve --peers` on `s` (whose fabric `setup` made with the same peers): it says the mode in
/// its log (JSON, to read the fields) and on `/healthz`, and repairs nothing.
fn serve_with_peers(s: &Server) {
    let peers = "10.77.0.1,10.77.0.2";
    let flags = ["--vlans", "2,3", "--peers", peers, "--log-format", "json"];
    let d = Daemon::start_with(s, None, &flags);
    let health = d.json(&["-s", &format!("{API}/healthz")]);
    assert_eq!(health["fabric"], "unicast", "{health}");
    let log = d.own_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let said = |message: &str| {
        let mut found = lines.iter().filter(|l| l["fields"]["message"] == message);
        found.next().map(|l| l["fields"].clone())
    };
    let ensured = said("fabric ensured").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(ensured["mode"], "unicast", "{log}");
    let flooding = ensured["flooding"].as_str().unwrap_or("");
    let want = "unicast from 10.77.0.1 to 1 peer (10.77.0.2)";
    assert!(flooding.starts_with(want), "{log}");
    assert_eq!(said("serving").unwrap()["fabric"], "unicast", "{log}");
    assert!(said("fabric repaired").is_none(), "{log}");
}
