//! Store tests: durability across reopen, the reservation ledger, the lifecycle through the
//! store, the queue bound, and the directory lock.

use super::test_support::{cid, created, open, open_with, record_ids, spec, TempDir};
use super::{ContainerRecordState, JobState, QueueError, StepState, StoreOptions};
use crate::spec::{StepEvent, StepName};

fn conflict(r: Result<impl std::fmt::Debug, QueueError>) -> String {
    match r {
        Err(QueueError::Conflict(m)) => m.to_string(),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn accepted_jobs_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let store = open(&dir);
    let job = store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert!(store.flushes() >= 1);
    drop(store);

    let store = open(&dir);
    assert_eq!(store.get(job.id).unwrap(), Some(job.clone()));
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(job.id));
    assert_eq!(store.queued_count().unwrap(), 1);
    let rec = store.container(cid(5)).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Creating);
    assert_eq!(rec.job_id, Some(job.id));
    // The sequence continues after a reopen.
    let next = store.enqueue_create(spec(6, 2, 6)).await.unwrap();
    assert!(next.seq > job.seq);
}

#[tokio::test]
async fn creates_conflict_on_id_and_on_address_per_vlan() {
    let dir = TempDir::new("conflicts");
    let store = open(&dir);
    let first = store.enqueue_create(spec(5, 2, 5)).await.unwrap();

    let m = conflict(store.enqueue_create(spec(5, 3, 9)).await);
    assert_eq!(
        m,
        format!("container 5 has a job pending (job {})", first.id)
    );
    let m = conflict(store.enqueue_create(spec(7, 2, 5)).await);
    assert_eq!(m, "192.168.2.5 is already used on vlan 2 by container 5");
    // The same last byte on another VLAN is another address.
    store.enqueue_create(spec(8, 3, 5)).await.unwrap();

    store.start(first.id).await.unwrap();
    store.finish(first.id, Ok(())).await.unwrap();
    let m = conflict(store.enqueue_create(spec(5, 4, 4)).await);
    assert_eq!(m, "container 5 already exists");
    assert_eq!(store.queued_count().unwrap(), 1);
}

#[tokio::test]
async fn destroys_need_an_idle_container() {
    let dir = TempDir::new("destroy");
    let store = open(&dir);
    assert!(matches!(
        store.enqueue_destroy(cid(9)).await,
        Err(QueueError::NotFound(m)) if m == "container 9 does not exist"
    ));
    let create = store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    let m = conflict(store.enqueue_destroy(cid(5)).await);
    assert_eq!(
        m,
        format!("container 5 is being created (job {})", create.id)
    );

    store.start(create.id).await.unwrap();
    store.finish(create.id, Ok(())).await.unwrap();
    let destroy = store.enqueue_destroy(cid(5)).await.unwrap();
    let rec = store.container(cid(5)).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Destroying);
    assert_eq!(rec.job_id, Some(destroy.id));
    let m = conflict(store.enqueue_create(spec(5, 2, 5)).await);
    assert!(m.contains("has a job pending"), "{m}");
    let m = conflict(store.enqueue_destroy(cid(5)).await);
    assert!(m.contains("being destroyed already"), "{m}");
}

#[tokio::test]
async fn finishing_settles_the_reservation() {
    let dir = TempDir::new("finish");
    let store = open(&dir);
    // Create ok: the container becomes active, its address stays held.
    created(&store, 1, 2, 1).await;
    let rec = store.container(cid(1)).unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.job_id),
        (ContainerRecordState::Active, None)
    );
    conflict(store.enqueue_create(spec(2, 2, 1)).await);

    // Create failed: ID and address are free again.
    let job = store.enqueue_create(spec(3, 2, 3)).await.unwrap();
    store.start(job.id).await.unwrap();
    let done = store
        .finish(job.id, Err("step x failed".into()))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.error.as_deref(), Some("step x failed"));
    assert!(done.finished_at.is_some());
    assert_eq!(store.container(cid(3)).unwrap(), None);
    store.enqueue_create(spec(4, 2, 3)).await.unwrap();

    // Destroy failed: back to active.
    let job = store.enqueue_destroy(cid(1)).await.unwrap();
    store.start(job.id).await.unwrap();
    store.finish(job.id, Err("busy".into())).await.unwrap();
    let rec = store.container(cid(1)).unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.job_id),
        (ContainerRecordState::Active, None)
    );

    // Destroy ok: gone, address free.
    let job = store.enqueue_destroy(cid(1)).await.unwrap();
    store.start(job.id).await.unwrap();
    let done = store.finish(job.id, Ok(())).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(store.container(cid(1)).unwrap(), None);
    store.enqueue_create(spec(1, 2, 1)).await.unwrap();

    assert_eq!(record_ids(&store), [1, 4]);
}

