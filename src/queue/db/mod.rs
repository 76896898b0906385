//! The storage layer: the only code that knows sled's trees, their keys and the encoding of
//! records. Above it, the commit thread (`committer.rs`), then the store's operations
//! (`store.rs`, `enqueue.rs`, `write.rs`, `prune.rs`, `listed.rs`) speak [`Trees`] and
//! [`Tx`] only.
//!
//! - [`Trees`]: the database and its trees: opening (`open.rs`), one transaction over all of
//!   them ([`Trees::transact`]), the flush, and the reads outside a transaction;
//! - [`Tx`] (`tx.rs`): inside a transaction, typed reads and the only writes;
//! - `index.rs`: what is derived from the stored jobs and records (the enqueue order, the
//!   queues, the address holders, the idempotency keys), kept in memory and changed with them;
//! - `codec.rs`: keys and JSON;
//! - `gates.rs`: the creates held back until their cluster reservation is known.
//!
//! Reads and transactions are synchronous and fast (sled keeps the working set in memory).

mod codec;
mod events;
mod gates;
mod images;
mod index;
mod open;
mod tx;

use std::cell::{Cell, RefCell};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sled::transaction::{TransactionError, Transactional};
use sled::{IVec, Tree};
use uuid::Uuid;

pub(in crate::queue) use codec::{abort, TxResult};
pub(in crate::queue) use events::EventClock;
pub(in crate::queue) use open::Carried;
pub(in crate::queue) use tx::Tx;

use super::job::{ContainerRecord, Job, JobState};
use super::QueueError;
use crate::model::ContainerId;
use codec::{container_key, decode, hex};
use index::{Index, Staged, View};

/// How many places in the enqueue order a walk over the jobs takes at a time.
const ORDER_CHUNK: usize = 64;

/// The sled database and its trees, shared by the store and its commit thread.
#[derive(Clone)]
pub(in crate::queue) struct Trees {
    /// The database, for flushes.
    db: sled::Db,
    /// Job ID (16 bytes) → job JSON.
    jobs: Tree,
    /// Container ID (u32 BE) → container record JSON.
    containers: Tree,
    /// Counters, the format marker, the image builds pending and the gates.
    meta: Tree,
    /// Template name → its images' record (`images.rs`; written by the worker alone, outside
    /// the job transactions).
    images: Tree,
    /// Event number (u64 BE) → event (`events.rs`), written with the change it describes.
    events: Tree,
    /// Every job in enqueue order, the queues the worker takes from (an operator's jobs, then
    /// the repairs), who holds each address, which job each idempotency key made: derived from
    /// `jobs`, `containers` and the gates at open, then changed by each transaction as it
    /// commits (`index.rs`). Locked for the whole of a transaction.
    index: Arc<Mutex<Index>>,
    /// How many jobs the index's queues hold, set with each change: read without waiting for
    /// a transaction to end (`GET /api/queue` reads it on the reactor).
    queued: Arc<AtomicUsize>,
    /// How far the events go: committed, and on disk.
    clock: Arc<EventClock>,
    /// Bumped after every committed transaction that wrote `containers`: the container list
    /// cached for `GET /api/container/list` is current while this has not moved.
    containers_gen: Arc<AtomicU64>,
    /// The data directory, for messages.
    dir: PathBuf,
}

/// A job as stored, read in enqueue order: decode only what is needed.
pub(in crate::queue) struct StoredJob {
    /// Its ID.
    pub(in crate::queue) id: Uuid,
    bytes: IVec,
}

/// The few fields needed to count, filter or prune jobs without decoding them whole.
#[derive(Deserialize)]
pub(in crate::queue) struct JobHead {
    /// The job's state.
    pub(in crate::queue) state: JobState,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    pub(in crate::queue) created_at: time::OffsetDateTime,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(in crate::queue) finished_at: Option<time::OffsetDateTime>,
}

impl StoredJob {
    /// Its state and times.
    ///
    /// # Errors
    /// [`QueueError::Corrupt`] when the record does not decode.
    pub(in crate::queue) fn head(&self) -> Result<JobHead, QueueError> {
        decode("jobs", &self.id, &self.bytes)
    }

    /// The whole job.
    ///
    /// # Errors
    /// [`QueueError::Corrupt`] when the record does not decode.
    pub(in crate::queue) fn job(&self) -> Result<Job, QueueError> {
        decode("jobs", &self.id, &self.bytes)
    }
}

