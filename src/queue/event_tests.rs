//! Events: one per change, numbered in commit order without holes, readable once on disk,
//! pruned with their jobs.

use super::test_support::{open, open_with, spec, TempDir};
use super::{Event, EventType, JobStore, StoreOptions};
use crate::spec::{StepEvent, StepName};

/// `(type, step, state)` of every event readable after `after`.
fn shapes(store: &JobStore, after: u64) -> Vec<(EventType, Option<StepName>, String)> {
    store
        .events_after(after, 1000)
        .unwrap()
        .iter()
        .map(|e| {
            let ev = e.event().unwrap();
            assert_eq!((ev.seq, ev.kind), (e.seq, e.kind));
            (ev.kind, ev.step, ev.state)
        })
        .collect()
}

#[tokio::test]
async fn every_change_of_a_job_is_an_event_in_commit_order() {
    let dir = TempDir::new("events-order");
    let store = open(&dir);
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    assert_eq!(job.first_event, Some(1));
    store.start(job.id).await.unwrap();
    let step = StepName::CreateContainer;
    store
        .record_step(job.id, step, StepEvent::Started)
        .await
        .unwrap();
    store
        .record_step(job.id, step, StepEvent::Failed("boom"))
        .await
        .unwrap();
    store
        .record_step(job.id, step, StepEvent::Undoing)
        .await
        .unwrap();
    store
        .record_step(job.id, step, StepEvent::Undone)
        .await
        .unwrap();
    store.finish(job.id, Err("boom".into())).await.unwrap();
    use EventType::{Job, Step};
    let s = |kind, step: Option<StepName>, state: &str| (kind, step, state.to_string());
    assert_eq!(
        shapes(&store, 0),
        vec![
            s(Job, None, "queued"),
            s(Job, None, "running"),
            s(Step, Some(step), "running"),
            s(Step, Some(step), "failed"),
            s(Step, Some(step), "undoing"),
            s(Step, Some(step), "undone"),
            s(Job, None, "failed"),
        ]
    );
    assert_eq!(store.last_event(), 7);
    let last = store.events_after(6, 1).unwrap()[0].event().unwrap();
    assert_eq!(
        (last.job_id, last.error.as_deref()),
        (Some(job.id), Some("boom"))
    );
}

#[tokio::test]
async fn a_refused_request_leaves_no_event_and_no_hole() {
    let dir = TempDir::new("events-refused");
    let store = open(&dir);
    store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    assert!(store.enqueue_create(spec(1, 2, 2)).await.is_err());
    let second = store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    assert_eq!(second.first_event, Some(2));
    let seqs: Vec<u64> = store
        .events_after(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[tokio::test]
async fn events_go_with_their_jobs_and_the_gap_is_told() {
    let dir = TempDir::new("events-prune");
    let opts = StoreOptions {
        keep_finished: 1,
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts);
    for id in [1, 2] {
        let job = store.enqueue_create(spec(id, 2, id as u8)).await.unwrap();
        store.start(job.id).await.unwrap();
        store.finish(job.id, Ok(())).await.unwrap();
    }
    let kept = store.list(None, 10).unwrap()[0].first_event.unwrap();
    assert_eq!(kept, 4, "job 1 made events 1 to 3");
    assert_eq!(store.events_pruned_after(0).unwrap(), None);
    assert_eq!(store.prune().unwrap(), 1);
    let left: Vec<u64> = store
        .events_after(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, vec![4, 5, 6]);
    assert_eq!(store.events_pruned_after(0).unwrap(), Some(4));
    assert_eq!(store.events_pruned_after(2).unwrap(), Some(4));
    assert_eq!(store.events_pruned_after(3).unwrap(), None);
    assert_eq!(store.events_pruned_after(6).unwrap(), None);
}

#[tokio::test]
async fn event_numbers_go_on_after_a_reopen() {
    let dir = TempDir::new("events-reopen");
    {
        let store = open(&dir);
        store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.last_event(), 1);
    let job = store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    assert_eq!(job.first_event, Some(2));
}

#[tokio::test]
async fn a_pass_with_more_observations_than_a_transaction_takes_stores_them_all_in_order() {
    let dir = TempDir::new("events-observations");
    let store = open(&dir);
    let n = 2 * super::feed::OBSERVATIONS_PER_TX + 1;
    let events: Vec<Event> = (1..=n as u64)
        .map(|id| Event::health(super::test_support::cid(id), "ok", None))
        .collect();
    store.record_observations(events).await.unwrap();
    let stored = store.events_after(0, 10 * n).unwrap();
    let ids: Vec<Option<u32>> = stored
        .iter()
        .map(|e| e.event().unwrap().container_id.map(|c| c.get()))
        .collect();
    let want: Vec<Option<u32>> = (1..=n as u32).map(Some).collect();
    assert_eq!(ids, want);
    assert_eq!(store.last_event(), n as u64);
}
