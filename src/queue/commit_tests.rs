//! The commit thread's batches: writes committed together are each checked against the ones
//! before them, a batch that only refused syncs nothing, and step records that end an action
//! wait for the next flush.

use super::committer::commit_batch;
use super::enqueue::{create_write, destroy_write};
use super::test_support::{cid, open, open_with, record_ids, spec, TempDir};
use super::{Conflict, QueueError, StepState, StoreOptions};
use crate::spec::{StepEvent, StepName};

#[tokio::test]
async fn a_batch_checks_each_write_against_the_ones_before_it() {
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
    let writes: Vec<_> = specs.into_iter().map(|s| create_write(3, s)).collect();
    let results = commit_batch(&store.trees().unwrap(), &writes).unwrap();
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
    let seqs: Vec<u64> = results.iter().flatten().map(|e| e.job.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    store.flush().await.unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.queued_count().unwrap(), 3);
    assert_eq!(record_ids(&store), [1, 2, 3]);
}

#[tokio::test]
async fn a_batch_mixes_creates_and_destroys() {
    let dir = TempDir::new("batch-mixed");
    let store = open(&dir);
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    store.start(job.id).await.unwrap();
    store.finish(job.id, Ok(())).await.unwrap();
    let max = StoreOptions::default().max_queued;
    let writes = vec![
        destroy_write(max, cid(1)),
        destroy_write(max, cid(1)),       // already destroying
        destroy_write(max, cid(9)),       // no such container
        create_write(max, spec(1, 2, 7)), // the ID is still held by the destroy
    ];
    let results = commit_batch(&store.trees().unwrap(), &writes).unwrap();
    assert!(results[0].is_ok());
    assert!(
        matches!(&results[1], Err(QueueError::Conflict(Conflict::Busy { doing, .. })) if *doing == "being destroyed already")
    );
    assert!(matches!(&results[2], Err(QueueError::NotFound(_))));
    assert!(matches!(&results[3], Err(QueueError::Conflict(_))));
    assert_eq!(store.queued_count().unwrap(), 1);
}

#[tokio::test]
async fn done_records_ride_on_the_next_flush() {
    let dir = TempDir::new("done-unflushed");
    let store = open(&dir);
    let job = store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    store.start(job.id).await.unwrap();
    let step = StepName::CreateContainer;
    let before = store.flushes();
    store
        .record_step(job.id, step, StepEvent::Started)
        .await
        .unwrap();
    assert_eq!(
        store.flushes(),
        before + 1,
        "started is flushed before acting"
    );
    store
        .record_step(job.id, step, StepEvent::Done)
        .await
        .unwrap();
    assert_eq!(store.flushes(), before + 1, "done waits for the next flush");
    // The next flushed write carries it to disk.
    store
        .record_step(job.id, StepName::StartContainer, StepEvent::Started)
        .await
        .unwrap();
    drop(store);
    let store = open(&dir);
    let steps = store.get(job.id).unwrap().unwrap().steps;
    let state = |name| steps.iter().find(|s| s.name == name).unwrap().state;
    assert_eq!(state(StepName::CreateContainer), StepState::Done);
    assert_eq!(state(StepName::StartContainer), StepState::Running);
}

#[tokio::test]
async fn refusals_alone_cost_no_disk_sync() {
    let dir = TempDir::new("refusals");
    let store = open(&dir);
    store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    let before = store.flushes();
    assert!(matches!(
        store.enqueue_create(spec(5, 2, 6)).await,
        Err(QueueError::Conflict(_))
    ));
    assert!(matches!(
        store.enqueue_destroy(cid(8)).await,
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(
        store.flushes(),
        before,
        "a refused enqueue wrote nothing to sync"
    );
    store.enqueue_create(spec(6, 2, 6)).await.unwrap();
    assert_eq!(store.flushes(), before + 1);
}
