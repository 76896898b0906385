//! "Accepted means durable", observed at the disk sync itself: a recorder takes the place of
//! the `fdatasync` of sled's log, holds it closed until the test opens it, counts the syncs
//! and fails them on demand. (Reopening after a drop cannot show this: sled flushes on drop.)

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use futures::FutureExt;

use super::committer::LogSync;
use super::test_support::{spec, TempDir};
use super::{JobStore, QueueError, StoreOptions};
use crate::spec::{StepEvent, StepName};

/// What the test sees of the recorder.
#[derive(Default)]
struct Control {
    /// Whether syncs may go on.
    open: Mutex<bool>,
    opened: Condvar,
    /// Syncs that completed successfully.
    synced: AtomicU64,
    /// How many syncs still to fail.
    fail: AtomicU32,
    /// Told each time a sync begins.
    entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl Control {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

struct Recorder {
    log: File,
    ctl: Arc<Control>,
}

impl LogSync for Recorder {
    fn sync(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.ctl.entered.lock().unwrap().as_ref() {
            let _ = tx.send(());
        }
        let mut open = self.ctl.open.lock().unwrap();
        while !*open {
            open = self.ctl.opened.wait(open).unwrap();
        }
        drop(open);
        let fail = self.ctl.fail.load(Ordering::SeqCst);
        if fail > 0 {
            self.ctl.fail.store(fail - 1, Ordering::SeqCst);
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        self.log.sync_data()?;
        self.ctl.synced.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A store whose log syncs wait for the test; returns the store, its control, and the
/// receiver told when a sync begins.
fn gated_store(dir: &TempDir) -> (JobStore, Arc<Control>, mpsc::Receiver<()>) {
    let ctl = Arc::new(Control::default());
    let (tx, rx) = mpsc::channel();
    *ctl.entered.lock().unwrap() = Some(tx);
    let for_store = Arc::clone(&ctl);
    let store = JobStore::open_syncing(dir.path(), StoreOptions::default(), move |log| {
        Box::new(Recorder {
            log,
            ctl: Arc::clone(&for_store),
        })
    })
    .unwrap();
    (store, ctl, rx)
}

/// A create queued and started while syncs go on, then syncs held: its job.
async fn running_job(store: &JobStore, ctl: &Control) -> uuid::Uuid {
    ctl.open();
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap().id;
    store.start(job).await.unwrap();
    *ctl.open.lock().unwrap() = false;
    job
}

fn wait_entered(rx: &mpsc::Receiver<()>) {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the commit thread never began a sync");
}

#[tokio::test]
async fn no_202_before_the_sync_of_its_batch() {
    let dir = TempDir::new("sync-order");
    let (store, ctl, entered) = gated_store(&dir);
    let mut accept = Box::pin(store.enqueue_create(spec(1, 2, 1)));
    assert!(accept.as_mut().now_or_never().is_none());
    wait_entered(&entered);
    // The sync is held: had the answer been sent before it, it would be ready now.
    assert!(
        accept.as_mut().now_or_never().is_none(),
        "the create was acknowledged before its batch was synced"
    );
    ctl.open();
    accept.await.unwrap();
    assert_eq!(ctl.synced.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_sync_gives_no_202_to_anyone_in_the_batch() {
    let dir = TempDir::new("sync-fail");
    let (store, ctl, entered) = gated_store(&dir);
    ctl.fail.store(u32::MAX, Ordering::SeqCst);
    let mut accepts: Vec<_> = (1..=3)
        .map(|i| Box::pin(store.enqueue_create(spec(i, 2, i as u8))))
        .collect();
    for a in &mut accepts {
        assert!(a.as_mut().now_or_never().is_none());
    }
    wait_entered(&entered);
    ctl.open();
    for a in accepts {
        match a.await {
            Err(QueueError::Unavailable(e)) => assert!(e.contains("injected"), "{e}"),
            other => panic!("a create whose sync failed was answered {other:?}"),
        }
    }
    assert_eq!(ctl.synced.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_steps_start_is_synced_before_the_runner_may_act() {
    let dir = TempDir::new("sync-step");
    let (store, ctl, entered) = gated_store(&dir);
    ctl.open();
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    store.start(job.id).await.unwrap();
    while entered.try_recv().is_ok() {}
    *ctl.open.lock().unwrap() = false;
    let mut started =
        Box::pin(store.record_step(job.id, StepName::CreateContainer, StepEvent::Started));
    assert!(started.as_mut().now_or_never().is_none());
    wait_entered(&entered);
    assert!(
        started.as_mut().now_or_never().is_none(),
        "a step's start was confirmed before it was on disk"
    );
    let before = ctl.synced.load(Ordering::SeqCst);
    ctl.open();
    started.await.unwrap();
    assert_eq!(ctl.synced.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn the_start_of_a_step_with_nothing_of_its_own_to_undo_waits_for_no_sync() {
    let dir = TempDir::new("sync-undoless");
    let (store, ctl, _entered) = gated_store(&dir);
    let job = running_job(&store, &ctl).await;
    let before = ctl.synced.load(Ordering::SeqCst);
    // Nothing of its own for the record to account for: committed is enough. The same for a
    // step an earlier one's undo takes back (create_veth's start is on disk first).
    let recorded = store
        .record_step(job, StepName::DeleteVeth, StepEvent::Started)
        .now_or_never();
    let covered = store
        .record_step(job, StepName::ConfigureNetwork, StepEvent::Started)
        .now_or_never();
    // A step with something to undo still waits (`a_steps_start_is_synced_before_...`).
    let mut undoable = Box::pin(store.record_step(job, StepName::CreateVeth, StepEvent::Started));
    let waited = undoable.as_mut().now_or_never().is_none();
    ctl.open();
    assert!(
        matches!(recorded, Some(Ok(()))),
        "an undo-less step's start waited for a sync: {recorded:?}"
    );
    assert!(
        matches!(covered, Some(Ok(()))),
        "a step create_veth's undo takes back waited for a sync: {covered:?}"
    );
    assert!(
        waited,
        "a step with an undo started before its record was on disk"
    );
    undoable.await.unwrap();
    // Its own sync, and perhaps the one the unsynced starts asked for by themselves.
    assert!(ctl.synced.load(Ordering::SeqCst) > before);
}

#[tokio::test]
async fn an_unsynced_step_start_is_on_disk_soon_without_anything_else_asking() {
    let dir = TempDir::new("sync-soon");
    let (store, ctl, entered) = gated_store(&dir);
    let job = running_job(&store, &ctl).await;
    while entered.try_recv().is_ok() {}
    let last = store.last_event();
    store
        .record_step(job, StepName::DeleteVeth, StepEvent::Started)
        .await
        .unwrap();
    // Nothing else writes: the commit thread's own flush takes the start (and its event) to
    // disk, so an event stream can send it.
    wait_entered(&entered);
    ctl.open();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.last_event() == last {
        assert!(
            std::time::Instant::now() < deadline,
            "the step's start never reached the event readers"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(store.events_after(last, 10).unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_is_not_read_before_its_sync() {
    let dir = TempDir::new("sync-event");
    let (store, ctl, entered) = gated_store(&dir);
    let mut accept = Box::pin(store.enqueue_create(spec(1, 2, 1)));
    assert!(accept.as_mut().now_or_never().is_none());
    wait_entered(&entered);
    // Committed, not on disk: a crash now would take the event and its number. (Read before
    // the gate opens, asserted after: a failed assert must not leave the commit thread stuck.)
    let (readable, last) = (store.events_after(0, 10).unwrap(), store.last_event());
    ctl.open();
    assert_eq!(
        (readable, last),
        (vec![], 0),
        "an event was readable before its sync"
    );
    accept.await.unwrap();
    assert_eq!(store.events_after(0, 10).unwrap().len(), 1);
    assert_eq!(store.last_event(), 1);
}

/// The store's state as the disk has it: the queued count, every job, the newest event.
fn state(store: &JobStore) -> (usize, Vec<uuid::Uuid>, u64) {
    let jobs = store.list(None, usize::MAX).unwrap();
    (
        store.queued_count().unwrap(),
        jobs.iter().map(|j| j.id).collect(),
        store.last_event(),
    )
}

#[tokio::test]
async fn a_failed_sync_refuses_changes_until_a_probe_succeeds_and_counters_follow_the_disk() {
    let dir = TempDir::new("sync-unavailable");
    let (store, ctl, _entered) = gated_store(&dir);
    ctl.open();
    store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    // Two failures: the batch's flush, then the flush right after the reopen.
    ctl.fail.store(2, Ordering::SeqCst);
    let refused = store.enqueue_create(spec(2, 2, 2)).await;
    assert!(
        matches!(refused, Err(QueueError::Unavailable(_))),
        "a create whose sync failed was answered {refused:?}"
    );
    let reason = store.unavailable().expect("the store says it cannot write");
    assert!(reason.contains("injected"), "{reason}");
    // Refused at once while unavailable, without a sync.
    let synced = ctl.synced.load(Ordering::SeqCst);
    assert!(matches!(
        store.enqueue_create(spec(3, 2, 3)).await,
        Err(QueueError::Unavailable(_))
    ));
    assert_eq!(ctl.synced.load(Ordering::SeqCst), synced);
    // Without a restart: the probe reopens and syncs, then changes are accepted again.
    tokio::time::timeout(Duration::from_secs(30), store.writable())
        .await
        .expect("the store never wrote again");
    let accepted = store.enqueue_create(spec(4, 2, 4)).await.unwrap();
    // What the running store counts is what a fresh open of its directory finds.
    let live = state(&store);
    assert!(live.1.contains(&accepted.id));
    // Every job is queued (none ran): the queued counter counts exactly the jobs stored.
    assert_eq!(live.0, live.1.len());
    drop(store);
    let reopened = JobStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(state(&reopened), live);
    // Event numbers are never used twice: one per job change, no gaps.
    let events = reopened.events_after(0, 1000).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=live.2).collect::<Vec<_>>());
}
