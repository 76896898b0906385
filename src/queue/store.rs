//! [`JobStore`]: the trees and the reads. Opening is in `open.rs`, queueing jobs in
//! `enqueue.rs`, the other writes in `write.rs`, pruning in `prune.rs`.
//!
//! Reads and transactions are synchronous and fast (sled keeps the working set in memory);
//! only the wait for a flush is `async`, and that wait happens on the commit thread.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sled::transaction::{TransactionError, Transactional};
use sled::Tree;
use uuid::Uuid;

use super::committer::Committer;
use super::job::{ContainerRecord, Job, JobState};
use super::listed::Listed;
use super::lock::DirLock;
use super::tx::{self, decode, decode_u64, decode_uuid, Tx, TxResult, META_QUEUED};
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

/// The sled trees (see the module doc of [`super`]), shared by the store and its committer
/// thread.
#[derive(Clone)]
pub(super) struct Trees {
    /// Job ID (16 bytes) → job JSON.
    pub(super) jobs: Tree,
    /// Sequence number (u64 BE) → job ID, queued jobs only, so the first is the next to run.
    pub(super) pending: Tree,
    /// Sequence number (u64 BE) → job ID, every job: listing and pruning in enqueue order.
    pub(super) order: Tree,
    /// Container ID (u32 BE) → container record JSON.
    pub(super) containers: Tree,
    /// VLAN byte + IPv4 bytes → container ID (u32 BE): who holds an address.
    pub(super) addrs: Tree,
    /// Counters and the format marker.
    pub(super) meta: Tree,
    /// Bumped after every committed transaction that wrote `containers`: the container list
    /// cached for `GET /api/container/list` is current while this has not moved.
    pub(super) containers_gen: Arc<AtomicU64>,
}

