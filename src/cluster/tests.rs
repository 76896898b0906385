//! Unit tests of cluster mode on the fake store: reservations, membership, peers, sync.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::peers::peers_by_vlan;
use super::*;
use crate::queue::{JobStore, StoreOptions};
use crate::spec::CreateSpec;
use crate::sys::fake_kv::FakeKv;
use crate::test_support::TempDir;

pub(super) fn server(kv: &FakeKv, host: u8, node: Uuid) -> Arc<Cluster> {
    Arc::new(Cluster::new(
        Arc::new(kv.clone()),
        "lab",
        HostId::new(u64::from(host)).unwrap(),
        node,
        format!("10.0.0.{host}").parse().unwrap(),
        vec![VlanId::new(2).unwrap(), VlanId::new(3).unwrap()],
        format!("http://10.0.0.{host}:8080"),
    ))
}

pub(super) fn spec(id: u32, vlan: u64, ip: &str) -> CreateSpec {
    CreateSpec {
        id: id.to_string().parse().unwrap(),
        vlan: VlanId::new(vlan).unwrap(),
        ip: ip.parse().unwrap(),
        gateway: None,
        template: None,
    }
}

/// `c` reserves `spec` and keeps it, as a create queued here leaves it.
pub(super) async fn held(c: &Arc<Cluster>, spec: CreateSpec) {
    c.reserve(&spec).await.unwrap().keep();
}

fn held_message(r: Result<reserve::Hold, ClusterError>) -> String {
    match r {
        Err(ClusterError::Held(m)) => m,
        Err(other) => panic!("expected held, got {other:?}"),
        Ok(_) => panic!("expected held, got a reservation"),
    }
}

#[tokio::test]
async fn two_servers_never_reserve_one_id_or_one_address() {
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
    let m = held_message(b.reserve(&spec(5, 3, "192.168.3.9/24")).await);
    assert!(m.contains("container 5 is held by host 1"), "{m}");
    let m = held_message(b.reserve(&spec(6, 2, "192.168.2.5/16")).await);
    assert!(
        m.contains("address 192.168.2.5 on VLAN 2 is held by host 1"),
        "{m}"
    );
    // A refused create left nothing of its own behind.
    assert!(!kv.dump().contains_key("lab/containers/6"));
    // The same address on another VLAN is another machine.
    held(&b, spec(6, 3, "192.168.2.5/24")).await;
    assert_eq!(kv.dump().len(), 4);
}

