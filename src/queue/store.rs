//! [`JobStore`]: the handle every part of the daemon holds, and its reads. Opening is in
//! `open.rs`, queueing jobs in `enqueue.rs`, the other writes in `write.rs`, pruning in
//! `prune.rs`, the container list in `listed.rs`; all of them go through the storage layer
//! (`db/`) and the commit thread (`committer.rs`), never around them.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::committer::Committer;
use super::current::Current;
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
    /// The open database (replaced after a storage fault) and the store's health.
    pub(super) current: Arc<Current>,
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
        self.trees()?.job(id)
    }

    /// The oldest queued job, if any.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn next_queued(&self) -> Result<Option<Job>, QueueError> {
        self.trees()?.first_pending()
    }

    /// Up to `limit` jobs, newest first, only those in `state` if given.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for stored in self.trees()?.jobs_in_order(true) {
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
        for stored in self.trees()?.jobs_in_order(false) {
            let stored = stored?;
            if stored.head()?.state == JobState::Running {
                out.push(stored.job()?);
            }
        }
        Ok(out)
    }

    /// How many jobs are queued.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] while the database is being reopened (after a storage
    /// fault): no count is better than a wrong one.
    pub fn queued_count(&self) -> Result<usize, QueueError> {
        Ok(self.trees()?.queued_count())
    }

    /// How many jobs are in each state (states with none are absent). Scans every job.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn counts_by_state(&self) -> Result<BTreeMap<JobState, usize>, QueueError> {
        let mut counts = BTreeMap::new();
        for stored in self.trees()?.jobs_in_order(false) {
            *counts.entry(stored?.head()?.state).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The record of container `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub fn container(&self, id: ContainerId) -> Result<Option<ContainerRecord>, QueueError> {
        self.trees()?.record(id)
    }

    /// The IDs of the containers that exist (created and not destroyed: every record not
    /// `creating`), by ID; from the cache when no write touched the records since it was
    /// filled, else read now (a scan of every record: call it off the reactor).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn listed(&self) -> Result<Arc<[ContainerId]>, QueueError> {
        self.inner.listed.get(&self.trees()?)
    }

    /// The cached list if it is current, without reading the trees: cheap enough for the
    /// reactor.
    pub fn cached_listed(&self) -> Option<Arc<[ContainerId]>> {
        let trees = self.trees().ok()?;
        self.inner.listed.at(trees.containers_gen())
    }

    /// Every container record, by ID (a scan: call it off the reactor).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn records(&self) -> Result<Vec<ContainerRecord>, QueueError> {
        self.trees()?.records().collect()
    }

    /// Why the store cannot write now (a full disk, an I/O error), or `None` when it can.
    pub fn unavailable(&self) -> Option<String> {
        self.inner.current.unavailable()
    }

    /// Waits until the store can write (at once when it can).
    pub async fn writable(&self) {
        self.inner.current.writable().await;
    }

    /// The database open now.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] while it is being reopened.
    pub(super) fn trees(&self) -> Result<Trees, QueueError> {
        self.inner.current.opened().map(|o| o.trees)
    }

    /// Runs `f` as one transaction over every tree; sled retries it on a conflict. On disk
    /// with the next flush.
    pub(super) fn transact<A>(&self, f: impl Fn(&Tx<'_>) -> TxResult<A>) -> Result<A, QueueError> {
        self.transact_at(f).map(|(a, _)| a)
    }

    /// [`Self::transact`], returning also the generation of the instance it committed on, for
    /// [`Self::flush_at`].
    ///
    /// # Errors
    /// `f`'s own abort; [`QueueError::Unavailable`] when the store cannot write, or this
    /// write failed (the commit thread is told, and closes sled until a probe succeeds).
    pub(super) fn transact_at<A>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<A>,
    ) -> Result<(A, u64), QueueError> {
        self.write_outside_at(|trees| trees.transact(&f))
    }

    /// Runs `write` on the open instance outside the commit thread (a transaction, or the
    /// images' own write); returns the instance's generation.
    ///
    /// # Errors
    /// `write`'s own error; [`QueueError::Unavailable`] as [`Self::transact_at`].
    pub(super) fn write_outside<A>(
        &self,
        write: impl FnOnce(&Trees) -> Result<A, QueueError>,
    ) -> Result<u64, QueueError> {
        self.write_outside_at(write)
            .map(|(_, generation)| generation)
    }

    fn write_outside_at<A>(
        &self,
        write: impl FnOnce(&Trees) -> Result<A, QueueError>,
    ) -> Result<(A, u64), QueueError> {
        let current = &self.inner.current;
        current.check()?;
        let opened = current.opened()?;
        match write(&opened.trees) {
            Ok(a) => Ok((a, opened.generation)),
            Err(QueueError::Storage(cause)) => {
                let refusal = current.fail(&cause);
                self.inner.committer.failed(cause);
                Err(refusal)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `f` as one transaction, and returns once it is on disk.
    ///
    /// # Errors
    /// `f`'s own abort; [`QueueError::Unavailable`] when the change could not be made durable
    /// (it is not acknowledged; whether it reached the disk anyway is what a retry with the
    /// same idempotency key finds out).
    pub(super) async fn commit<A>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<A>,
    ) -> Result<A, QueueError> {
        let (a, generation) = self.transact_at(f)?;
        self.flush_at(generation).await?;
        Ok(a)
    }

    /// Waits until every change committed on the instance open now is on disk.
    ///
    /// # Errors
    /// As [`Self::flush_at`].
    #[cfg(test)]
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        let generation = self.inner.current.opened()?.generation;
        self.flush_at(generation).await
    }

    /// Waits until every change committed on instance `generation` is on disk.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the flush fails or that instance was replaced: the
    /// change is not kept.
    pub(super) async fn flush_at(&self, generation: u64) -> Result<(), QueueError> {
        self.inner.committer.flush(generation).await
    }
}
