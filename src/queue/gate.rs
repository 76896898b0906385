//! Creates held back until their cluster reservation is known (`enqueue_create_gated`).
//!
//! In cluster mode a create's etcd transaction and its local enqueue run at once, so the two
//! durable commits overlap instead of adding up. The local job is *gated* meanwhile: stored,
//! holding its ID and address in the ledger, but not in the worker's queue and with no event.
//! Then one of two things happens:
//!
//! - the reservation is made: [`JobStore::open_gate`] queues the job with its first event. This
//!   need not be on disk before the `202`: after a crash the gate is still there, and the
//!   reservation in etcd, this server's, says to open it (`cluster/gate.rs`);
//! - it is refused (another server holds the ID or address, or etcd did not answer):
//!   [`JobStore::refuse_gate`] removes the job, its record and its idempotency key, as if it
//!   had never been queued, and returns once that is on disk — the client is told "refused",
//!   so no restart may open it.

use uuid::Uuid;

use super::db::Tx;
use super::event::Event;
use super::job::{Job, JobState};
use super::store::JobStore;
use super::QueueError;

impl JobStore {
    /// Queues gated job `id` for the worker, with its first event; `None` when it has no gate
    /// (opened or refused before). Committed at once, on disk with the next flush (asked for
    /// now, not waited for).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot write; [`QueueError::Storage`].
    pub fn open_gate(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let (job, generation) = self.transact_at(|tx| open(tx, id))?;
        if job.is_some() {
            self.flush_soon(generation);
        }
        Ok(job)
    }

    /// Removes gated job `id`, its container record (and so its address) and its idempotency
    /// key; returns once that is on disk, whether it had a gate.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot write or the flush fails;
    /// [`QueueError::Storage`].
    pub async fn refuse_gate(&self, id: Uuid) -> Result<bool, QueueError> {
        let (refused, generation) = self.transact_at(|tx| refuse(tx, id))?;
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

/// Opens job `id`'s gate inside a transaction.
fn open(tx: &Tx<'_>, id: Uuid) -> super::db::TxResult<Option<Job>> {
    if !tx.clear_gate(id)? {
        return Ok(None);
    }
    let Some(mut job) = tx.find_job(id)? else {
        return Ok(None);
    };
    // A gated job cannot be cancelled (`JobStore::cancel`): it is queued.
    if job.state != JobState::Queued {
        return Ok(None);
    }
    job.first_event = Some(tx.emit(Event::job_state(&job))?);
    tx.put_job(&job)?;
    tx.push_pending(&job)?;
    Ok(Some(job))
}

/// Removes gated job `id` and what it holds inside a transaction.
fn refuse(tx: &Tx<'_>, id: Uuid) -> super::db::TxResult<bool> {
    if !tx.clear_gate(id)? {
        return Ok(false);
    }
    let Some(job) = tx.find_job(id)? else {
        return Ok(true);
    };
    if let Some(cid) = job.container_id {
        if let Some(rec) = tx.record(cid)?.filter(|r| r.job_id == Some(id)) {
            tx.remove_record(&rec)?;
        }
    }
    tx.remove_job(&job)?;
    Ok(true)
}
