use super::*;
use crate::model::{parse_vlan_list, HostId};
use crate::test_support::link;

fn cfg(vlans: &str) -> FabricConfig {
    FabricConfig {
        host_id: HostId::new(1).unwrap(),
        underlay: "eth1".into(),
        vlans: parse_vlan_list(vlans).unwrap(),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    }
}

fn underlay() -> LinkState {
    LinkState {
        mtu: 1500,
        ..link(2, "eth1", LinkKind::Other(String::new()), None)
    }
}

/// Multicast flooding over `eth1` (ifindex 2) with overlay MTU 1450.
fn multicast() -> Target {
    Target {
        underlay: underlay().index,
        mtu: 1450,
        flooding: Flooding::Multicast,
    }
}

/// The VXLAN VLAN 2 needs, written out: VNI 2, group 239.0.0.2, IANA port 4789, bound to the
/// underlay `eth1` (ifindex 2). Literal on purpose, so a wrong `vxlan_spec` cannot agree with
/// itself.
fn good_vxlan2_attrs() -> VxlanAttrs {
    VxlanAttrs {
        vni: 2,
        group: Some(std::net::Ipv4Addr::new(239, 0, 0, 2)),
        local: None,
        port: 4789,
        underlay: Some(2),
    }
}

/// A correct fabric for VLAN 2 of host 1.
fn good_vlan2() -> Observed {
    let vx = good_vxlan2_attrs();
    let mut seen = Observed {
        links: vec![
            underlay(),
            link(10, "br2", LinkKind::Bridge, None),
            link(11, "vxlan2", LinkKind::Vxlan(vx), Some(10)),
        ],
        ..Observed::default()
    };
    seen.addrs
        .insert("br2".into(), vec!["192.168.2.1/24".parse().unwrap()]);
    seen
}

#[test]
fn empty_host_gets_bridge_then_vxlan_then_port_address_and_up() {
    let seen = Observed {
        links: vec![underlay()],
        ..Observed::default()
    };
    let actions = plan_setup(&cfg("2"), &multicast(), &seen).unwrap();
    let text: Vec<String> = actions.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "create bridge br2 (mtu 1450)",
            "create vxlan vxlan2 (vni 2, group 239.0.0.2, dstport 4789, mtu 1450)",
            "attach vxlan2 to br2",
            "add 192.168.2.1/24 to br2",
            "bring vxlan2 up",
            "bring br2 up",
        ]
    );
}

#[test]
fn every_vlan_is_planned_in_order() {
    let seen = Observed {
        links: vec![underlay()],
        ..Observed::default()
    };
    let actions = plan_setup(&cfg("4,3"), &multicast(), &seen).unwrap();
    let bridges: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateBridge { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bridges, ["br4", "br3"]);
}

#[test]
fn correct_fabric_plans_nothing() {
    let actions = plan_setup(&cfg("2"), &multicast(), &good_vlan2()).unwrap();
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn wrong_vni_and_port_recreate_the_vxlan_naming_the_difference() {
    let mut seen = good_vlan2();
    seen.links[2].kind = LinkKind::Vxlan(VxlanAttrs {
        vni: 7,
        group: Some("239.0.0.2".parse().unwrap()),
        local: None,
        port: 8472,
        underlay: Some(2),
    });
    let actions = plan_setup(&cfg("2"), &multicast(), &seen).unwrap();
    let Action::DeleteLink { name, why } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(name, "vxlan2");
    assert_eq!(why, "vxlan2 has VNI 7 (want 2), dstport 8472 (want 4789)");
    assert_eq!(
        actions[1],
        Action::CreateVxlan(VxlanSpec {
            name: "vxlan2".into(),
            attrs: good_vxlan2_attrs(),
            mtu: 1450,
        })
    );
    assert!(actions.contains(&Action::SetMaster {
        name: "vxlan2".into(),
        bridge: "br2".into()
    }));
    assert!(actions.contains(&Action::SetUp {
        name: "vxlan2".into()
    }));
}

#[test]
fn host_address_on_the_vxlan_port_moves_to_the_bridge() {
    let mut seen = good_vlan2();
    seen.addrs.insert("br2".into(), vec![]);
    seen.addrs
        .insert("vxlan2".into(), vec!["192.168.2.1/24".parse().unwrap()]);
    let actions = plan_setup(&cfg("2"), &multicast(), &seen).unwrap();
    assert!(matches!(&actions[0], Action::DeleteAddress { name, .. } if name == "vxlan2"));
    assert_eq!(
        actions[1],
        Action::AddAddress {
            name: "br2".into(),
            addr: "192.168.2.1/24".parse().unwrap()
        }
    );
    assert_eq!(actions.len(), 2);
}

#[test]
fn stale_host_address_is_replaced_and_foreign_subnets_are_left() {
    let mut seen = good_vlan2();
    seen.addrs.insert(
        "br2".into(),
        vec![
            "192.168.2.9/24".parse().unwrap(),
            "10.1.1.1/24".parse().unwrap(),
        ],
    );
    let actions = plan_setup(&cfg("2"), &multicast(), &seen).unwrap();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        matches!(&actions[0], Action::DeleteAddress { addr, .. } if addr.to_string() == "192.168.2.9/24")
    );
    assert!(matches!(&actions[1], Action::AddAddress { .. }));
}

#[test]
fn detached_down_or_wrong_mtu_links_are_repaired_in_place() {
    let mut seen = good_vlan2();
    seen.links[2].master = None;
    seen.links[2].up = false;
    seen.links[1].mtu = 1500;
    let actions = plan_setup(&cfg("2"), &multicast(), &seen).unwrap();
    assert_eq!(
        actions,
        [
            Action::SetMtu {
                name: "br2".into(),
                mtu: 1450,
                was: 1500
            },
            Action::SetMaster {
                name: "vxlan2".into(),
                bridge: "br2".into()
            },
            Action::SetUp {
                name: "vxlan2".into()
            },
        ]
    );
}

#[test]
fn a_link_of_another_kind_is_refused_not_deleted() {
    let mut seen = good_vlan2();
    seen.links[1].kind = LinkKind::Veth;
    let err = plan_setup(&cfg("2"), &multicast(), &seen).unwrap_err();
    assert!(err.is_usage());
    assert!(
        err.to_string()
            .contains("link br2 exists but is a veth, not a bridge"),
        "{err}"
    );
}

#[test]
fn removal_refuses_bridges_with_container_ports_unless_forced() {
    let mut seen = good_vlan2();
    seen.links
        .push(link(20, "vethc_br5", LinkKind::Veth, Some(10)));
    let vlans = parse_vlan_list("2").unwrap();
    let err = plan_removal(&vlans, false, &seen).unwrap_err();
    assert!(
        err.to_string()
            .contains("br2 still has container ports (vethc_br5)"),
        "{err}"
    );
    let actions = plan_removal(&vlans, true, &seen).unwrap();
    let names: Vec<_> = actions
        .iter()
        .map(|a| match a {
            Action::DeleteLink { name, .. } => name.as_str(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(names, ["vxlan2", "br2"]);
}

#[test]
fn removal_of_an_absent_fabric_is_empty() {
    let seen = Observed {
        links: vec![underlay()],
        ..Observed::default()
    };
    assert!(plan_removal(&parse_vlan_list("2,3").unwrap(), false, &seen)
        .unwrap()
        .is_empty());
}
