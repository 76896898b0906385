//! Concurrency tests: racing enqueues reserve exactly once, and concurrent writers share
//! flushes (group commit).

use std::sync::Arc;

use super::test_support::{open, record_ids, spec, TempDir};
use super::{JobStore, QueueError};
use crate::spec::CreateSpec;

/// Runs one `enqueue_create` per spec, all at once; returns (accepted, conflicts).
async fn race(store: &JobStore, specs: Vec<CreateSpec>) -> (usize, usize) {
    let barrier = Arc::new(tokio::sync::Barrier::new(specs.len()));
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|s| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.enqueue_create(s).await
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(QueueError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    (ok, conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_id_reserve_it_once() {
    let dir = TempDir::new("race-id");
    let store = open(&dir);
    let specs = (1..=50).map(|host| spec(5, 2, host)).collect();
    assert_eq!(race(&store, specs).await, (1, 49));
    assert_eq!(store.queued_count().unwrap(), 1);
    assert_eq!(record_ids(&store).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_address_reserve_it_once() {
    let dir = TempDir::new("race-addr");
    let store = open(&dir);
    let specs = (1..=50).map(|id| spec(id, 2, 9)).collect();
    assert_eq!(race(&store, specs).await, (1, 49));
    assert_eq!(store.queued_count().unwrap(), 1);
    assert_eq!(record_ids(&store).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_flushes() {
    let dir = TempDir::new("group-commit");
    let store = open(&dir);
    let before = store.flushes();
    let specs = (1..=64u8).map(|n| spec(u64::from(n), 3, n)).collect();
    assert_eq!(race(&store, specs).await, (64, 0));
    let used = store.flushes() - before;
    assert!(used >= 1, "every accepted job waited for a flush");
    assert!(used < 64, "64 concurrent enqueues used {used} flushes");
    // Every accepted job is on disk: reopen and count.
    drop(store);
    let store = open(&dir);
    assert_eq!(store.queued_count().unwrap(), 64);
    assert_eq!(store.list(None, 100).unwrap().len(), 64);
}
