//! The worker over fakes: crash recovery (stop leftovers first, undo, requeue or keep the
//! reservation) and a failed rollback during a normal run.

use std::sync::Arc;

use super::Worker;
use crate::images::{ImageBook, ImageRecord, Images};
use crate::model::{ContainerId, VlanId};
use crate::queue::{ContainerRecordState, JobState, Lifecycle, Origin, QueueError};
use crate::spec::CreateSpec;
use crate::steps::UNDO_TRIES;
use crate::sys::fake::FakeNetlink;
use crate::sys::fake_lxc::FakeLxc;
use crate::sys::Lxc;
use crate::test_support::{fake_host, worker, TempDir};

struct Rig {
    worker: Worker,
    net: FakeNetlink,
    lxc: FakeLxc,
    _dir: TempDir,
}

async fn rig() -> Rig {
    let dir = TempDir::new("worker");
    let (host, net, lxc, fabric) = fake_host().await;
    let worker = worker(&dir, host, fabric);
    Rig {
        worker,
        net,
        lxc,
        _dir: dir,
    }
}

fn spec(id: u64) -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(id).unwrap(),
        vlan: VlanId::new(2).unwrap(),
        ip: format!("192.168.2.{id}/24").parse().unwrap(),
        gateway: None,
        template: None,
    }
}

/// A create of container `id` that a crash left `running`, its container half made.
async fn interrupted_create(r: &Rig, id: u64) -> uuid::Uuid {
    let job = r.worker.store.enqueue_create(spec(id)).await.unwrap();
    r.worker.store.start(job.id).await.unwrap();
    r.lxc.create(&format!("container{id}"), None).await.unwrap();
    r.net.clear_calls();
    job.id
}

