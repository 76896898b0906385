//! [`JobStore`]: the handle every part of the daemon holds, and its reads. Opening is in
//! `open.rs`, queueing jobs in `enqueue.rs`, the other writes in `write.rs`, pruning in
//! `prune.rs`, the container list in `listed.rs`; all of them go through the storage layer
//! (`db/`) and the commit thread (`committer.rs`), never around them.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::committer::Committer;
use super::db::{Trees, Tx, TxResult};
use super::job::{ContainerRecord, Job, JobState};
use super::listed::ListCache;
use super::lock::DirLock;
use super::QueueError;
use crate::model::ContainerId;

/// Limits of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most jobs waiting at once; one more is refused with [`QueueError::QueueFull`].
    pub max_queued: usize,
    /// Most finished jobs kept; pruning drops the oldest beyond this.
    pub keep_finished: usize,
    /// How long a finished job is kept.
    pub keep_for: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_queued: 10_000,
            keep_finished: 10_000,
            keep_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a store shares between its clones. Fields drop in order: the commit thread is joined
/// first, then the trees close the database, then the directory lock is released.
pub(super) struct Inner {
    /// The group committer.
    pub(super) committer: Committer,
    /// The trees.
    pub(super) trees: Trees,
    /// The limits.
    pub(super) opts: StoreOptions,
    /// The container list, cached between writes.
    pub(super) listed: ListCache,
    /// The directory lock, released last.
    pub(super) _lock: DirLock,
}

/// The durable job store. Cheap to clone; the database closes when the last clone is dropped
/// (after a final wait for the commit thread to answer whoever was waiting).
#[derive(Clone)]
pub struct JobStore {
    pub(super) inner: Arc<Inner>,
}

impl JobStore {
    /// How many flushes to disk the store has done; fewer than the writes acknowledged when
    /// concurrent writers shared them.
    pub fn flushes(&self) -> u64 {
        self.inner.committer.flushes()
    }

    /// The job `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub fn get(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        self.inner.trees.job(id)
    }

    /// The oldest queued job, if any.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn next_queued(&self) -> Result<Option<Job>, QueueError> {
        self.inner.trees.first_pending()
    }

    /// Up to `limit` jobs, newest first, only those in `state` if given.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for stored in self.inner.trees.jobs_in_order(true) {
            if out.len() >= limit {
                break;
            }
            let stored = stored?;
            if state.is_none() || state == Some(stored.head()?.state) {
                out.push(stored.job()?);
            }
        }
        Ok(out)
    }

    /// Jobs in state `running`, oldest first: after a crash, the ones to reconcile.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn running(&self) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for stored in self.inner.trees.jobs_in_order(false) {
            let stored = stored?;
            if stored.head()?.state == JobState::Running {
                out.push(stored.job()?);
            }
        }
        Ok(out)
    }

    /// How many jobs are queued.
    pub fn queued_count(&self) -> usize {
        self.inner.trees.queued_count()
    }

    /// How many jobs are in each state (states with none are absent). Scans every job.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn counts_by_state(&self) -> Result<BTreeMap<JobState, usize>, QueueError> {
        let mut counts = BTreeMap::new();
        for stored in self.inner.trees.jobs_in_order(false) {
            *counts.entry(stored?.head()?.state).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The record of container `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub fn container(&self, id: ContainerId) -> Result<Option<ContainerRecord>, QueueError> {
        self.inner.trees.record(id)
    }

    /// The IDs of the containers that exist (created and not destroyed: every record not
    /// `creating`), by ID; from the cache when no write touched the records since it was
    /// filled, else read now (a scan of every record: call it off the reactor).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn listed(&self) -> Result<Arc<[ContainerId]>, QueueError> {
        self.inner.listed.get(&self.inner.trees)
    }

    /// The cached list if it is current, without reading the trees: cheap enough for the
    /// reactor.
    pub fn cached_listed(&self) -> Option<Arc<[ContainerId]>> {
        self.inner.listed.at(self.inner.trees.containers_gen())
    }

    /// Every container record, by ID (a scan: call it off the reactor).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn records(&self) -> Result<Vec<ContainerRecord>, QueueError> {
        self.inner.trees.records().collect()
    }

    /// Runs `f` as one transaction over every tree; sled retries it on a conflict.
    pub(super) fn transact<A>(&self, f: impl Fn(&Tx<'_>) -> TxResult<A>) -> Result<A, QueueError> {
        self.inner.trees.transact(f)
    }

    /// Waits until every committed change is on disk.
    ///
    /// # Errors
    /// [`QueueError::Storage`] when the flush fails: the change is applied but may not survive
    /// a crash.
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        self.inner.committer.flush().await
    }
}
