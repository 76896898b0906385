//! Concurrency tests: racing enqueues reserve exactly once, concurrent writers share flushes
//! (group commit), and a batch of creates committed together checks each one.

use std::sync::Arc;

use super::test_support::{open, open_with, record_ids, spec, TempDir};
use super::write::create_batch;
use super::{JobStore, QueueError, StoreOptions};
use crate::steps::CreateSpec;

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
    assert_eq!(store.queued_count(), 1);
    assert_eq!(store.containers().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_address_reserve_it_once() {
    let dir = TempDir::new("race-addr");
    let store = open(&dir);
    let specs = (1..=50).map(|id| spec(id, 2, 9)).collect();
    assert_eq!(race(&store, specs).await, (1, 49));
    assert_eq!(store.queued_count(), 1);
    assert_eq!(store.containers().unwrap().len(), 1);
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
    assert_eq!(store.queued_count(), 64);
    assert_eq!(store.list(None, 100).unwrap().len(), 64);
}

#[tokio::test]
async fn a_batch_checks_each_create_against_the_ones_before_it() {
    let dir = TempDir::new("batch");
    let store = open_with(
        &dir,
        StoreOptions {
            max_queued: 3,
            ..StoreOptions::default()
        },
    );
    let specs = [
        spec(1, 2, 1),
        spec(1, 2, 2), // same ID as the first
        spec(2, 2, 1), // same address as the first
        spec(2, 3, 1), // same address, other VLAN
        spec(3, 2, 3),
        spec(4, 2, 4), // the queue holds three
    ];
    let results = create_batch(&store.inner.trees, dir.path(), 3, &specs).unwrap();
    let outcome: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(_) => "ok",
            Err(QueueError::Conflict(_)) => "conflict",
            Err(QueueError::QueueFull { .. }) => "full",
            Err(e) => panic!("unexpected error: {e}"),
        })
        .collect();
    assert_eq!(outcome, ["ok", "conflict", "conflict", "ok", "ok", "full"]);
    // Each accepted create has its own job, in order; the refused ones wrote nothing.
    let seqs: Vec<u64> = results.iter().flatten().map(|j| j.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    store.flush().await.unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.queued_count(), 3);
    assert_eq!(record_ids(&store), [1, 2, 3]);
}