impl Trees {
    /// Runs `f` as one transaction over every tree; sled retries it on a conflict. `dir`
    /// names the store in errors.
    pub(super) fn transact<A>(
        &self,
        dir: &Path,
        f: impl Fn(&Tx<'_>) -> TxResult<A>,
    ) -> Result<A, QueueError> {
        let touched = Cell::new(false);
        let out = (
            &self.jobs,
            &self.pending,
            &self.order,
            &self.containers,
            &self.addrs,
            &self.meta,
        )
            .transaction(|(jobs, pending, order, containers, addrs, meta)| {
                f(&Tx {
                    jobs,
                    pending,
                    order,
                    containers,
                    addrs,
                    meta,
                    touched: &touched,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => storage_error(dir, "write", e),
            });
        // After the commit (or an abort of a try that wrote): a reader that cached the list
        // before this point sees the counter move and reads the trees again.
        if touched.get() {
            self.containers_gen.fetch_add(1, Ordering::Release);
        }
        out
    }
}

/// What a store shares between its clones. Fields drop in order: the commit thread is joined
/// first, then the trees close the database, then the directory lock is released.
pub(super) struct Inner {
    /// The group committer.
    pub(super) committer: Committer,
    /// The trees.
    pub(super) trees: Trees,
    /// The data directory, for messages.
    pub(super) dir: PathBuf,
    /// The limits.
    pub(super) opts: StoreOptions,
    /// The container list, cached between writes (`listed.rs`).
    pub(super) listed: Listed,
    /// The directory lock, released last.
    pub(super) _lock: DirLock,
}

/// The durable job store. Cheap to clone; the database closes when the last clone is dropped
/// (after a final wait for the commit thread to answer whoever was waiting).
#[derive(Clone)]
pub struct JobStore {
    pub(super) inner: Arc<Inner>,
}

/// The few fields needed to count or filter jobs without decoding them whole.
#[derive(Deserialize)]
pub(super) struct JobHead {
    /// The job's state.
    pub(super) state: JobState,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    pub(super) created_at: time::OffsetDateTime,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(super) finished_at: Option<time::OffsetDateTime>,
}

impl JobStore {
    /// The store's limits.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

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
        let bytes = self
            .inner
            .trees
            .jobs
            .get(id.as_bytes())
            .map_err(|e| self.storage("read a job", e))?;
        bytes.map(|b| decode("jobs", &id, &b)).transpose()
    }

    /// The oldest queued job, if any.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn next_queued(&self) -> Result<Option<Job>, QueueError> {
        let first = self
            .inner
            .trees
            .pending
            .first()
            .map_err(|e| self.storage("read the queue", e))?;
        let Some((key, value)) = first else {
            return Ok(None);
        };
        let seq = decode_u64("pending", &"first", &key)?;
        let id = decode_uuid("pending", &seq, &value)?;
        match self.get(id)? {
            Some(job) => Ok(Some(job)),
            None => Err(tx::corrupt("pending", &seq, format!("job {id} is missing"))),
        }
    }

    /// Up to `limit` jobs, newest first, only those in `state` if given.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for item in self.inner.trees.order.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (id, bytes) = self.order_entry(item)?;
            if let Some(want) = state {
                if decode::<JobHead>("jobs", &id, &bytes)?.state != want {
                    continue;
                }
            }
            out.push(decode("jobs", &id, &bytes)?);
        }
        Ok(out)
    }

    /// Jobs in state `running`, oldest first: after a crash, the ones to reconcile.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn running(&self) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for item in self.inner.trees.order.iter() {
            let (id, bytes) = self.order_entry(item)?;
            if decode::<JobHead>("jobs", &id, &bytes)?.state == JobState::Running {
                out.push(decode("jobs", &id, &bytes)?);
            }
        }
        Ok(out)
    }

    /// How many jobs are queued.
    pub fn queued_count(&self) -> usize {
        match self.inner.trees.meta.get(META_QUEUED) {
            Ok(Some(b)) => decode_u64("meta", &"queued", &b).unwrap_or(0) as usize,
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queued count");
                0
            }
        }
    }

    /// How many jobs are in each state (states with none are absent). Scans every job.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn counts_by_state(&self) -> Result<BTreeMap<JobState, usize>, QueueError> {
        let mut counts = BTreeMap::new();
        for item in self.inner.trees.jobs.iter() {
            let (key, bytes) = item.map_err(|e| self.storage("read jobs", e))?;
            let id = decode_uuid("jobs", &"key", &key)?;
            *counts
                .entry(decode::<JobHead>("jobs", &id, &bytes)?.state)
                .or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The record of container `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub fn container(&self, id: ContainerId) -> Result<Option<ContainerRecord>, QueueError> {
        let bytes = self
            .inner
            .trees
            .containers
            .get(tx::container_key(id))
            .map_err(|e| self.storage("read a container", e))?;
        bytes.map(|b| decode("containers", &id, &b)).transpose()
    }

    /// Runs `f` as one transaction over every tree; sled retries it on a conflict.
    pub(super) fn txn<A>(&self, f: impl Fn(&Tx<'_>) -> TxResult<A>) -> Result<A, QueueError> {
        self.inner.trees.transact(&self.inner.dir, f)
    }

    /// Waits until every committed change is on disk.
    ///
    /// # Errors
    /// [`QueueError::Storage`] when the flush fails: the change is applied but may not survive
    /// a crash.
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        self.inner.committer.flush().await
    }

    /// A sled error while doing `what`, naming the directory.
    pub(super) fn storage(&self, what: &str, e: sled::Error) -> QueueError {
        storage_error(&self.inner.dir, what, e)
    }

    /// The job an `order` entry points to, with its bytes.
    fn order_entry(
        &self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Result<(Uuid, sled::IVec), QueueError> {
        let (key, value) = item.map_err(|e| self.storage("read jobs", e))?;
        let seq = decode_u64("order", &"key", &key)?;
        let id = decode_uuid("order", &seq, &value)?;
        let bytes = self
            .inner
            .trees
            .jobs
            .get(id.as_bytes())
            .map_err(|e| self.storage("read a job", e))?;
        match bytes {
            Some(b) => Ok((id, b)),
            None => Err(tx::corrupt("order", &seq, format!("job {id} is missing"))),
        }
    }
}

/// A sled error while doing `what` in the store in `dir`.
fn storage_error(dir: &Path, what: &str, e: sled::Error) -> QueueError {
    QueueError::Storage(format!(
        "job store in {}: cannot {what}: {e}",
        dir.display()
    ))
}

/// A key as hex, for error messages.
pub(super) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
