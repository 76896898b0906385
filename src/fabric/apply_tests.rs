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
    let first = ensure_fabric(&nl, &cfg("2,3,4")).await.unwrap();
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
    let second = ensure_fabric(&nl, &cfg("2,3,4")).await.unwrap();
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
    let again = ensure_fabric(&nl, &cfg("2")).await.unwrap();
    assert!(again.iter().any(|a| matches!(a, Action::CreateVxlan(_))));
    assert!(ensure_fabric(&nl, &cfg("2")).await.unwrap().is_empty());
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