#[tokio::test]
async fn a_server_passes_its_own_keys_and_gives_back_only_what_it_created() {
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
    // A retry (idempotency key) or a crash's leftover: this server's own keys pass, and the
    // local store decides; refused there, the keys it did not create stay.
    a.reserve(&spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap()
        .release()
        .await;
    assert_eq!(kv.dump().len(), 2);
    // Same ID, new address: only the new address key was this request's.
    a.reserve(&spec(5, 2, "192.168.2.77/24"))
        .await
        .unwrap()
        .release()
        .await;
    let keys: Vec<String> = kv.dump().into_keys().collect();
    assert_eq!(keys, ["lab/addresses/2/192.168.2.5", "lab/containers/5"]);
}

#[tokio::test]
async fn a_second_create_of_the_same_waits_for_the_first_to_be_queued() {
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    let first = a.reserve(&spec(5, 2, "192.168.2.5/24")).await.unwrap();
    let m = held_message(a.reserve(&spec(5, 2, "192.168.2.6/24")).await);
    assert!(m.contains("being accepted on this server"), "{m}");
    drop(first);
    held(&a, spec(5, 2, "192.168.2.6/24")).await;
}

#[tokio::test]
async fn creates_fail_as_unavailable_while_the_store_is_down() {
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    kv.set_down(true);
    let r = a.reserve(&spec(5, 2, "192.168.2.5/24")).await;
    assert!(
        matches!(r, Err(ClusterError::Unavailable(_))),
        "{:?}",
        r.err()
    );
    kv.set_down(false);
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
}

#[tokio::test]
async fn a_host_id_is_refused_while_another_node_holds_it_and_reclaimed_by_its_own() {
    let kv = FakeKv::new();
    let node = Uuid::new_v4();
    server(&kv, 1, node).register().await.unwrap();
    let r = server(&kv, 1, Uuid::new_v4()).register().await;
    let Err(ClusterError::Refused(why)) = r else {
        panic!("expected a refusal, got {r:?}")
    };
    assert!(
        why.contains("host ID 1 is held by another live server"),
        "{why}"
    );
    assert!(why.contains(&node.to_string()), "{why}");
    // The read-only check made before the host is touched says the same.
    let check = server(&kv, 1, Uuid::new_v4()).check_host_id().await;
    assert!(matches!(check, Err(ClusterError::Refused(_))), "{check:?}");
    server(&kv, 1, node).check_host_id().await.unwrap();
    server(&kv, 2, Uuid::new_v4())
        .check_host_id()
        .await
        .unwrap();
    // The same node after a restart takes its key over at once.
    server(&kv, 1, node).register().await.unwrap();
    assert_eq!(kv.dump().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_lease_is_not_kept_alive_drops_out() {
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    a.register().await.unwrap();
    let lease_b = b.register().await.unwrap();
    assert_eq!(a.read_members().await.unwrap().0.len(), 2);
    for _ in 0..4 {
        tokio::time::advance(KEEP_ALIVE_EVERY).await;
        assert!(kv.keep_alive(lease_b).await.unwrap());
    }
    // Host 1 sent no keep-alive: its lease ran out, host 2's did not.
    let members = a.read_members().await.unwrap().0;
    assert_eq!(members.keys().map(|h| h.get()).collect::<Vec<_>>(), [2]);
    // Its next keep-alive learns the lease is gone, and registering again brings it back.
    a.register().await.unwrap();
    assert_eq!(b.read_members().await.unwrap().0.len(), 2);
}

use crate::sys::Kv;

#[test]
fn peers_are_the_other_members_serving_each_vlan() {
    let me = Member {
        host_id: HostId::new(1).unwrap(),
        node: Uuid::new_v4(),
        underlay: "10.0.0.1".parse().unwrap(),
        vlans: vec![VlanId::new(2).unwrap(), VlanId::new(3).unwrap()],
        api_url: String::new(),
        registered_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let other = |host: u8, vlans: &[u64]| Member {
        host_id: HostId::new(u64::from(host)).unwrap(),
        node: Uuid::new_v4(),
        underlay: format!("10.0.0.{host}").parse().unwrap(),
        vlans: vlans.iter().map(|&v| VlanId::new(v).unwrap()).collect(),
        ..me.clone()
    };
    let members: BTreeMap<HostId, Member> = [
        me.clone(),
        other(3, &[2, 3, 4]),
        other(2, &[2]),
        other(4, &[4]),
    ]
    .into_iter()
    .map(|m| (m.host_id, m))
    .collect();
    let got = peers_by_vlan(&me, &members);
    let show: Vec<(u8, Vec<String>)> = got
        .iter()
        .map(|(v, a)| (v.get(), a.iter().map(ToString::to_string).collect()))
        .collect();
    assert_eq!(
        show,
        [
            (2, vec!["10.0.0.2".to_string(), "10.0.0.3".to_string()]),
            (3, vec!["10.0.0.3".to_string()]),
        ]
    );
}

#[tokio::test]
async fn a_sync_releases_keys_without_records_restores_records_without_keys() {
    let dir = TempDir::new("cluster-sync");
    let store = JobStore::open(dir.path(), StoreOptions::default()).unwrap();
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    // 5: queued locally and reserved, as a create leaves it.
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
    store
        .enqueue_create(spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap();
    // 6: reserved, then a crash before the enqueue.
    held(&a, spec(6, 2, "192.168.2.6/24")).await;
    // 7: a record whose keys are gone (etcd restored from an old backup).
    store
        .enqueue_create(spec(7, 2, "192.168.2.7/24"))
        .await
        .unwrap();
    // 8: a record whose ID another server took meanwhile.
    store
        .enqueue_create(spec(8, 2, "192.168.2.8/24"))
        .await
        .unwrap();
    held(&b, spec(8, 3, "192.168.3.8/24")).await;
    // 9: in flight (reserved, enqueue under way): not a leftover.
    let in_flight = a.reserve(&spec(9, 2, "192.168.2.9/24")).await.unwrap();

    let report = a.sync_reservations(&store).await.unwrap();
    assert_eq!(report.released, 2, "{report:?}");
    assert_eq!(report.restored, 3, "{report:?}");
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert!(report.conflicts[0].contains("held by host 2"), "{report:?}");
    let keys: Vec<String> = kv.dump().into_keys().collect();
    assert_eq!(
        keys,
        [
            "lab/addresses/2/192.168.2.5",
            "lab/addresses/2/192.168.2.7",
            "lab/addresses/2/192.168.2.8",
            "lab/addresses/2/192.168.2.9",
            "lab/addresses/3/192.168.3.8",
            "lab/containers/5",
            "lab/containers/7",
            "lab/containers/8",
            "lab/containers/9",
        ]
    );
    assert!(kv.dump()["lab/containers/8"].contains(&b.node().to_string()));
    drop(in_flight);
    // A second pass finds nothing more to do but the conflict, and 9's leftover.
    let again = a.sync_reservations(&store).await.unwrap();
    assert_eq!((again.released, again.restored), (2, 0), "{again:?}");
}

#[tokio::test]
async fn a_finished_job_whose_container_is_gone_gives_its_keys_back() {
    let dir = TempDir::new("cluster-release");
    let store = JobStore::open(dir.path(), StoreOptions::default()).unwrap();
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
    let job = store
        .enqueue_create(spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap();
    // A record: nothing to give back.
    assert!(!a
        .release_if_gone(&store, job.container_id.unwrap())
        .await
        .unwrap());
    store.cancel(job.id).await.unwrap();
    assert!(a
        .release_if_gone(&store, job.container_id.unwrap())
        .await
        .unwrap());
    assert!(kv.dump().is_empty(), "{:?}", kv.dump());
}

#[tokio::test]
async fn claims_made_at_the_same_moment_each_stand_on_their_own() {
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    // 16 distinct creates on each server at once, and both racing for ID 99.
    let mut tasks = Vec::new();
    for (n, s) in [(0u32, &a), (100, &b)] {
        for i in 1..=16 {
            let (s, id) = (s.clone(), n + i);
            tasks.push(tokio::spawn(async move {
                let ip = format!("192.168.2.{}/24", id % 250 + 1);
                let vlan = if n == 0 { 2 } else { 3 };
                s.reserve(&spec(id, vlan, &ip))
                    .await
                    .map(reserve::Hold::keep)
            }));
        }
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let ip = format!("192.168.4.{}/24", n / 100 + 1);
            s.reserve(&spec(99, 4, &ip)).await.map(reserve::Hold::keep)
        }));
    }
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 33,
        "32 distinct creates and one of the two for ID 99: {results:?}"
    );
    assert_eq!(reserved_ids(&kv).len(), 33);
}

fn reserved_ids(kv: &FakeKv) -> Vec<String> {
    kv.dump()
        .into_keys()
        .filter(|k| k.starts_with("lab/containers/"))
        .collect()
}
