use super::*;
use crate::model::{parse_vlan_list, HostId};
use crate::sys::fake::FakeNetlink;
use crate::sys::LinkKind;

fn cfg(vlans: &str) -> FabricConfig {
    FabricConfig {
        host_id: HostId::new(3).unwrap(),
        underlay: "eth1".into(),
        vlans: parse_vlan_list(vlans).unwrap(),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    }
}

fn host() -> FakeNetlink {
    let nl = FakeNetlink::new();
    nl.add_device("eth1", 1500);
    nl
}

#[tokio::test]
async fn builds_then_second_run_changes_nothing() {
    let nl = host();
    let first = ensure_fabric(&nl, &cfg("2,3,4")).await.unwrap().actions;
    assert_eq!(first.len(), 18);
    let br2 = nl.link("br2").await.unwrap().unwrap();
    let vx2 = nl.link("vxlan2").await.unwrap().unwrap();
    assert_eq!((br2.mtu, br2.up), (1450, true));
    assert_eq!(vx2.master, Some(br2.index));
    assert!(matches!(vx2.kind, LinkKind::Vxlan(ref a) if a.vni == 2 && a.port == 4789));
    assert_eq!(
        nl.addresses(br2.index).await.unwrap(),
        ["192.168.2.3/24".parse().unwrap()]
    );

    nl.clear_calls();
    let second = ensure_fabric(&nl, &cfg("2,3,4")).await.unwrap().actions;
    assert!(second.is_empty(), "{second:?}");
    let writes: Vec<_> = nl
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("host: link") && !c.starts_with("host: addresses"))
        .collect();
    assert!(writes.is_empty(), "a second run must only read: {writes:?}");
}

#[tokio::test]
async fn missing_underlay_is_refused_before_any_change() {
    let nl = FakeNetlink::new();
    let err = ensure_fabric(&nl, &cfg("2")).await.unwrap_err();
    assert!(err.is_usage());
    assert_eq!(
        err.to_string(),
        "underlay interface eth1 not found; pass --underlay"
    );
    assert!(nl.links().await.unwrap().is_empty());
}

#[tokio::test]
async fn mtu_above_what_the_underlay_carries_is_refused() {
    let nl = host();
    let mut c = cfg("2");
    c.mtu = Some(1500);
    let err = ensure_fabric(&nl, &c).await.unwrap_err();
    assert!(err.to_string().contains("at most 1450"), "{err}");
    c.mtu = Some(1400);
    ensure_fabric(&nl, &c).await.unwrap();
    assert_eq!(nl.link("vxlan2").await.unwrap().unwrap().mtu, 1400);
}

#[tokio::test]
async fn kernel_failure_stops_and_a_rerun_completes_the_fabric() {
    let nl = host();
    nl.fail_next("create_vxlan vxlan2", libc::ENOMEM);
    let err = ensure_fabric(&nl, &cfg("2")).await.unwrap_err();
    assert!(!err.is_usage());
    assert!(err.to_string().contains("create_vxlan vxlan2"), "{err}");
    let again = ensure_fabric(&nl, &cfg("2")).await.unwrap().actions;
    assert!(again.iter().any(|a| matches!(a, Action::CreateVxlan(_))));
    assert!(ensure_fabric(&nl, &cfg("2"))
        .await
        .unwrap()
        .actions
        .is_empty());
}

#[tokio::test]
async fn removal_deletes_what_setup_made() {
    let nl = host();
    ensure_fabric(&nl, &cfg("2,3")).await.unwrap();
    let removed = remove_fabric(&nl, &cfg("2,3").vlans, false).await.unwrap();
    assert_eq!(removed.len(), 4);
    let names: Vec<_> = nl
        .links()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["eth1"]);
}

// Unicast flooding over the fake kernel.

use std::net::Ipv4Addr;

use crate::sys::{FdbEntry, VethSpec};

/// `eth1` (10.0.0.3/24) on host 3, and a config for VLANs `vlans` with `peers`.
async fn unicast_host(vlans: &str, peers: &str) -> (FakeNetlink, FabricConfig) {
    let nl = host();
    let eth1 = nl.index_of("eth1").await.unwrap();
    nl.add_address(eth1, "10.0.0.3/24".parse().unwrap())
        .await
        .unwrap();
    let mut c = cfg(vlans);
    c.peers = super::super::peers::parse_peer_list(peers).unwrap();
    (nl, c)
}

async fn flood_peers(nl: &FakeNetlink, vxlan: &str) -> Vec<Ipv4Addr> {
    let index = nl.index_of(vxlan).await.unwrap();
    let entries = nl.fdb_entries(index).await.unwrap();
    entries
        .iter()
        .filter(|e| e.is_flood())
        .map(|e| e.dst)
        .collect()
}

/// The calls that changed something, without the reads.
fn writes(nl: &FakeNetlink) -> Vec<String> {
    let reads = ["host: link ", "host: addresses ", "host: fdb_entries "];
    let calls = nl.calls().into_iter();
    calls
        .filter(|c| !reads.iter().any(|r| c.starts_with(r)))
        .collect()
}

