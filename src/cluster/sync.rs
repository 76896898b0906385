//! Reservations follow the local store, which is the truth about this server's containers.
//!
//! - When a job ends (its event reaches the disk) and its container has no record any more — a
//!   create that failed or was cancelled, a destroy that finished — the container's keys are
//!   given back at once.
//! - A full pass at start and every [`SYNC_EVERY`] first settles the creates a crash left
//!   gated (`gate.rs`), then compares every key this server holds with the records: a key
//!   with no record (a crash between the etcd transaction and the enqueue, a release etcd
//!   could not take) is removed; a record with no key is put back, unless another server
//!   took it meanwhile (reported, never overwritten).
//!
//! A release that fails because etcd is away needs no ledger of its own: the record is
//! already gone from the store, so the next pass finds the key again and removes it. Passes
//! repeat every [`RETRY_EVERY`] until one succeeds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gate::Settled;
use super::{Cluster, ClusterError, Reservation};
use crate::model::ContainerId;
use crate::queue::{ContainerRecord, Event, EventType, JobState, JobStore};
use crate::sys::{KvCond, KvEntry, KvOp};
use crate::worker::QueueControl;

/// Time between full passes while all is well.
pub const SYNC_EVERY: Duration = Duration::from_secs(30);
/// Time between attempts while etcd is away or a pass failed.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// What a full pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Keys removed: held by this server with no local record.
    pub released: usize,
    /// Keys put back: a local record had none.
    pub restored: usize,
    /// Records whose keys another server holds (never overwritten).
    pub conflicts: Vec<String>,
    /// Gated creates settled (`gate.rs`).
    pub settled: Settled,
}

/// Whether `e` is a job reaching a terminal state, after which its container may be gone.
fn ends_a_job(e: &Event) -> bool {
    e.kind == EventType::Job
        && JobState::ALL
            .iter()
            .any(|s| s.is_terminal() && s.as_str() == e.state)
}

impl Cluster {
    /// Keys under `prefix` this server holds, with their reservation.
    async fn held(&self, prefix: &str) -> Result<Vec<(KvEntry, Reservation)>, ClusterError> {
        let listing = self.kv.list(prefix).await?;
        Ok(listing
            .entries
            .into_iter()
            .filter_map(|e| Reservation::from_value(&e.value).map(|r| (e, r)))
            .filter(|(_, r)| r.node == self.me.node)
            .collect())
    }

    /// One full pass against `store`.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when etcd does not answer (the pass stops there; what it
    /// did stays done).
    pub async fn sync_reservations(&self, store: &JobStore) -> Result<SyncReport, ClusterError> {
        // Gates first: a removed job's keys are then released by this same pass.
        let settled = self.settle_gates(store).await?;
        // Order matters: keys first, then the creates in flight, then the records. A key read
        // here and no longer in flight has had its enqueue done, so its record is visible.
        let mut held = self.held(&self.keys.containers()).await?;
        held.extend(self.held(&self.keys.addresses()).await?);
        let in_flight = self.in_flight();
        let store2 = store.clone();
        let records = tokio::task::spawn_blocking(move || store2.records())
            .await
            .map_err(|e| ClusterError::Unavailable(format!("store read panicked: {e}")))?
            .map_err(|e| ClusterError::Unavailable(format!("cannot read the records: {e}")))?;
        let mut report = SyncReport {
            settled,
            ..SyncReport::default()
        };
        let wanted: HashMap<String, &ContainerRecord> = records
            .iter()
            .flat_map(|rec| {
                self.keys
                    .of(&self.reservation(rec.id, rec.vlan, rec.ip))
                    .map(|k| (k, rec))
            })
            .collect();
        for (entry, _) in &held {
            if wanted.contains_key(&entry.key) || in_flight.contains(&entry.key) {
                continue;
            }
            let when = vec![KvCond::Unchanged(entry.key.clone(), entry.mod_revision)];
            if self
                .kv
                .txn(when, vec![KvOp::Delete(entry.key.clone())])
                .await?
            {
                tracing::info!(key = %entry.key, "cluster reservation with no local record released");
                report.released += 1;
            }
        }
        let have: BTreeSet<&str> = held.iter().map(|(e, _)| e.key.as_str()).collect();
        for (key, rec) in &wanted {
            if have.contains(key.as_str()) || self.being_accepted(store, key, rec) {
                continue;
            }
            let value = self.reservation(rec.id, rec.vlan, rec.ip).to_value();
            let put = KvOp::Put {
                key: key.clone(),
                value,
                lease: 0,
            };
            if self
                .kv
                .txn(vec![KvCond::Absent(key.clone())], vec![put])
                .await?
            {
                tracing::info!(%key, container_id = %rec.id, "cluster reservation put back for a local record");
                report.restored += 1;
            } else {
                let holder = self.kv.get(key).await?;
                let by = holder.and_then(|e| Reservation::from_value(&e.value));
                // Made by a create accepted since the keys were read: this server's own.
                if by.as_ref().is_some_and(|r| r.node == self.me.node) {
                    continue;
                }
                let by = by.map_or("something that is not a reservation".into(), |r| {
                    format!("host {}", r.host_id)
                });
                let why = format!("container {}'s {key} is held by {by}", rec.id);
                tracing::error!(container_id = %rec.id, %key, %by, "a local container's reservation is held by another server");
                report.conflicts.push(why);
            }
        }
        Ok(report)
    }

