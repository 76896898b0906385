use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::model::{ContainerId, VlanId};
use crate::steps::{CreateSpec, StepEvent};

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cm-queue-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(id: u64, vlan: u64, ip: &str) -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(id).unwrap(),
        vlan: VlanId::new(vlan).unwrap(),
        ip: ip.parse().unwrap(),
        gateway: None,
    }
}

fn open(dir: &TempDir) -> JobStore {
    JobStore::open(&dir.0, StoreOptions::default()).unwrap()
}

#[tokio::test]
async fn an_accepted_job_survives_a_reopen() {
    let dir = TempDir::new();
    let store = open(&dir);
    let job = store
        .enqueue_create(spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.get(job.id).unwrap().unwrap(), job);
    assert_eq!(store.next_queued().unwrap().unwrap().id, job.id);
    assert_eq!(store.queued_count(), 1);
    assert_eq!(
        store.container(job.container_id).unwrap().unwrap().state,
        ContainerRecordState::Creating
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new();
    let _store = open(&dir);
    let err = JobStore::open(&dir.0, StoreOptions::default())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, QueueError::InUse(_)), "{err}");
    assert!(
        err.to_string().contains("is in use by another creepy-meow"),
        "{err}"
    );
}

#[tokio::test]
async fn ids_and_addresses_conflict_across_jobs_and_containers() {
    let dir = TempDir::new();
    let store = open(&dir);
    store
        .enqueue_create(spec(5, 2, "192.168.2.5/24"))
        .await
        .unwrap();
    let e = store
        .enqueue_create(spec(5, 3, "192.168.3.5/24"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("container 5 has a job pending"),
        "{e}"
    );
    let e = store
        .enqueue_create(spec(6, 2, "192.168.2.5/24"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "192.168.2.5 is already used on vlan 2 by container 5"
    );
    store
        .enqueue_create(spec(6, 3, "192.168.2.5/24"))
        .await
        .expect("same address on another VLAN is fine");
    assert!(matches!(
        store.enqueue_destroy(ContainerId::new(9).unwrap()).await,
        Err(QueueError::NotFound(_))
    ));
    let e = store
        .enqueue_destroy(ContainerId::new(5).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, QueueError::Conflict(_)),
        "destroy while the create is pending: {e}"
    );

    let job = store.next_queued().unwrap().unwrap();
    store.start(job.id).await.unwrap();
    store.finish(job.id, Ok(())).await.unwrap();
    let e = store
        .enqueue_create(spec(5, 4, "192.168.4.5/24"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "container 5 already exists");
    let d = store
        .enqueue_destroy(ContainerId::new(5).unwrap())
        .await
        .unwrap();
    assert_eq!(d.kind, JobKind::Destroy);
    let e = store
        .enqueue_create(spec(5, 4, "192.168.4.5/24"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("has a job pending"),
        "create while its destroy is pending: {e}"
    );
    let e = store
        .enqueue_destroy(ContainerId::new(5).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, QueueError::Conflict(_)),
        "a second destroy: {e}"
    );
}

#[tokio::test]
async fn finishing_settles_the_ledger_four_ways() {
    let dir = TempDir::new();
    let store = open(&dir);
    let run = |s: &JobStore| s.next_queued().unwrap().unwrap();
    // create ok -> active; create failed -> released
    let a = store
        .enqueue_create(spec(1, 2, "192.168.2.1/24"))
        .await
        .unwrap();
    let b = store
        .enqueue_create(spec(2, 2, "192.168.2.2/24"))
        .await
        .unwrap();
    assert_eq!(run(&store).id, a.id);
    store.start(a.id).await.unwrap();
    store.finish(a.id, Ok(())).await.unwrap();
    store.start(b.id).await.unwrap();
    let failed = store.finish(b.id, Err("boom".into())).await.unwrap();
    assert_eq!(
        (failed.state, failed.error.as_deref()),
        (JobState::Failed, Some("boom"))
    );
    assert_eq!(
        store.container(a.container_id).unwrap().unwrap().state,
        ContainerRecordState::Active
    );
    assert!(store.container(b.container_id).unwrap().is_none());
    store
        .enqueue_create(spec(3, 2, "192.168.2.2/24"))
        .await
        .expect("the failed job's address is free");
    // destroy failed -> back to active; destroy ok -> released
    let c = store.next_queued().unwrap().unwrap();
    store.start(c.id).await.unwrap();
    store.finish(c.id, Ok(())).await.unwrap();
    let d1 = store.enqueue_destroy(a.container_id).await.unwrap();
    store.start(d1.id).await.unwrap();
    store.finish(d1.id, Err("stuck".into())).await.unwrap();
    let rec = store.container(a.container_id).unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.job_id),
        (ContainerRecordState::Active, None)
    );
    let d2 = store.enqueue_destroy(a.container_id).await.unwrap();
    store.start(d2.id).await.unwrap();
    store.finish(d2.id, Ok(())).await.unwrap();
    assert!(store.container(a.container_id).unwrap().is_none());
    store
        .enqueue_create(spec(1, 2, "192.168.2.1/24"))
        .await
        .expect("a destroyed container's ID and address are free");
    // transitions outside the lifecycle are refused
    assert!(matches!(
        store.finish(d2.id, Ok(())).await,
        Err(QueueError::BadTransition { .. })
    ));
}

