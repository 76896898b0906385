//! A create in cluster mode (`gate.rs`): reservation and local enqueue at once; the job queued
//! once the reservation is made, removed when it is refused; gates a crash left settled by
//! what etcd holds.

use uuid::Uuid;

use super::gate::Refusal;
use super::tests::{held, server, spec};
use super::*;
use crate::queue::{JobState, JobStore, StoreOptions};
use crate::sys::fake_kv::FakeKv;
use crate::test_support::TempDir;
use crate::worker::QueueControl;

/// Waits until an opened gate wakes the worker through `control` (bounded: a hang fails).
async fn woken(control: &QueueControl) {
    tokio::time::timeout(std::time::Duration::from_secs(10), control.woken())
        .await
        .expect("no gate opened");
}

fn store(dir: &TempDir) -> JobStore {
    JobStore::open(dir.path(), StoreOptions::default()).unwrap()
}

/// Every job `store` holds (any state).
fn jobs(store: &JobStore) -> usize {
    store.list(None, 100).unwrap().len()
}

#[tokio::test]
async fn a_create_is_queued_once_reserved_and_leaves_nothing_when_refused() {
    let (da, db) = (TempDir::new("gate-a"), TempDir::new("gate-b"));
    let (sa, sb) = (store(&da), store(&db));
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    let control = QueueControl::new(false);
    let done = a
        .accept_create(&sa, &control, spec(5, 2, "192.168.2.5/24"), None)
        .await
        .unwrap();
    woken(&control).await;
    let queued = sa.next_queued().unwrap().expect("queued");
    assert_eq!(queued.id, done.job.id);
    assert!(queued.first_event.is_some());
    assert!(sa.gated().unwrap().is_empty());
    assert!(kv.dump()["lab/containers/5"].contains(&a.node().to_string()));

    let refused = b
        .accept_create(&sb, &control, spec(5, 2, "192.168.2.6/24"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Refusal::Cluster(ClusterError::Held(_))),
        "{refused:?}"
    );
    kv.set_down(true);
    let refused = b
        .accept_create(&sb, &control, spec(6, 2, "192.168.2.6/24"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Refusal::Cluster(ClusterError::Unavailable(_))),
        "{refused:?}"
    );
    kv.set_down(false);
    assert_eq!(jobs(&sb), 0, "a refused create left a job");
    assert!(sb.gated().unwrap().is_empty());
    assert!(sb
        .container(spec(6, 2, "192.168.2.6/24").id)
        .unwrap()
        .is_none());
    b.accept_create(&sb, &control, spec(6, 2, "192.168.2.6/24"), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_the_store_refuses_gives_back_the_keys_it_made() {
    let dir = TempDir::new("gate-store-refuses");
    let s = store(&dir);
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    let control = QueueControl::new(false);
    // A local record etcd does not know of (a sync has not put its keys back yet).
    s.enqueue_create(spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap();
    let refused = a
        .accept_create(&s, &control, spec(5, 3, "192.168.3.5/24"), None)
        .await
        .unwrap_err();
    assert!(matches!(refused, Refusal::Store(_)), "{refused:?}");
    assert!(kv.dump().is_empty(), "{:?}", kv.dump());
}

#[tokio::test]
async fn of_creates_of_one_id_on_one_server_at_once_exactly_one_is_accepted() {
    let dir = TempDir::new("gate-race");
    let s = store(&dir);
    let kv = FakeKv::new();
    let a = server(&kv, 1, Uuid::new_v4());
    let control = QueueControl::new(false);
    let tries = (0..20).map(|n| {
        let (a, s, control) = (a.clone(), s.clone(), control.clone());
        let ip = format!("192.168.2.{}/24", n + 10);
        tokio::spawn(async move { a.accept_create(&s, &control, spec(5, 2, &ip), None).await })
    });
    let mut accepted = 0;
    for t in tries {
        accepted += usize::from(t.await.unwrap().is_ok());
    }
    assert_eq!(accepted, 1);
    woken(&control).await;
    assert_eq!(jobs(&s), 1);
    assert!(s.gated().unwrap().is_empty());
}

/// Queues a gated create of container `id` at `192.168.2.<id>/24` in `s`.
async fn gated(s: &JobStore, id: u32) -> crate::queue::Job {
    let spec = spec(id, 2, &format!("192.168.2.{id}/24"));
    s.enqueue_create_gated(spec, None).await.unwrap().job
}

#[tokio::test]
async fn gates_a_crash_left_open_when_reserved_here_and_go_otherwise() {
    let dir = TempDir::new("gate-settle");
    let s = store(&dir);
    let kv = FakeKv::new();
    let (a, b) = (
        server(&kv, 1, Uuid::new_v4()),
        server(&kv, 2, Uuid::new_v4()),
    );
    // 5: reserved here, gate not opened (a crash after both, or a request that went away).
    let five = gated(&s, 5).await;
    held(&a, spec(5, 2, "192.168.2.5/24")).await;
    // 6: never reserved (a crash before the claim).
    let six = gated(&s, 6).await;
    // 7: another server holds its address.
    let seven = gated(&s, 7).await;
    held(&b, spec(70, 2, "192.168.2.7/24")).await;
    // 8: its request is still settling it.
    let eight = gated(&s, 8).await;
    let in_flight = a.begin(&spec(8, 2, "192.168.2.8/24")).unwrap();

    kv.set_down(true);
    assert!(a.settle_gates(&s).await.is_err());
    assert_eq!(s.gated().unwrap().len(), 4, "settled without etcd");
    kv.set_down(false);
    let report = a.sync_reservations(&s).await.unwrap();
    assert_eq!(
        (report.settled.opened, report.settled.removed),
        (1, 2),
        "{report:?}"
    );
    assert_eq!(s.next_queued().unwrap().map(|j| j.id), Some(five.id));
    assert_eq!(s.get(five.id).unwrap().unwrap().state, JobState::Queued);
    assert_eq!(s.get(six.id).unwrap(), None);
    assert_eq!(s.get(seven.id).unwrap(), None);
    let gated: Vec<Uuid> = s.gated().unwrap().iter().map(|j| j.id).collect();
    assert_eq!(gated, [eight.id]);
    // 8's record had no keys: the pass did not put them back under its request.
    assert!(
        !kv.dump().contains_key("lab/containers/8"),
        "{:?}",
        kv.dump()
    );
    drop(in_flight);
    let again = a.settle_gates(&s).await.unwrap();
    assert_eq!((again.opened, again.removed), (0, 1));
    assert_eq!(jobs(&s), 1);
}
