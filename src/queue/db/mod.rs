//! The storage layer: the only code that knows sled's trees, their keys and the encoding of
//! records. Above it, the commit thread (`committer.rs`), then the store's operations
//! (`store.rs`, `enqueue.rs`, `write.rs`, `prune.rs`, `listed.rs`) speak [`Trees`] and
//! [`Tx`] only.
//!
//! - [`Trees`]: the database and its trees: opening (`open.rs`), one transaction over all of
//!   them ([`Trees::transact`]), the flush, and the reads outside a transaction;
//! - [`Tx`] (`tx.rs`): inside a transaction, typed reads and the only writes;
//! - `codec.rs`: keys and JSON;
//! - `gates.rs`: the creates held back until their cluster reservation is known.
//!
//! Reads and transactions are synchronous and fast (sled keeps the working set in memory).

mod codec;
mod events;
mod gates;
mod images;
mod keys;
mod open;
mod tx;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
use codec::{container_key, decode, decode_u64, decode_uuid, hex, META_QUEUED};

/// The sled database and its trees, shared by the store and its commit thread.
#[derive(Clone)]
pub(in crate::queue) struct Trees {
    /// The database, for flushes.
    db: sled::Db,
    /// Job ID (16 bytes) → job JSON.
    jobs: Tree,
    /// Sequence number (u64 BE) → job ID, queued jobs an operator asked for, so the first is
    /// the next to run.
    pending: Tree,
    /// The same for reconciliation's repairs, which run only when `pending` is empty.
    repairs: Tree,
    /// Sequence number (u64 BE) → job ID, every job: listing and pruning in enqueue order.
    order: Tree,
    /// Container ID (u32 BE) → container record JSON.
    containers: Tree,
    /// VLAN byte + IPv4 bytes → container ID (u32 BE): who holds an address.
    addrs: Tree,
    /// Counters, the format marker, and the idempotency keys (`idem/<key>` → the job it made
    /// and the digest of the request's fingerprint, removed with the job): every enqueue writes this tree
    /// anyway, so a key costs no tree more in its transaction.
    meta: Tree,
    /// Template name → its images' record (`images.rs`; written by the worker alone, outside
    /// the job transactions).
    images: Tree,
    /// Event number (u64 BE) → event (`events.rs`), written with the change it describes.
    events: Tree,
    /// How far the events go: committed, and on disk.
    clock: Arc<EventClock>,
    /// Bumped after every committed transaction that wrote `containers`: the container list
    /// cached for `GET /api/container/list` is current while this has not moved.
    containers_gen: Arc<AtomicU64>,
    /// A hash of every idempotency key stored since the store opened (and of some never
    /// committed: an aborted transaction's), so a key never seen is known new without a read
    /// in the enqueue's transaction. Never missing one that is stored: loaded from `meta` at
    /// open, added to before each key is written; never removed from (a hash left by a pruned
    /// or aborted key only costs that key's read).
    key_hashes: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// The data directory, for messages.
    dir: PathBuf,
}

/// A job as stored, read in `order`: decode only what is needed.
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
        let trees = (
            &self.jobs,
            &self.pending,
            &self.repairs,
            &self.order,
            &self.containers,
            &self.addrs,
            &self.meta,
            &self.events,
        );
        let out = trees
            .transaction(
                |(jobs, pending, repairs, order, containers, addrs, meta, events)| {
                    // sled may run this again after a conflict: only the try that commits
                    // counts, and it may write fewer events than a try before it.
                    emitted.set(0);
                    f(&Tx {
                        jobs,
                        pending,
                        repairs,
                        order,
                        containers,
                        addrs,
                        meta,
                        events,
                        touched: &touched,
                        emitted: &emitted,
                        key_hashes: &self.key_hashes,
                    })
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => self.storage("write", e),
            });
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
        let mut first = None;
        for tree in [&self.pending, &self.repairs] {
            first = tree
                .first()
                .map_err(|e| self.storage("read the queue", e))?;
            if first.is_some() {
                break;
            }
        }
        let Some((key, value)) = first else {
            return Ok(None);
        };
        let seq = decode_u64("pending", &"first", &key)?;
        let id = decode_uuid("pending", &seq, &value)?;
        match self.job(id)? {
            Some(job) => Ok(Some(job)),
            // A queued job is never pruned, so this is damage, not a race.
            None => Err(codec::corrupt(
                "pending",
                &seq,
                format!("job {id} is missing"),
            )),
        }
    }

    /// Every job in enqueue order (newest first if asked): the one walk over `order`.
    ///
    /// An `order` entry whose job is gone is passed over: a prune deletes both in one
    /// transaction, but this walk is not one, so it can read the entry just before a prune and
    /// the job just after.
    pub(in crate::queue) fn jobs_in_order(
        &self,
        newest_first: bool,
    ) -> impl Iterator<Item = Result<StoredJob, QueueError>> + '_ {
        let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if newest_first {
            Box::new(self.order.iter().rev())
        } else {
            Box::new(self.order.iter())
        };
        iter.filter_map(move |item| self.stored_job(item).transpose())
    }

    fn stored_job(
        &self,
        item: sled::Result<(IVec, IVec)>,
    ) -> Result<Option<StoredJob>, QueueError> {
        let (key, value) = item.map_err(|e| self.storage("read jobs", e))?;
        let seq = decode_u64("order", &"key", &key)?;
        let id = decode_uuid("order", &seq, &value)?;
        let bytes = self
            .jobs
            .get(id.as_bytes())
            .map_err(|e| self.storage("read a job", e))?;
        Ok(bytes.map(|bytes| StoredJob { id, bytes }))
    }

    /// How many jobs are queued.
    pub(in crate::queue) fn queued_count(&self) -> usize {
        match self.meta.get(META_QUEUED) {
            Ok(Some(b)) => decode_u64("meta", &"queued", &b).unwrap_or(0) as usize,
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queued count");
                0
            }
        }
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