    /// Whether `rec` (whose `key` is missing) belongs to a create being accepted now: its keys
    /// in flight, or its job gated (its reservation is being made, or the next pass settles it).
    fn being_accepted(&self, store: &JobStore, key: &str, rec: &ContainerRecord) -> bool {
        self.is_in_flight(key)
            || rec
                .job_id
                .is_some_and(|job| store.is_gated(job).unwrap_or(true))
    }

    /// Gives back container `id`'s keys if the store has no record of it.
    pub(super) async fn release_if_gone(
        &self,
        store: &JobStore,
        id: ContainerId,
    ) -> Result<bool, ClusterError> {
        let gone = store
            .container(id)
            .map_err(|e| ClusterError::Unavailable(format!("cannot read the record: {e}")))?
            .is_none();
        if !gone || self.is_in_flight(&self.keys.container(id)) {
            return Ok(false);
        }
        let key = self.keys.container(id);
        let Some(entry) = self.kv.get(&key).await? else {
            return Ok(false);
        };
        let Some(r) = Reservation::from_value(&entry.value).filter(|r| r.node == self.me.node)
        else {
            return Ok(false);
        };
        let [ck, ak] = self.keys.of(&r);
        let when = vec![
            KvCond::Unchanged(ck.clone(), entry.mod_revision),
            KvCond::Equals(ak.clone(), entry.value.clone()),
        ];
        let released = self
            .kv
            .txn(
                when,
                vec![KvOp::Delete(ck.clone()), KvOp::Delete(ak.clone())],
            )
            .await?;
        // The address key moved on (or was gone): give back the container's alone.
        let when = vec![KvCond::Unchanged(ck.clone(), entry.mod_revision)];
        let released = released || self.kv.txn(when, vec![KvOp::Delete(ck)]).await?;
        if released {
            tracing::info!(container_id = %id, "cluster reservation released");
        }
        Ok(released)
    }

    /// Follows the store's events and runs full passes until `shutdown`: releases a
    /// container's keys when a job ending leaves it without a record, a full pass every
    /// [`SYNC_EVERY`], and after any failure every [`RETRY_EVERY`] until a pass succeeds.
    pub async fn run_sync(
        self: Arc<Self>,
        store: JobStore,
        control: QueueControl,
        shutdown: CancellationToken,
    ) {
        let mut events = store.watch_events();
        let mut cursor = store.last_event();
        let mut next_full = Instant::now();
        loop {
            if Instant::now() >= next_full {
                next_full = Instant::now() + self.full_pass(&store, &control).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_full) => {}
                r = events.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // Reads the store and decodes each job event: not on the reactor.
                    let reader = store.clone();
                    let read = tokio::task::spawn_blocking(move || ended_jobs(&reader, cursor));
                    let Ok((ids, next)) = read.await else {
                        // The read panicked: the same events are read again next time.
                        tracing::error!("reading the store's events for ended jobs failed");
                        continue;
                    };
                    cursor = next;
                    for id in ids {
                        if let Err(e) = self.release_if_gone(&store, id).await {
                            tracing::warn!(container_id = %id, error = %e, "cannot release a reservation now; the next sync will");
                            next_full = next_full.min(Instant::now() + RETRY_EVERY);
                        }
                    }
                }
            }
        }
    }

    /// Runs a full pass (waking the worker for the gates it opened); returns the time until
    /// the next one.
    async fn full_pass(&self, store: &JobStore, control: &QueueControl) -> Duration {
        match self.sync_reservations(store).await {
            Ok(report) => {
                if report.settled.opened > 0 {
                    control.wake_worker();
                    control.job_changed();
                }
                let settled = report.settled.opened + report.settled.removed;
                if report.released + report.restored + report.conflicts.len() + settled > 0 {
                    tracing::info!(
                        released = report.released,
                        restored = report.restored,
                        conflicts = report.conflicts.len(),
                        gates_opened = report.settled.opened,
                        gates_removed = report.settled.removed,
                        "cluster reservations synced"
                    );
                }
                SYNC_EVERY
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster reservation sync failed; retrying");
                RETRY_EVERY
            }
        }
    }
}

/// The containers of jobs that ended in events after `cursor`, and the new cursor.
fn ended_jobs(store: &JobStore, cursor: u64) -> (BTreeSet<ContainerId>, u64) {
    let mut ids = BTreeSet::new();
    let mut next = cursor;
    loop {
        let Ok(batch) = store.events_after(next, 1024) else {
            return (ids, next);
        };
        let Some(last) = batch.last() else {
            return (ids, next);
        };
        next = last.seq;
        for stored in batch.iter().filter(|s| s.kind == EventType::Job) {
            let Ok(event) = serde_json::from_slice::<Event>(&stored.json) else {
                continue;
            };
            if let (true, Some(id)) = (ends_a_job(&event), event.container_id) {
                ids.insert(id);
            }
        }
    }
}