#[tokio::test]
async fn cancel_and_requeue_keep_order_and_reservations_right() {
    let dir = TempDir::new();
    let store = open(&dir);
    let a = store
        .enqueue_create(spec(1, 2, "192.168.2.11/24"))
        .await
        .unwrap();
    let b = store
        .enqueue_create(spec(2, 2, "192.168.2.12/24"))
        .await
        .unwrap();
    let cancelled = store.cancel(b.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(store.container(b.container_id).unwrap().is_none());
    assert!(matches!(
        store.cancel(b.id).await,
        Err(QueueError::NotCancellable { .. })
    ));
    let c = store
        .enqueue_create(spec(3, 2, "192.168.2.12/24"))
        .await
        .unwrap();
    store.start(a.id).await.unwrap();
    store
        .record_step(a.id, "create_container", StepEvent::Started)
        .await
        .unwrap();
    assert!(matches!(
        store.cancel(a.id).await,
        Err(QueueError::NotCancellable { .. })
    ));
    assert_eq!(store.running().unwrap().len(), 1);
    let again = store.requeue_interrupted(a.id).await.unwrap();
    assert_eq!(again.state, JobState::Queued);
    assert!(again.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(again.attempts, 1);
    assert_eq!(
        store.next_queued().unwrap().unwrap().id,
        a.id,
        "the interrupted job keeps its place before {}",
        c.id
    );
    assert_eq!(store.queued_count(), 2);
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let dir = TempDir::new();
    let store = JobStore::open(
        &dir.0,
        StoreOptions {
            max_queued: 2,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store
        .enqueue_create(spec(1, 2, "192.168.2.11/24"))
        .await
        .unwrap();
    store
        .enqueue_create(spec(2, 2, "192.168.2.12/24"))
        .await
        .unwrap();
    let e = store
        .enqueue_create(spec(3, 2, "192.168.2.13/24"))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::QueueFull { max: 2 }), "{e}");
    assert!(
        store
            .container(ContainerId::new(3).unwrap())
            .unwrap()
            .is_none(),
        "a refused job reserves nothing"
    );
    let j = store.next_queued().unwrap().unwrap();
    store.start(j.id).await.unwrap();
    store
        .enqueue_create(spec(3, 2, "192.168.2.13/24"))
        .await
        .expect("room again once one started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_enqueues_get_one_acceptance_and_share_flushes() {
    let dir = TempDir::new();
    let store = open(&dir);
    let same_id = (0..50).map(|i| {
        let s = store.clone();
        tokio::spawn(async move {
            s.enqueue_create(spec(7, 2, &format!("192.168.2.{}/24", 100 + i)))
                .await
                .is_ok()
        })
    });
    let same_addr = (0..50).map(|i| {
        let s = store.clone();
        tokio::spawn(async move {
            s.enqueue_create(spec(1000 + i, 3, "192.168.3.3/24"))
                .await
                .is_ok()
        })
    });
    let tasks: Vec<_> = same_id.chain(same_addr).collect();
    let mut oks = Vec::new();
    for t in tasks {
        oks.push(t.await.unwrap());
    }
    assert_eq!(oks[..50].iter().filter(|o| **o).count(), 1, "same ID");
    assert_eq!(
        oks[50..].iter().filter(|o| **o).count(),
        1,
        "same VLAN and address"
    );
    // Group commit: many concurrent enqueues, fewer flushes.
    let before = store.flushes();
    let many: Vec<_> = (0..64)
        .map(|i| {
            let s = Arc::new(store.clone());
            tokio::spawn(async move {
                s.enqueue_create(spec(2000 + i, 4, &format!("192.168.4.{}/24", i + 1)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in many {
        t.await.unwrap();
    }
    let used = store.flushes() - before;
    assert!(
        (1..64).contains(&used),
        "64 concurrent enqueues used {used} flushes"
    );
}

#[tokio::test]
async fn prune_keeps_unfinished_jobs_and_the_newest_finished() {
    let dir = TempDir::new();
    let store = JobStore::open(
        &dir.0,
        StoreOptions {
            keep_finished: 1,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut finished = Vec::new();
    for i in 1..=3 {
        let j = store
            .enqueue_create(spec(i, 2, &format!("192.168.2.{i}/24")))
            .await
            .unwrap();
        store.start(j.id).await.unwrap();
        store.finish(j.id, Err("x".into())).await.unwrap();
        finished.push(j.id);
    }
    let queued = store
        .enqueue_create(spec(9, 2, "192.168.2.9/24"))
        .await
        .unwrap();
    assert_eq!(store.prune().unwrap(), 2);
    assert!(
        store.get(finished[2]).unwrap().is_some(),
        "the newest finished job is kept"
    );
    assert!(store.get(finished[0]).unwrap().is_none());
    assert!(store.get(queued.id).unwrap().is_some());
    let counts = store.counts_by_state().unwrap();
    assert_eq!(
        (counts.get(&JobState::Failed), counts.get(&JobState::Queued)),
        (Some(&1), Some(&1))
    );
}