#[tokio::test]
async fn unicast_setup_lists_every_other_peer_on_every_vlan_and_a_rerun_only_reads() {
    let (nl, c) = unicast_host("2,3", "10.0.0.1,10.0.0.2,10.0.0.3").await;
    let ensured = ensure_fabric(&nl, &c).await.unwrap();
    assert_eq!(
        ensured.flooding.to_string(),
        "unicast from 10.0.0.3 to 2 peers (10.0.0.1, 10.0.0.2); 10.0.0.3 is this server's own: skipped"
    );
    let peers: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2"].map(|p| p.parse().unwrap()).into();
    for vx in ["vxlan2", "vxlan3"] {
        assert_eq!(flood_peers(&nl, vx).await, peers, "{vx}");
        let link = nl.link(vx).await.unwrap().unwrap();
        let LinkKind::Vxlan(attrs) = link.kind else {
            panic!("{link:?}")
        };
        assert_eq!(
            (attrs.group, attrs.local),
            (None, Some("10.0.0.3".parse().unwrap()))
        );
    }
    nl.clear_calls();
    assert!(ensure_fabric(&nl, &c).await.unwrap().actions.is_empty());
    assert!(writes(&nl).is_empty(), "{:?}", writes(&nl));
}

#[tokio::test]
async fn a_peer_added_or_removed_appends_or_deletes_its_entries_alone() {
    let (nl, mut c) = unicast_host("2,3", "10.0.0.1,10.0.0.2").await;
    ensure_fabric(&nl, &c).await.unwrap();
    let vx2 = nl.index_of("vxlan2").await.unwrap();
    let learned = FdbEntry {
        mac: [0x02, 0, 0, 0, 0, 0x07],
        dst: "10.0.0.1".parse().unwrap(),
    };
    nl.append_fdb_entry(vx2, &learned).await.unwrap();

    c.peers = super::super::peers::parse_peer_list("10.0.0.2,10.0.0.4").unwrap();
    nl.clear_calls();
    let changed = ensure_fabric(&nl, &c).await.unwrap().actions;
    let vx3 = nl.index_of("vxlan3").await.unwrap();
    let mut want = Vec::new();
    for index in [vx2, vx3] {
        want.push(format!(
            "host: append_fdb_entry {index} 00:00:00:00:00:00 dst 10.0.0.4"
        ));
        want.push(format!(
            "host: delete_fdb_entry {index} 00:00:00:00:00:00 dst 10.0.0.1"
        ));
    }
    assert_eq!(writes(&nl), want, "{changed:?}");
    let now = nl.fdb_entries(vx2).await.unwrap();
    assert!(now.contains(&learned), "a learned entry went: {now:?}");
}

#[tokio::test]
async fn switching_modes_remakes_the_vxlan_device_and_keeps_the_bridge_and_its_ports() {
    let (nl, mut c) = unicast_host("2", "").await;
    ensure_fabric(&nl, &c).await.unwrap();
    let br2 = nl.index_of("br2").await.unwrap();
    nl.netns_of(500);
    let veth = VethSpec {
        host_name: "vethc_br5".into(),
        peer_name: "eth0".into(),
        peer_netns_pid: 500,
        master: br2,
        mtu: 1450,
        peer_mac: None,
    };
    nl.create_veth(&veth).await.unwrap();

    for peers in ["10.0.0.1,10.0.0.2", ""] {
        c.peers = super::super::peers::parse_peer_list(peers).unwrap();
        nl.clear_calls();
        let ensured = ensure_fabric(&nl, &c).await.unwrap();
        let vx2 = nl.index_of("vxlan2").await.unwrap();
        let w = writes(&nl);
        assert!(w[0].starts_with("host: delete_link "), "{peers}: {w:?}");
        assert!(
            w[1].starts_with("host: create_vxlan vxlan2 "),
            "{peers}: {w:?}"
        );
        assert!(
            w[2..]
                .iter()
                .all(|c| c.contains(&format!(" {vx2} ")) || c.ends_with(&format!(" {vx2}"))),
            "{peers}: only the new vxlan2 may change after it is made: {w:?}"
        );
        assert_eq!(
            ensured.flooding.mode().to_string(),
            if peers.is_empty() {
                "multicast"
            } else {
                "unicast"
            }
        );
        assert_eq!(nl.index_of("br2").await.unwrap(), br2);
        let port = nl.link("vethc_br5").await.unwrap().unwrap();
        assert_eq!(
            port.master,
            Some(br2),
            "{peers}: the container's port left the bridge"
        );
        assert_eq!(
            nl.addresses(br2).await.unwrap(),
            ["192.168.2.3/24".parse().unwrap()]
        );
    }
}

#[tokio::test]
async fn peers_without_an_underlay_address_are_refused_before_any_change() {
    let nl = host();
    let mut c = cfg("2");
    c.peers = vec!["10.0.0.1".parse().unwrap()];
    let err = ensure_fabric(&nl, &c).await.unwrap_err();
    assert!(err.is_usage(), "{err}");
    assert!(err.to_string().contains("eth1 has none"), "{err}");
    assert_eq!(nl.links().await.unwrap().len(), 1);
}

#[tokio::test]
async fn removal_says_which_flood_entries_go_with_the_device() {
    let (nl, c) = unicast_host("2", "10.0.0.1").await;
    ensure_fabric(&nl, &c).await.unwrap();
    let removed = remove_fabric(&nl, &c.vlans, false).await.unwrap();
    assert_eq!(
        removed[0].to_string(),
        "delete vxlan2: fabric removal, with its flood entries to 10.0.0.1"
    );
    assert!(nl.link("vxlan2").await.unwrap().is_none());
}
