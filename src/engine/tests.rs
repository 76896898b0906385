use super::*;
use crate::fabric::ensure_fabric;
use crate::model::{parse_vlan_list, HostId, VlanId};
use crate::steps::NoProgress;
use crate::sys::fake::FakeNetlink;
use crate::sys::Netlink;

fn fabric() -> FabricConfig {
    FabricConfig {
        host_id: HostId::new(1).unwrap(),
        underlay: "eth1".into(),
        vlans: parse_vlan_list("2,3").unwrap(),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    }
}

async fn engine() -> (Engine, FakeNetlink) {
    let (host, net, _) = Host::fake();
    ensure_fabric(&net, &fabric()).await.unwrap();
    (Engine::new(host, fabric()), net)
}

fn spec(id: u64, vlan: u64, ip: &str) -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(id).unwrap(),
        vlan: VlanId::new(vlan).unwrap(),
        ip: ip.parse().unwrap(),
        gateway: None,
        template: None,
    }
}

#[tokio::test]
async fn requests_are_checked_before_any_work() {
    let (engine, net) = engine().await;
    net.clear_calls();
    let cases = [
        (
            spec(5, 4, "192.168.4.5/24"),
            "vlan 4 is not served here; allowed: 2, 3",
        ),
        (spec(5, 2, "192.168.2.0/24"), "network address"),
        (spec(5, 2, "192.168.2.255/24"), "broadcast address"),
        (
            spec(5, 2, "192.168.2.1/24"),
            "this server's own address on br2",
        ),
        (
            CreateSpec {
                gateway: Some("10.0.0.1".parse().unwrap()),
                ..spec(5, 2, "192.168.2.5/24")
            },
            "gateway: 10.0.0.1 must be another address inside 192.168.2.0/24",
        ),
        (
            CreateSpec {
                template: Some("ubuntu".into()),
                ..spec(5, 2, "192.168.2.5/24")
            },
            "template \"ubuntu\" is not offered here; allowed: busybox, alt",
        ),
    ];
    let mut fields = Vec::new();
    for (s, want) in cases {
        let err = engine.create(&s, &mut NoProgress).await.unwrap_err();
        let EngineError::Invalid { field, .. } = &err else {
            panic!("{err}");
        };
        fields.push(*field);
        assert!(
            err.to_string().contains(want),
            "{err} should contain {want}"
        );
    }
    assert!(
        net.calls().is_empty(),
        "validation touched the host: {:?}",
        net.calls()
    );
    use RequestField::{Gateway, Ip, Template, Vlan};
    assert_eq!(
        fields,
        [Vlan, Ip, Ip, Ip, Gateway, Template],
        "the field at fault, as a type"
    );
}

#[tokio::test]
async fn existing_names_conflict_and_nothing_of_theirs_is_touched() {
    let (engine, net) = engine().await;
    engine
        .create(&spec(5, 2, "192.168.2.5/24"), &mut NoProgress)
        .await
        .unwrap();
    let err = engine
        .create(&spec(5, 3, "192.168.3.5/24"), &mut NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    assert!(
        net.link("vethc_br5").await.unwrap().is_some(),
        "the first container's veth survived"
    );
    net.add_device("vethc_br6", 1500);
    let err = engine
        .create(&spec(6, 2, "192.168.2.6/24"), &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "interface vethc_br6 already exists");
}

/// Makes `count` ports `port0..` of bridge `br2`, as containers' veths would be.
async fn fill_br2(net: &FakeNetlink, count: usize) {
    let br2 = net.link("br2").await.unwrap().unwrap().index;
    for i in 0..count {
        let name = format!("port{i}");
        net.add_device(&name, 1450);
        net.edit_link(&name, |l| l.master = Some(br2));
    }
}

/// A bridge holds 1024 ports (BR_MAX_PORTS): the VXLAN uplink, 1022 containers and one spare.
/// Literal numbers on purpose: the limit is a promise, not whatever the constant says.
#[tokio::test]
async fn the_1022nd_container_on_a_vlan_is_accepted_and_the_1023rd_refused_as_full() {
    let (engine, net) = engine().await;
    fill_br2(&net, 1021).await;
    engine
        .create(&spec(7, 2, "192.168.2.7/24"), &mut NoProgress)
        .await
        .unwrap_or_else(|e| panic!("the 1022nd container was refused: {e}"));
    let err = engine
        .create(&spec(8, 2, "192.168.2.8/24"), &mut NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    assert!(
        err.to_string()
            .contains("vlan 2 is full: br2 has 1022 containers"),
        "{err}"
    );
    engine
        .create(&spec(8, 3, "192.168.3.8/24"), &mut NoProgress)
        .await
        .unwrap();
}

#[tokio::test]
async fn destroy_removes_everything_and_is_idempotent() {
    let (engine, net) = engine().await;
    let id = ContainerId::new(9_999_999).unwrap();
    engine
        .create(&spec(9_999_999, 2, "192.168.2.9/24"), &mut NoProgress)
        .await
        .unwrap();
    let status = engine.host.lxc.status("container9999999").await.unwrap();
    assert_eq!(status.unwrap().state, "RUNNING");
    let veth = net.link("vethc_br9999999").await.unwrap().unwrap();
    assert_eq!(veth.mtu, 1450);
    assert!(engine.destroy(id).await.unwrap());
    assert!(!engine.destroy(id).await.unwrap());
    assert!(!engine.host.lxc.exists("container9999999").await.unwrap());
    assert!(net.link("vethc_br9999999").await.unwrap().is_none());
}

#[tokio::test]
async fn roll_back_cleans_up_a_create_interrupted_anywhere() {
    let (engine, net) = engine().await;
    let s = spec(5, 2, "192.168.2.5/24");
    engine.create(&s, &mut NoProgress).await.unwrap();
    assert!(engine
        .roll_back(&StepName::CREATE, &s, &mut NoProgress)
        .await
        .is_empty());
    assert!(!engine.host.lxc.exists("container5").await.unwrap());
    assert!(net.link("vethc_br5").await.unwrap().is_none());
}

#[tokio::test]
async fn a_create_runs_the_template_it_asked_for() {
    let (engine, net) = engine().await;
    let asked = CreateSpec {
        template: Some("alt".into()),
        ..spec(5, 2, "192.168.2.5/24")
    };
    engine.create(&asked, &mut NoProgress).await.unwrap();
    engine
        .create(&spec(6, 2, "192.168.2.6/24"), &mut NoProgress)
        .await
        .unwrap();
    let creates: Vec<String> = net
        .calls()
        .into_iter()
        .filter(|c| c.contains("lxc-create"))
        .collect();
    assert_eq!(
        creates,
        [
            "host: lxc-create container5 -t alt",
            "host: lxc-create container6"
        ],
        "the one asked for, then the default"
    );
}