#[tokio::test]
async fn the_store_enforces_the_lifecycle() {
    let dir = TempDir::new("lifecycle");
    let store = open(&dir);
    let job = store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    assert!(matches!(
        store.finish(job.id, Ok(())).await,
        Err(QueueError::BadTransition {
            from: JobState::Queued,
            to: JobState::Succeeded
        })
    ));
    assert!(matches!(
        store
            .record_step(job.id, StepName::CreateContainer, StepEvent::Started)
            .await,
        Err(QueueError::Conflict(_))
    ));
    let running = store.start(job.id).await.unwrap();
    assert_eq!((running.state, running.attempts), (JobState::Running, 1));
    assert!(running.started_at.is_some());
    assert_eq!(store.queued_count().unwrap(), 0);
    assert!(store.next_queued().unwrap().is_none());
    assert!(matches!(
        store.start(job.id).await,
        Err(QueueError::BadTransition {
            from: JobState::Running,
            to: JobState::Running
        })
    ));

    store
        .record_step(job.id, StepName::CreateContainer, StepEvent::Started)
        .await
        .unwrap();
    let seen = store.get(job.id).unwrap().unwrap();
    let step = seen
        .steps
        .iter()
        .find(|s| s.name == StepName::CreateContainer);
    assert_eq!(step.unwrap().state, StepState::Running);
    assert_eq!(store.running().unwrap().len(), 1);

    store.finish(job.id, Ok(())).await.unwrap();
    assert!(matches!(
        store.requeue_interrupted(job.id).await,
        Err(QueueError::BadTransition {
            from: JobState::Succeeded,
            to: JobState::Queued
        })
    ));
    let unknown = uuid::Uuid::new_v4();
    assert!(matches!(
        store.start(unknown).await,
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(store.get(unknown).unwrap(), None);
}

#[tokio::test]
async fn cancel_only_queued_jobs_and_release_like_a_failure() {
    let dir = TempDir::new("cancel");
    let store = open(&dir);
    let create = store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    let cancelled = store.cancel(create.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(store.container(cid(5)).unwrap(), None);
    assert_eq!(store.queued_count().unwrap(), 0);
    assert!(matches!(
        store.cancel(create.id).await,
        Err(QueueError::NotCancellable {
            state: JobState::Cancelled
        })
    ));

    created(&store, 6, 2, 6).await;
    let destroy = store.enqueue_destroy(cid(6)).await.unwrap();
    store.cancel(destroy.id).await.unwrap();
    let rec = store.container(cid(6)).unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.job_id),
        (ContainerRecordState::Active, None)
    );

    let job = store.enqueue_destroy(cid(6)).await.unwrap();
    store.start(job.id).await.unwrap();
    let e = store.cancel(job.id).await.unwrap_err();
    assert_eq!(
        e,
        QueueError::NotCancellable {
            state: JobState::Running
        }
    );
    assert_eq!(
        e.to_string(),
        "only a queued job can be cancelled; this one is running"
    );
    assert!(matches!(
        store.cancel(uuid::Uuid::new_v4()).await,
        Err(QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn requeued_jobs_keep_their_place() {
    let dir = TempDir::new("requeue");
    let store = open(&dir);
    let first = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    let started = store.start(first.id).await.unwrap();
    store
        .record_step(first.id, StepName::CreateContainer, StepEvent::Failed("x"))
        .await
        .unwrap();
    let later = store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(later.id));

    let again = store.requeue_interrupted(first.id).await.unwrap();
    assert_eq!(
        (again.state, again.seq, again.attempts),
        (JobState::Queued, first.seq, 1)
    );
    assert!(again
        .steps
        .iter()
        .all(|s| s.state == StepState::Pending && s.error.is_none()));
    assert_eq!(again.started_at, None);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(first.id));
    assert_eq!(store.queued_count().unwrap(), 2);
    // The reservation is still held by the job.
    assert_eq!(
        store.container(cid(1)).unwrap().unwrap().job_id,
        Some(first.id)
    );
    let second = store.start(first.id).await.unwrap();
    assert_eq!(second.attempts, started.attempts + 1);
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let dir = TempDir::new("bound");
    let opts = StoreOptions {
        max_queued: 2,
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts);
    let a = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    let e = store.enqueue_create(spec(3, 2, 3)).await.unwrap_err();
    assert_eq!(e, QueueError::QueueFull { max: 2 });
    // Nothing of the refused job was kept.
    assert_eq!(store.container(cid(3)).unwrap(), None);
    store.start(a.id).await.unwrap();
    store.enqueue_create(spec(3, 2, 3)).await.unwrap();
}

#[tokio::test]
async fn lists_are_newest_first_and_counted() {
    let dir = TempDir::new("list");
    let store = open(&dir);
    let a = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    let b = store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    let c = store.enqueue_create(spec(3, 2, 3)).await.unwrap();
    store.cancel(b.id).await.unwrap();
    let ids = |jobs: Vec<super::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(None, 10).unwrap()), [c.id, b.id, a.id]);
    assert_eq!(ids(store.list(None, 2).unwrap()), [c.id, b.id]);
    assert_eq!(
        ids(store.list(Some(JobState::Queued), 10).unwrap()),
        [c.id, a.id]
    );
    let counts = store.counts_by_state().unwrap();
    assert_eq!(counts.get(&JobState::Queued), Some(&2));
    assert_eq!(counts.get(&JobState::Cancelled), Some(&1));
    assert_eq!(counts.get(&JobState::Running), None);
}