impl Trees {
    /// The data directory.
    pub(in crate::queue) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` as one transaction over every tree; sled retries it on a conflict.
    ///
    /// # Errors
    /// `f`'s own abort, or [`QueueError::Storage`].
    pub(in crate::queue) fn transact<A>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<A>,
    ) -> Result<A, QueueError> {
        let touched = Cell::new(false);
        let emitted = Cell::new(0);
        let staged = RefCell::new(Staged::default());
        // Held until the index has this transaction's changes: no other transaction reads it
        // in between (sled commits one transaction at a time anyway).
        let mut index = self.lock_index();
        let trees = (&self.jobs, &self.containers, &self.meta, &self.events);
        let out = trees
            .transaction(|(jobs, containers, meta, events)| {
                // sled may run this again after a conflict: only the try that commits counts,
                // and it may write fewer events, or other index changes, than a try before it.
                emitted.set(0);
                *staged.borrow_mut() = Staged::default();
                f(&Tx {
                    jobs,
                    containers,
                    meta,
                    events,
                    index: View {
                        index: &index,
                        staged: &staged,
                    },
                    touched: &touched,
                    emitted: &emitted,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => self.storage("write", e),
            });
        if out.is_ok() {
            index.apply(staged.into_inner());
            self.queued.store(index.queued(), Ordering::Release);
        }
        drop(index);
        // After the commit (or an abort of a try that wrote): a reader that cached the list
        // before this point sees the counter move and reads the trees again.
        if touched.get() {
            self.containers_gen.fetch_add(1, Ordering::Release);
        }
        // Only a commit counts: an aborted transaction's events were never written.
        if out.is_ok() && emitted.get() > 0 {
            self.clock.saw_commit(emitted.get());
        }
        out
    }

    /// sled's flush: its log written and `sync_file_range`d (the caller then syncs the file).
    ///
    /// # Errors
    /// sled's error, as text.
    pub(in crate::queue) fn flush(&self) -> Result<(), String> {
        self.db.flush().map(drop).map_err(|e| e.to_string())
    }

    /// The value of the counter every write of container records bumps.
    pub(in crate::queue) fn containers_gen(&self) -> u64 {
        self.containers_gen.load(Ordering::Acquire)
    }

    /// The job `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub(in crate::queue) fn job(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let bytes = self
            .jobs
            .get(id.as_bytes())
            .map_err(|e| self.storage("read a job", e))?;
        bytes.map(|b| decode("jobs", &id, &b)).transpose()
    }

    /// The next job to run: the oldest an operator asked for, else the oldest repair.
    ///
    /// # Errors
    /// When sled fails, a record does not decode, or the queue names a missing job.
    pub(in crate::queue) fn first_pending(&self) -> Result<Option<Job>, QueueError> {
        let Some((seq, id)) = self.lock_index().first_queued() else {
            return Ok(None);
        };
        match self.job(id)? {
            Some(job) => Ok(Some(job)),
            // A queued job is never pruned, so this is damage, not a race.
            None => Err(codec::corrupt(
                "queue",
                &seq,
                format!("job {id} is missing"),
            )),
        }
    }

    /// Every job in enqueue order (newest first if asked), read a few at a time.
    ///
    /// A job pruned since the walk read its place is passed over: the walk is not one
    /// transaction.
    pub(in crate::queue) fn jobs_in_order(
        &self,
        newest_first: bool,
    ) -> impl Iterator<Item = Result<StoredJob, QueueError>> + '_ {
        let mut from = Bound::Unbounded;
        let mut batch = std::collections::VecDeque::new();
        std::iter::from_fn(move || loop {
            if batch.is_empty() {
                let next = self
                    .lock_index()
                    .jobs_after(from, newest_first, ORDER_CHUNK);
                let (seq, _) = next.last()?;
                from = Bound::Excluded(*seq);
                batch.extend(next);
            }
            let (_, id) = batch.pop_front()?;
            match self.stored_job(id) {
                Ok(Some(job)) => return Some(Ok(job)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        })
    }

    fn stored_job(&self, id: Uuid) -> Result<Option<StoredJob>, QueueError> {
        let bytes = self
            .jobs
            .get(id.as_bytes())
            .map_err(|e| self.storage("read a job", e))?;
        Ok(bytes.map(|bytes| StoredJob { id, bytes }))
    }

    /// How many jobs are queued for the worker.
    pub(in crate::queue) fn queued_count(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        // Its changes are applied whole or not at all: a panic elsewhere leaves it consistent.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of container `id`, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub(in crate::queue) fn record(
        &self,
        id: ContainerId,
    ) -> Result<Option<ContainerRecord>, QueueError> {
        let bytes = self
            .containers
            .get(container_key(id))
            .map_err(|e| self.storage("read a container", e))?;
        bytes.map(|b| decode("containers", &id, &b)).transpose()
    }

    /// Every container record, by ID, decoded as `T` (the whole record or the fields needed).
    pub(in crate::queue) fn records<T: DeserializeOwned>(
        &self,
    ) -> impl Iterator<Item = Result<T, QueueError>> + '_ {
        self.containers.iter().map(move |item| {
            let (key, bytes) = item.map_err(|e| self.storage("read containers", e))?;
            decode("containers", &hex(&key), &bytes)
        })
    }

    /// A sled error while doing `what`, naming the directory.
    pub(in crate::queue) fn storage(&self, what: &str, e: sled::Error) -> QueueError {
        QueueError::Storage(format!(
            "job store in {}: cannot {what}: {e}",
            self.dir.display()
        ))
    }
}
