//! The worker's changes to a job (start, step records, finish, requeue) and cancelling one.
//! Each is one transaction over the trees (a job and the reservations it holds change
//! together), then a wait for the group commit: a change is answered only once it is on disk.
//! Queueing a job is in `enqueue.rs`.

use time::OffsetDateTime;
use uuid::Uuid;

use super::db::{abort, Tx, TxResult};
use super::event::Event;
use super::job::{ContainerRecordState, Job, JobKind, JobRequest, JobState};
use super::store::JobStore;
use super::{Conflict, QueueError};
use crate::model::ContainerId;
use crate::spec::{StepEvent, StepName};

impl JobStore {
    /// Marks job `id` running and takes it out of the queue; counts an attempt.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::BadTransition`] unless it is queued;
    /// [`QueueError::Storage`].
    pub async fn start(&self, id: Uuid) -> Result<Job, QueueError> {
        let job = self
            .commit(|tx| {
                let mut job = tx.job(id)?;
                advance(&mut job, JobState::Running)?;
                tx.remove_pending(&job)?;
                job.started_at = Some(OffsetDateTime::now_utc());
                job.attempts += 1;
                put_moved(tx, &job)?;
                Ok(job)
            })
            .await?;
        Ok(job)
    }

    /// Records `event` for `step` of running job `id`, and returns once it is on disk when
    /// [`StepEvent::must_be_durable_at_once`] says so; otherwise once committed, and the next
    /// flushed write takes it to disk (for a step's start, a flush asked for at once that
    /// nobody waits for).
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::Conflict`] when the job is not running;
    /// [`QueueError::Storage`].
    pub async fn record_step(
        &self,
        id: Uuid,
        step: StepName,
        event: StepEvent<'_>,
    ) -> Result<(), QueueError> {
        let ((), generation) = self.transact_at(|tx| {
            let mut job = tx.job(id)?;
            if job.state != JobState::Running {
                return abort(
                    Conflict::NotRunning {
                        job: id,
                        state: job.state,
                        step,
                    }
                    .into(),
                );
            }
            job.apply_step_event(step, event);
            tx.put_job(&job)?;
            tx.emit(Event::step(&job, step, event))?;
            Ok(())
        })?;
        if event.must_be_durable_at_once(step) {
            self.flush_at(generation).await?;
        } else if event == StepEvent::Started {
            // Not waited for, but on disk within milliseconds: until then the event streams
            // cannot send it (a stop's grace period would hide its start).
            self.inner.committer.flush_soon();
        }
        Ok(())
    }

    /// Ends running job `id` with `result`, and settles its reservation in the same
    /// transaction: a created container becomes `active`, a destroyed one is released; a failed
    /// create releases its reservation, a failed destroy gives the container back as `active`.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::BadTransition`] unless it is running;
    /// [`QueueError::Storage`].
    pub async fn finish(&self, id: Uuid, result: Result<(), String>) -> Result<Job, QueueError> {
        let ending = match result {
            Ok(()) => Ending::Succeeded,
            Err(e) => Ending::Failed(e),
        };
        self.end(id, ending).await
    }

    /// Ends running job `id` as failed with `error`, when its rollback could not undo
    /// everything: the container keeps its reservations as `leftover` (its ID and address are
    /// not handed out while something of it is on the host) until a destroy cleans it up.
    ///
    /// # Errors
    /// As [`Self::finish`].
    pub async fn fail_leaving_host(&self, id: Uuid, error: String) -> Result<Job, QueueError> {
        self.end(id, Ending::FailedLeavingHost(error)).await
    }

    async fn end(&self, id: Uuid, ending: Ending) -> Result<Job, QueueError> {
        let job = self
            .commit(|tx| {
                let mut job = tx.job(id)?;
                let (next, error) = match &ending {
                    Ending::Succeeded => (JobState::Succeeded, None),
                    Ending::Failed(e) | Ending::FailedLeavingHost(e) => {
                        (JobState::Failed, Some(e.clone()))
                    }
                };
                advance(&mut job, next)?;
                job.error = error;
                job.finished_at = Some(OffsetDateTime::now_utc());
                settle(tx, &job, &ending)?;
                put_moved(tx, &job)?;
                Ok(job)
            })
            .await?;
        tracing::info!(job_id = %id, container_id = job.container_id.map(tracing::field::display), state = %job.state, "job finished");
        Ok(job)
    }

    /// Queues running job `id` again after an interruption (crash or shutdown), at its
    /// original place so it runs before anything queued after it. Steps go back to pending,
    /// the error is cleared, `attempts` is kept; the reservation stays held.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::BadTransition`] unless it is running;
    /// [`QueueError::Storage`].
    pub async fn requeue_interrupted(&self, id: Uuid) -> Result<Job, QueueError> {
        let job = self
            .commit(|tx| {
                let mut job = tx.job(id)?;
                advance(&mut job, JobState::Queued)?;
                job.reset_for_retry();
                tx.push_pending(&job)?;
                put_moved(tx, &job)?;
                Ok(job)
            })
            .await?;
        tracing::info!(job_id = %id, container_id = job.container_id.map(tracing::field::display), "job queued again");
        Ok(job)
    }

    /// Marks container `id` `missing` (reconciliation found its rootfs gone) unless a job holds
    /// it or it is not in service; returns whether it did. Its ID and address stay reserved.
    ///
    /// # Errors
    /// [`QueueError::Storage`].
    pub async fn mark_missing(&self, id: ContainerId) -> Result<bool, QueueError> {
        let (marked, generation) = self.transact_at(|tx| {
            let Some(mut rec) = tx.record(id)? else {
                return Ok(false);
            };
            if rec.job_id.is_some() || rec.state != ContainerRecordState::Active {
                return Ok(false);
            }
            rec.state = ContainerRecordState::Missing;
            tx.put_record(&rec)?;
            tx.emit(Event::container(&rec, None))?;
            Ok(true)
        })?;
        if marked {
            self.flush_at(generation).await?;
        }
        Ok(marked)
    }

    /// Cancels queued job `id`, releasing its reservation as a failure would.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::NotCancellable`] unless it is queued;
    /// [`QueueError::Storage`].
    pub async fn cancel(&self, id: Uuid) -> Result<Job, QueueError> {
        let job = self
            .commit(|tx| {
                let mut job = tx.job(id)?;
                if job.state != JobState::Queued {
                    return abort(QueueError::NotCancellable { state: job.state });
                }
                if tx.is_gated(id)? {
                    return abort(Conflict::BeingAccepted(id).into());
                }
                advance(&mut job, JobState::Cancelled)?;
                tx.remove_pending(&job)?;
                job.finished_at = Some(OffsetDateTime::now_utc());
                settle(tx, &job, &Ending::Failed(String::new()))?;
                put_moved(tx, &job)?;
                Ok(job)
            })
            .await?;
        tracing::info!(job_id = %id, container_id = job.container_id.map(tracing::field::display), "job cancelled");
        Ok(job)
    }
}

