use std::net::Ipv4Addr;

use super::*;
use crate::fabric::plan::{plan_setup, Observed, Target};
use crate::fabric::FabricConfig;
use crate::model::{parse_vlan_list, HostId};
use crate::sys::{LinkKind, VxlanAttrs};
use crate::test_support::link;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ips(list: &str) -> Vec<Ipv4Addr> {
    list.split(',').filter(|s| !s.is_empty()).map(ip).collect()
}

#[test]
fn a_peer_list_is_ipv4_unicast_addresses_each_once() {
    assert_eq!(
        parse_peer_list("10.0.0.2, 10.0.0.3").unwrap(),
        ips("10.0.0.2,10.0.0.3")
    );
    assert!(parse_peer_list(" ").unwrap().is_empty());
    let cases = [
        ("10.0.0.2,10.0.0.2", "peer 10.0.0.2 is listed twice"),
        ("10.0.0.2,eth1", "peer \"eth1\" is not an IPv4 address"),
        ("10.0.0.256", "peer \"10.0.0.256\" is not an IPv4 address"),
        ("fd00::2", "peer fd00::2 is an IPv6 address"),
        ("239.0.0.2", "peer 239.0.0.2 is a multicast address"),
        ("127.0.0.1", "peer 127.0.0.1 is a loopback address"),
        ("0.0.0.0", "peer 0.0.0.0 is the unspecified address"),
        (
            "255.255.255.255",
            "peer 255.255.255.255 is the broadcast address",
        ),
        ("10.0.0.2,,10.0.0.3", "an empty address in the peer list"),
    ];
    for (input, want) in cases {
        let err = parse_peer_list(input).unwrap_err().to_string();
        assert!(err.starts_with(want), "{input}: {err}");
    }
    assert!(check_peers(&["10.0.0.2", "224.0.0.1"]).is_err());
}

#[test]
fn own_addresses_are_skipped_and_the_first_is_the_source() {
    let own = [
        "10.0.0.1/24".parse().unwrap(),
        "10.9.0.1/24".parse().unwrap(),
    ];
    let f = resolve_flooding(&ips("10.0.0.2,10.9.0.1,10.0.0.3"), "eth1", &own).unwrap();
    assert_eq!(
        f,
        Flooding::Unicast {
            local: ip("10.0.0.1"),
            peers: ips("10.0.0.2,10.0.0.3"),
            skipped: ips("10.9.0.1"),
        }
    );
    assert_eq!(
        f.to_string(),
        "unicast from 10.0.0.1 to 2 peers (10.0.0.2, 10.0.0.3); 10.9.0.1 is this server's own: skipped"
    );
    // Cluster mode: unicast before any peer is known.
    assert_eq!(
        resolve_flooding(&[], "eth1", &own).unwrap(),
        Flooding::Unicast {
            local: ip("10.0.0.1"),
            peers: vec![],
            skipped: vec![],
        }
    );
    let err = resolve_flooding(&ips("10.0.0.2"), "eth1", &[]).unwrap_err();
    assert!(err.is_usage());
    assert!(err.to_string().contains("eth1 has none"), "{err}");
}

// The plan of a unicast fabric, on what a fake kernel would show.

const LOCAL: &str = "10.0.0.1";

fn cfg() -> FabricConfig {
    FabricConfig {
        host_id: HostId::new(1).unwrap(),
        underlay: "eth1".into(),
        vlans: parse_vlan_list("2").unwrap(),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    }
}

fn unicast(peers: &str) -> Target {
    Target {
        underlay: 2,
        mtu: 1450,
        flooding: Flooding::Unicast {
            local: ip(LOCAL),
            peers: ips(peers),
            skipped: Vec::new(),
        },
    }
}

/// VLAN 2 of host 1 as unicast setup leaves it, with flood entries to `peers` and `others`
/// (entries the fabric did not make) in vxlan2's table.
fn unicast_vlan2(peers: &str, others: &[FdbEntry]) -> Observed {
    let vx = VxlanAttrs {
        vni: 2,
        group: None,
        local: Some(ip(LOCAL)),
        port: 4789,
        underlay: Some(2),
    };
    let mut seen = Observed {
        links: vec![
            link(10, "br2", LinkKind::Bridge, None),
            link(11, "vxlan2", LinkKind::Vxlan(vx), Some(10)),
        ],
        ..Observed::default()
    };
    seen.addrs
        .insert("br2".into(), vec!["192.168.2.1/24".parse().unwrap()]);
    let mut fdb: Vec<FdbEntry> = ips(peers).into_iter().map(FdbEntry::flood).collect();
    fdb.extend_from_slice(others);
    seen.fdb.insert("vxlan2".into(), fdb);
    seen
}

