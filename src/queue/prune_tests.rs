//! Pruning tests: old and excess finished jobs go, queued and running jobs stay.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::test_support::{cid, open_with, spec, TempDir};
use super::{JobState, JobStore, StoreOptions};

/// Enqueues and finishes a create of container `id` with `ok`.
async fn finished(store: &JobStore, id: u64, ok: bool) -> uuid::Uuid {
    let job = store.enqueue_create(spec(id, 2, id as u8)).await.unwrap();
    store.start(job.id).await.unwrap();
    let result = if ok { Ok(()) } else { Err("no".into()) };
    store.finish(job.id, result).await.unwrap();
    job.id
}

#[tokio::test]
async fn prune_drops_excess_finished_jobs_oldest_first() {
    let dir = TempDir::new("prune-excess");
    let opts = StoreOptions {
        keep_finished: 2,
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts);
    let old = finished(&store, 1, true).await;
    let queued = store.enqueue_create(spec(10, 2, 10)).await.unwrap();
    let running = store.enqueue_create(spec(11, 2, 11)).await.unwrap();
    store.start(running.id).await.unwrap();
    let f2 = finished(&store, 2, false).await;
    let cancelled = store.enqueue_create(spec(3, 2, 3)).await.unwrap();
    store.cancel(cancelled.id).await.unwrap();

    assert_eq!(store.prune().unwrap(), 1);
    assert_eq!(store.get(old).unwrap(), None);
    for kept in [queued.id, running.id, f2, cancelled.id] {
        assert!(store.get(kept).unwrap().is_some());
    }
    assert_eq!(store.list(None, 10).unwrap().len(), 4);
    // The succeeded create's container is not a job's to prune.
    assert!(store.container(cid(1)).unwrap().is_some());
    assert_eq!(store.prune().unwrap(), 0);
}

#[tokio::test]
async fn prune_drops_old_finished_jobs_only() {
    let dir = TempDir::new("prune-old");
    let opts = StoreOptions {
        keep_for: Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts);
    finished(&store, 1, true).await;
    finished(&store, 2, false).await;
    let queued = store.enqueue_create(spec(10, 2, 10)).await.unwrap();
    let running = store.enqueue_create(spec(11, 2, 11)).await.unwrap();
    store.start(running.id).await.unwrap();

    assert_eq!(store.prune().unwrap(), 0, "nothing is an hour old yet");
    let later = OffsetDateTime::now_utc() + time::Duration::hours(2);
    assert_eq!(store.prune_at(later).unwrap(), 2);
    let left: Vec<_> = store
        .list(None, 10)
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(left, [running.id, queued.id]);
    let counts = store.counts_by_state().unwrap();
    assert_eq!(counts.get(&JobState::Succeeded), None);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(queued.id));
}

#[tokio::test]
async fn the_pruner_runs_until_shutdown_then_stops() {
    let dir = TempDir::new("pruner");
    let opts = StoreOptions {
        keep_finished: 0,
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts);
    let job = finished(&store, 1, true).await;
    let shutdown = CancellationToken::new();
    let pruner = store.spawn_pruner(Duration::from_millis(10), shutdown.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get(job).unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pruner never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The store is still open, so only the token can stop it.
    assert!(!pruner.is_finished(), "the pruner stopped before shutdown");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), pruner)
        .await
        .expect("the pruner still runs 10 s after shutdown")
        .expect("the pruner panicked");
}