/// Index of the first logged call containing `needle`.
fn position(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no call {needle} in {calls:#?}"))
}

#[tokio::test]
async fn recovery_stops_the_jobs_leftover_tools_before_it_undoes_then_requeues() {
    let r = rig().await;
    let job = interrupted_create(&r, 5).await;
    assert_eq!(r.worker.recover().await.unwrap(), 1);
    let calls = r.net.calls();
    assert!(
        position(&calls, &format!("reap {job}")) < position(&calls, "lxc-destroy container5"),
        "undo ran before the leftovers were stopped: {calls:#?}"
    );
    assert!(r.lxc.names().is_empty());
    assert_eq!(
        r.worker.store.get(job).unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_recovery_rollback_keeps_the_reservation_until_a_destroy() {
    let r = rig().await;
    let job = interrupted_create(&r, 6).await;
    for _ in 0..UNDO_TRIES {
        r.net.fail_next("lxc-destroy container6", libc::EBUSY);
    }
    r.worker.recover().await.unwrap();
    let done = r.worker.store.get(job).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let error = done.error.unwrap();
    assert!(
        error.contains("rollback failed") && error.contains("busy"),
        "{error}"
    );
    let rec = r.worker.store.container(spec(6).id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Leftover);
    assert_eq!(rec.job_id, None);
    // The leftover still holds its ID and its address.
    assert!(matches!(
        r.worker.store.enqueue_create(spec(6)).await,
        Err(QueueError::Conflict(_))
    ));
    let mut other = spec(7);
    other.ip = spec(6).ip;
    assert!(matches!(
        r.worker.store.enqueue_create(other).await,
        Err(QueueError::Conflict(_))
    ));
    // A destroy cleans it up and releases both.
    let destroy = r.worker.store.enqueue_destroy(spec(6).id).await.unwrap();
    let next = r.worker.store.next_queued().unwrap().unwrap();
    assert_eq!(next.id, destroy.id);
    r.worker.run_job(next).await.unwrap();
    assert!(r.lxc.names().is_empty());
    assert_eq!(r.worker.store.container(spec(6).id).unwrap(), None);
}

#[tokio::test]
async fn when_leftover_tools_cannot_be_stopped_nothing_is_undone() {
    let r = rig().await;
    let job = interrupted_create(&r, 8).await;
    r.net.fail_next("reap", libc::EIO);
    r.worker.recover().await.unwrap();
    let calls = r.net.calls();
    assert!(
        !calls.iter().any(|c| c.contains("lxc-")),
        "undo acted while the job's tools may still run: {calls:#?}"
    );
    assert_eq!(r.lxc.names(), ["container8"]);
    let done = r.worker.store.get(job).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed);
    let rec = r.worker.store.container(spec(8).id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Leftover);
}

#[tokio::test(start_paused = true)]
async fn a_create_whose_rollback_fails_keeps_its_reservation() {
    let r = rig().await;
    let job = r.worker.store.enqueue_create(spec(9)).await.unwrap();
    r.net.fail_next("create_veth", libc::EBUSY);
    for _ in 0..UNDO_TRIES {
        r.net.fail_next("lxc-destroy container9", libc::EIO);
    }
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    let done = r.worker.store.get(job.id).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed);
    let rec = r.worker.store.container(spec(9).id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Leftover);
}

#[tokio::test(start_paused = true)]
async fn a_create_whose_rollback_succeeds_on_a_retry_releases_its_reservation() {
    let r = rig().await;
    let job = r.worker.store.enqueue_create(spec(10)).await.unwrap();
    r.net.fail_next("create_veth", libc::EBUSY);
    r.net.fail_next("lxc-destroy container10", libc::EIO);
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    let done = r.worker.store.get(job.id).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert!(done.error.unwrap().contains("nothing left behind"));
    assert_eq!(r.worker.store.container(spec(10).id).unwrap(), None);
    assert!(r.lxc.names().is_empty());
}

#[tokio::test]
async fn a_create_stopped_by_shutdown_is_queued_again_when_its_rollback_is_clean() {
    let r = rig().await;
    let job = r.worker.store.enqueue_create(spec(11)).await.unwrap();
    r.worker.shutdown.cancel();
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    let again = r.worker.store.get(job.id).unwrap().unwrap();
    assert_eq!(again.state, JobState::Queued);
    let rec = r.worker.store.container(spec(11).id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Creating);
}

#[tokio::test(start_paused = true)]
async fn a_create_stopped_by_shutdown_whose_rollback_fails_is_failed_not_requeued() {
    let mut r = rig().await;
    let images = Images::new(
        r.worker.engine.host().lxc.clone(),
        Arc::new(r.worker.store.clone()),
    );
    r.worker.engine = r.worker.engine.clone().with_images(Arc::new(images));
    // A build a crash interrupted: its version taken, its directory there. The create's
    // rollback (its first step refused by the shutdown) must remove it, and cannot.
    let mut record = ImageRecord::new("busybox");
    record.next_version = 2;
    r.worker.store.put_image(&record).await.unwrap();
    r.lxc.create("image-busybox-v1", None).await.unwrap();
    let job = r.worker.store.enqueue_create(spec(12)).await.unwrap();
    r.worker.shutdown.cancel();
    for _ in 0..UNDO_TRIES {
        r.net.fail_next("lxc-destroy image-busybox-v1", libc::EIO);
    }
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    let done = r.worker.store.get(job.id).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert!(done.error.unwrap().contains("rollback incomplete"));
    let rec = r.worker.store.container(spec(12).id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Leftover);
}

#[tokio::test]
async fn an_interrupted_start_is_rolled_back_then_queued_again() {
    let r = rig().await;
    let create = r.worker.store.enqueue_create(spec(13)).await.unwrap();
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    assert_eq!(
        r.worker.store.get(create.id).unwrap().unwrap().state,
        JobState::Succeeded
    );
    let start = r
        .worker
        .store
        .enqueue_lifecycle(spec(13).id, Lifecycle::Start, Origin::Reconcile)
        .await
        .unwrap();
    r.worker.store.start(start.id).await.unwrap();
    r.net.clear_calls();
    r.worker.recover().await.unwrap();
    let calls = r.net.calls();
    assert!(
        position(&calls, &format!("reap {}", start.id)) < position(&calls, "lxc-stop container13"),
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("lxc-destroy")),
        "a start's rollback never destroys the container: {calls:#?}"
    );
    let again = r.worker.store.get(start.id).unwrap().unwrap();
    assert_eq!(
        (again.state, again.origin),
        (JobState::Queued, Origin::Reconcile)
    );
    let next = r.worker.store.next_queued().unwrap().unwrap();
    r.worker.run_job(next).await.unwrap();
    assert_eq!(
        r.worker.store.get(start.id).unwrap().unwrap().state,
        JobState::Succeeded
    );
}