/// Stores `job`, which has just moved to another state, with the event that says so.
fn put_moved(tx: &Tx<'_>, job: &Job) -> TxResult<()> {
    tx.put_job(job)?;
    tx.emit(Event::job_state(job))?;
    Ok(())
}

/// Moves `job` to `next`, or leaves the transaction with [`QueueError::BadTransition`].
fn advance(job: &mut Job, next: JobState) -> TxResult<()> {
    job.transition(next).or_else(abort)
}

/// How a job ends, for its reservation.
enum Ending {
    Succeeded,
    /// Failed, and the host is as before the job.
    Failed(String),
    /// Failed, and the rollback left something on the host.
    FailedLeavingHost(String),
}

/// Settles the reservation `job` held, once it is over. The container is kept (as `active`)
/// after a successful create or a failed destroy, kept as `leftover` after a create whose
/// rollback left something behind, released otherwise. A record the job does not hold is left
/// alone: the ledger never loses another job's reservation.
fn settle(tx: &Tx<'_>, job: &Job, ending: &Ending) -> TxResult<()> {
    let Some(id) = job.container_id else {
        // An image build holds no container: only its template's build slot.
        if let JobRequest::BuildImage { template } = &job.request {
            tx.set_image_build(template, None)?;
        }
        return Ok(());
    };
    let Some(mut rec) = tx.record(id)? else {
        tracing::warn!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), "job ended without a container record");
        return Ok(());
    };
    if rec.job_id != Some(job.id) {
        tracing::warn!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), holder = ?rec.job_id, "container record is not held by this job");
        return Ok(());
    }
    let kept_as = match (job.kind, ending) {
        (JobKind::Create, Ending::Succeeded) => Some(ContainerRecordState::Active),
        (JobKind::Create, Ending::FailedLeavingHost(_)) => Some(ContainerRecordState::Leftover),
        (JobKind::Create, Ending::Failed(_)) => None,
        (JobKind::Destroy, Ending::Succeeded) => None,
        (JobKind::Destroy, _) => Some(match &job.request {
            JobRequest::Destroy {
                from: Some(was), ..
            } => *was,
            _ => ContainerRecordState::Active,
        }),
        // A start, stop, restart or repair leaves the container in service either way.
        (_, _) => Some(rec.state),
    };
    let Some(state) = kept_as else {
        return tx.remove_record(&rec);
    };
    let before = (rec.state, rec.desired);
    rec.state = state;
    rec.job_id = None;
    if let (Ending::Succeeded, Some(desired)) = (ending, job.kind.desired_after()) {
        rec.desired = desired;
    }
    tx.put_record(&rec)?;
    // A create's own success needs no event of its own (the job's says it); a container kept
    // as leftover, or whose desired state a start or stop changed, does.
    let creating =
        before.0 == ContainerRecordState::Creating && state == ContainerRecordState::Active;
    if before != (rec.state, rec.desired) && !creating {
        tx.emit(Event::container(&rec, Some(job)))?;
    }
    Ok(())
}
