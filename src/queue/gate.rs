//! Creates held back until their cluster reservation is known (`enqueue_create_gated`).
//!
//! In cluster mode a create's etcd transaction and its local enqueue run at once, so the two
//! durable commits overlap instead of adding up. The local job is *gated* meanwhile: stored
//! with its `queued` event, holding its ID and address in the ledger, but not in the worker's
//! queue.
//! Then one of two things happens:
//!
//! - the reservation is made: [`JobStore::open_gate`] puts the job in the worker's queue, in
//!   the commit thread's next batch, without a disk sync of its own. This need not happen,
//!   let alone be on disk, before the `202`: after a crash the gate is still there, and the
//!   reservation in etcd, this server's, says to open it (`cluster/gate.rs`);
//! - it is refused (another server holds the ID or address, or etcd did not answer):
//!   [`JobStore::refuse_gate`] removes the job, its record and its idempotency key (the event
//!   stream gets the job's `cancelled` with the reason), and returns once that is on disk —
//!   the client is told "refused", so no restart may open it.

use uuid::Uuid;

use super::db::Tx;
use super::enqueue::Enqueued;
use super::event::Event;
use super::job::{Job, JobState};
use super::store::JobStore;
use super::QueueError;

impl JobStore {
    /// Puts gated job `job` in the worker's queue; returns it, or `None`
    /// when it has no gate (opened or refused before). The opening rides in the commit
    /// thread's next batch, beside the creates queued at that moment (no transaction of its own
    /// waiting for sled's lock), and returns once committed: it reaches the disk with the next
    /// flush, which it does not cause (a lazy write: at most a few milliseconds later).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot write; [`QueueError::Storage`].
    pub async fn open_gate(&self, job: &Job) -> Result<Option<Job>, QueueError> {
        let job = job.clone();
        let done = self
            .write_lazy(Box::new(move |tx| {
                Ok(Ok(match open(tx, &job)? {
                    Some(job) => Enqueued {
                        job,
                        replayed: false,
                    },
                    // Nothing written: the job as it was made before.
                    None => Enqueued {
                        job: job.clone(),
                        replayed: true,
                    },
                }))
            }))
            .await?;
        Ok((!done.replayed).then_some(done.job))
    }

    /// Removes gated job `id`, its container record (and so its address) and its idempotency
    /// key, with a `cancelled` event saying `why`; returns once that is on disk, whether it
    /// had a gate.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot write or the flush fails;
    /// [`QueueError::Storage`].
    pub async fn refuse_gate(&self, id: Uuid, why: &str) -> Result<bool, QueueError> {
        let why = why.to_string();
        // Off the reactor: a transaction waits for sled's lock while the commit thread runs a
        // batch.
        let store = self.clone();
        let (refused, generation) =
            blocking(move || store.transact_at(|tx| refuse(tx, id, &why))).await?;
        if refused {
            self.flush_at(generation).await?;
            tracing::info!(job_id = %id, "gated create removed: its reservation was refused");
        }
        Ok(refused)
    }

    /// Whether job `id` is gated.
    ///
    /// # Errors
    /// When sled fails.
    pub fn is_gated(&self, id: Uuid) -> Result<bool, QueueError> {
        self.trees()?.is_gated(id)
    }

    /// Every gated job (after a crash: the creates whose reservation was not settled).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn gated(&self) -> Result<Vec<Job>, QueueError> {
        let trees = self.trees()?;
        let mut jobs = Vec::new();
        for id in trees.gated()? {
            match trees.job(id)? {
                Some(job) => jobs.push(job),
                // A gate is removed with its job; one alone is cleared when it is opened.
                None => tracing::warn!(job_id = %id, "a gate names no job"),
            }
        }
        Ok(jobs)
    }
}

/// Runs transaction `f` on the blocking pool.
async fn blocking<A: Send + 'static>(
    f: impl FnOnce() -> Result<A, QueueError> + Send + 'static,
) -> Result<A, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::Storage(format!("a gate's transaction panicked: {e}")))?
}

/// Opens `job`'s gate inside a transaction: two small index writes (the job and its event
/// were stored when it was queued). Only its gate's holder changes a gated job (the worker
/// does not see it, a cancel is refused), so `job` as it was queued is as it is stored.
fn open(tx: &Tx<'_>, job: &Job) -> super::db::TxResult<Option<Job>> {
    if !tx.clear_gate(job.id)? || job.state != JobState::Queued {
        return Ok(None);
    }
    tx.push_pending(job)?;
    Ok(Some(job.clone()))
}

/// Removes gated job `id` and what it holds inside a transaction.
fn refuse(tx: &Tx<'_>, id: Uuid, why: &str) -> super::db::TxResult<bool> {
    if !tx.clear_gate(id)? {
        return Ok(false);
    }
    let Some(job) = tx.find_job(id)? else {
        return Ok(true);
    };
    // Its `queued` event was read: the stream is told how it ended before it goes.
    let mut ended = job.clone();
    ended.state = JobState::Cancelled;
    ended.error = Some(format!("not accepted: {why}"));
    tx.emit(Event::job_state(&ended))?;
    if let Some(cid) = job.container_id {
        if let Some(rec) = tx.record(cid)?.filter(|r| r.job_id == Some(id)) {
            tx.remove_record(&rec)?;
        }
    }
    tx.remove_job(&job)?;
    Ok(true)
}