fn text(actions: &[Action]) -> Vec<String> {
    actions.iter().map(ToString::to_string).collect()
}

#[test]
fn the_same_peers_again_plan_nothing() {
    let seen = unicast_vlan2("10.0.0.2,10.0.0.3", &[]);
    let actions = plan_setup(&cfg(), &unicast("10.0.0.2,10.0.0.3"), &seen).unwrap();
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_peer_added_or_removed_changes_its_entry_only() {
    let seen = unicast_vlan2("10.0.0.2,10.0.0.3", &[]);
    let added = plan_setup(&cfg(), &unicast("10.0.0.2,10.0.0.3,10.0.0.4"), &seen).unwrap();
    assert_eq!(text(&added), ["add peer 10.0.0.4 to vxlan2"]);
    let removed = plan_setup(&cfg(), &unicast("10.0.0.3"), &seen).unwrap();
    assert_eq!(
        text(&removed),
        ["remove peer 10.0.0.2 from vxlan2: not a peer any more"]
    );
}

#[test]
fn entries_the_fabric_did_not_make_are_left_alone() {
    let learned = FdbEntry {
        mac: [0x02, 0, 0, 0, 0, 0x05],
        dst: ip("10.0.0.2"),
    };
    let operators = FdbEntry {
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        dst: ip("10.0.0.9"),
    };
    let seen = unicast_vlan2("10.0.0.2", &[learned, operators]);
    let actions = plan_setup(&cfg(), &unicast("10.0.0.2"), &seen).unwrap();
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_new_device_gets_every_peer_after_its_address_and_before_it_comes_up() {
    let seen = Observed::default();
    let actions = plan_setup(&cfg(), &unicast("10.0.0.2,10.0.0.3"), &seen).unwrap();
    assert_eq!(
        text(&actions),
        [
            "create bridge br2 (mtu 1450)",
            "create vxlan vxlan2 (vni 2, local 10.0.0.1, dstport 4789, mtu 1450)",
            "attach vxlan2 to br2",
            "add 192.168.2.1/24 to br2",
            "add peer 10.0.0.2 to vxlan2",
            "add peer 10.0.0.3 to vxlan2",
            "bring vxlan2 up",
            "bring br2 up",
        ]
    );
}

/// Multicast and unicast both ways: only the VXLAN device is made again (its flood entries
/// with it, for unicast); the bridge and its address are not touched.
#[test]
fn a_mode_switch_recreates_only_the_vxlan_device() {
    let seen = unicast_vlan2("10.0.0.2", &[]);
    let multicast = Target {
        flooding: Flooding::Multicast,
        ..unicast("")
    };
    let to_multicast = plan_setup(&cfg(), &multicast, &seen).unwrap();
    assert_eq!(
        text(&to_multicast),
        [
            "delete vxlan2: vxlan2 has group none (want 239.0.0.2), local 10.0.0.1 (want none)",
            "create vxlan vxlan2 (vni 2, group 239.0.0.2, dstport 4789, mtu 1450)",
            "attach vxlan2 to br2",
            "bring vxlan2 up",
        ]
    );

    let mut seen = unicast_vlan2("", &[]);
    seen.links[1].kind = LinkKind::Vxlan(VxlanAttrs {
        vni: 2,
        group: Some(ip("239.0.0.2")),
        local: None,
        port: 4789,
        underlay: Some(2),
    });
    let to_unicast = plan_setup(&cfg(), &unicast("10.0.0.2"), &seen).unwrap();
    assert_eq!(
        text(&to_unicast),
        [
            "delete vxlan2: vxlan2 has group 239.0.0.2 (want none), local none (want 10.0.0.1)",
            "create vxlan vxlan2 (vni 2, local 10.0.0.1, dstport 4789, mtu 1450)",
            "attach vxlan2 to br2",
            "add peer 10.0.0.2 to vxlan2",
            "bring vxlan2 up",
        ]
    );
}

#[test]
fn removal_names_the_peers_it_drops_never_a_multicast_group() {
    use crate::fabric::plan::plan_removal;
    let vlans = parse_vlan_list("2").unwrap();
    let with = |flood: &str| unicast_vlan2(flood, &[]);
    let removal = |seen: &Observed| text(&plan_removal(&vlans, false, seen).unwrap())[0].clone();
    assert_eq!(
        removal(&with("10.0.0.2")),
        "delete vxlan2: fabric removal, with its flood entries to 10.0.0.2"
    );
    // How the kernel shows a multicast device's group.
    assert_eq!(removal(&with("239.0.0.2")), "delete vxlan2: fabric removal");
}
