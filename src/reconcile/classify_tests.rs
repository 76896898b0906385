use time::macros::datetime;

use super::*;
use crate::model::{ContainerId, VlanId};

fn record(desired: DesiredState) -> ContainerRecord {
    ContainerRecord {
        id: ContainerId::new(5).unwrap(),
        vlan: VlanId::new(2).unwrap(),
        ip: "192.168.2.5/24".parse().unwrap(),
        gateway: None,
        state: ContainerRecordState::Active,
        desired,
        job_id: None,
        created_at: datetime!(2026-11-01 0:00 UTC),
    }
}

fn healthy() -> Observed {
    Observed {
        config: true,
        rootfs: true,
        pid: Some(4242),
        veth: Some(VethFacts {
            on_bridge: true,
            up: true,
            mtu_ok: true,
        }),
        address: true,
    }
}

#[test]
fn a_healthy_running_container_is_ok_and_left_alone() {
    assert_eq!(
        classify(&record(DesiredState::Running), &healthy()),
        (Health::Ok, None)
    );
}

#[test]
fn a_stopped_container_is_started_only_when_it_should_run() {
    let stopped = Observed {
        pid: None,
        veth: None,
        address: false,
        ..healthy()
    };
    assert_eq!(
        classify(&record(DesiredState::Running), &stopped),
        (Health::Stopped, Some(Drift::Stopped))
    );
    assert_eq!(
        classify(&record(DesiredState::Stopped), &stopped),
        (Health::Stopped, None)
    );
    assert_eq!(Drift::Stopped.repair(), Some(Lifecycle::Start));
}

#[test]
fn each_network_fault_is_named_and_repaired() {
    let cases: [(Observed, &str); 5] = [
        (
            Observed {
                veth: None,
                ..healthy()
            },
            "host veth vethc_br5 is missing",
        ),
        (
            Observed {
                veth: Some(VethFacts {
                    on_bridge: false,
                    up: true,
                    mtu_ok: true,
                }),
                ..healthy()
            },
            "vethc_br5 is not on br2",
        ),
        (
            Observed {
                veth: Some(VethFacts {
                    on_bridge: true,
                    up: false,
                    mtu_ok: true,
                }),
                ..healthy()
            },
            "vethc_br5 is down",
        ),
        (
            Observed {
                veth: Some(VethFacts {
                    on_bridge: true,
                    up: true,
                    mtu_ok: false,
                }),
                ..healthy()
            },
            "vethc_br5's MTU differs from br2's",
        ),
        (
            Observed {
                address: false,
                ..healthy()
            },
            "eth0 lacks 192.168.2.5",
        ),
    ];
    for (obs, why) in cases {
        let (health, drift) = classify(&record(DesiredState::Running), &obs);
        assert_eq!(health, Health::Degraded(vec![why.to_string()]), "{obs:?}");
        assert_eq!(drift, Some(Drift::Network));
    }
    assert_eq!(Drift::Network.repair(), Some(Lifecycle::Repair));
}

#[test]
fn a_lost_rootfs_is_missing_and_never_recreated() {
    for obs in [
        Observed {
            rootfs: false,
            ..healthy()
        },
        Observed {
            config: false,
            rootfs: false,
            pid: None,
            ..healthy()
        },
    ] {
        assert_eq!(
            classify(&record(DesiredState::Running), &obs),
            (Health::Missing, Some(Drift::Missing))
        );
    }
    assert_eq!(Drift::Missing.repair(), None);
    let mut marked = record(DesiredState::Running);
    marked.state = ContainerRecordState::Missing;
    assert_eq!(
        classify(&marked, &Observed::default()),
        (Health::Missing, None)
    );
}

#[test]
fn a_container_started_by_hand_against_its_desired_state_is_reported_not_stopped() {
    let (health, drift) = classify(&record(DesiredState::Stopped), &healthy());
    assert_eq!(health.as_str(), "degraded");
    assert_eq!(drift, Some(Drift::RunningUndesired));
    assert_eq!(Drift::RunningUndesired.repair(), None);
}
