//! The store's changes. Each is one transaction over the trees (a job and the reservations it
//! holds change together), then a wait for the group commit: a change is answered only once it
//! is on disk. Creates go whole to the commit thread, which commits many in one transaction.

use std::path::Path;

use time::OffsetDateTime;
use uuid::Uuid;

use super::job::{ContainerRecord, ContainerRecordState, Job, JobKind, JobRequest, JobState};
use super::store::{JobStore, Trees};
use super::tx::{abort, Tx, TxResult};
use super::QueueError;
use crate::model::ContainerId;
use crate::steps::{CreateSpec, StepEvent};

impl JobStore {
    /// Queues a create of `spec`, reserving its container ID and `(vlan, address)`.
    /// Returns once the job is on disk. Concurrent creates are committed together, in one
    /// transaction and one disk sync (see `committer.rs`).
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the ID has a record or the address is held on that VLAN;
    /// [`QueueError::QueueFull`]; [`QueueError::Storage`] when sled or the flush fails.
    pub async fn enqueue_create(&self, spec: CreateSpec) -> Result<Job, QueueError> {
        let job = self.inner.committer.create(spec).await?;
        tracing::info!(job_id = %job.id, container_id = %job.container_id, "create queued");
        Ok(job)
    }

    /// Queues a destroy of container `id`, marking it `destroying`. Returns once the job is on
    /// disk.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when there is no such container; [`QueueError::Conflict`]
    /// when a job holds it; [`QueueError::QueueFull`]; [`QueueError::Storage`].
    pub async fn enqueue_destroy(&self, id: ContainerId) -> Result<Job, QueueError> {
        let job = self.txn(|tx| {
            let Some(mut rec) = tx.record(id)? else {
                return abort(QueueError::NotFound(format!(
                    "container {id} does not exist"
                )));
            };
            if let Some(job) = rec.job_id {
                let doing = match rec.state {
                    ContainerRecordState::Creating => "being created",
                    ContainerRecordState::Destroying => "being destroyed already",
                    ContainerRecordState::Active => "held",
                };
                return abort(QueueError::Conflict(format!(
                    "container {id} is {doing} (job {job})"
                )));
            }
            let now = OffsetDateTime::now_utc();
            let job = self.new_job(tx, JobRequest::Destroy { id }, now)?;
            rec.state = ContainerRecordState::Destroying;
            rec.job_id = Some(job.id);
            tx.put_record(&rec)?;
            Ok(job)
        })?;
        self.flush().await?;
        tracing::info!(job_id = %job.id, container_id = %job.container_id, "destroy queued");
        Ok(job)
    }

    /// Adds a queued job for `request`, if the queue has room.
    fn new_job(&self, tx: &Tx<'_>, request: JobRequest, now: OffsetDateTime) -> TxResult<Job> {
        new_job(tx, self.inner.opts.max_queued, request, now)?.or_else(abort)
    }

    /// Marks job `id` running and takes it out of the queue; counts an attempt.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::BadTransition`] unless it is queued;
    /// [`QueueError::Storage`].
    pub async fn start(&self, id: Uuid) -> Result<Job, QueueError> {
        let job = self.txn(|tx| {
            let mut job = tx.job(id)?;
            advance(&mut job, JobState::Running)?;
            tx.remove_pending(&job)?;
            job.started_at = Some(OffsetDateTime::now_utc());
            job.attempts += 1;
            tx.put_job(&job)?;
            Ok(job)
        })?;
        self.flush().await?;
        Ok(job)
    }

    /// Records `event` for `step` of running job `id`, and returns once it is on disk when
    /// [`StepEvent::must_be_durable_at_once`] says so; otherwise once committed, and the next
    /// flushed write takes it to disk.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::Conflict`] when the job is not running;
    /// [`QueueError::Storage`].
    pub async fn record_step(
        &self,
        id: Uuid,
        step: &str,
        event: StepEvent<'_>,
    ) -> Result<(), QueueError> {
        self.txn(|tx| {
            let mut job = tx.job(id)?;
            if job.state != JobState::Running {
                return abort(QueueError::Conflict(format!(
                    "job {id} is {}, not running; step {step} was not recorded",
                    job.state
                )));
            }
            job.apply_step_event(step, event);
            tx.put_job(&job)
        })?;
        if event.must_be_durable_at_once() {
            self.flush().await?;
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
        let job = self.txn(|tx| {
            let mut job = tx.job(id)?;
            let next = match result {
                Ok(()) => JobState::Succeeded,
                Err(_) => JobState::Failed,
            };
            advance(&mut job, next)?;
            job.error = result.clone().err();
            job.finished_at = Some(OffsetDateTime::now_utc());
            settle(tx, &job, result.is_ok())?;
            tx.put_job(&job)?;
            Ok(job)
        })?;
        self.flush().await?;
        tracing::info!(job_id = %id, container_id = %job.container_id, state = %job.state, "job finished");
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
        let job = self.txn(|tx| {
            let mut job = tx.job(id)?;
            advance(&mut job, JobState::Queued)?;
            job.reset_for_retry();
            tx.push_pending(&job)?;
            tx.put_job(&job)?;
            Ok(job)
        })?;
        self.flush().await?;
        tracing::info!(job_id = %id, container_id = %job.container_id, "job queued again");
        Ok(job)
    }

    /// Cancels queued job `id`, releasing its reservation as a failure would.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::NotCancellable`] unless it is queued;
    /// [`QueueError::Storage`].
    pub async fn cancel(&self, id: Uuid) -> Result<Job, QueueError> {
        let job = self.txn(|tx| {
            let mut job = tx.job(id)?;
            if job.state != JobState::Queued {
                return abort(QueueError::NotCancellable { state: job.state });
            }
            advance(&mut job, JobState::Cancelled)?;
            tx.remove_pending(&job)?;
            job.finished_at = Some(OffsetDateTime::now_utc());
            settle(tx, &job, false)?;
            tx.put_job(&job)?;
            Ok(job)
        })?;
        self.flush().await?;
        tracing::info!(job_id = %id, container_id = %job.container_id, "job cancelled");
        Ok(job)
    }
}

/// Commits a create of each of `specs`, in order, in one transaction: each is checked against
/// the ledger as the ones before it left it, and gets its own result (a refusal writes
/// nothing). The outer error is sled's, for the whole batch. Called by the commit thread,
/// which then flushes once for all of them.
pub(super) fn create_batch(
    trees: &Trees,
    dir: &Path,
    max_queued: usize,
    specs: &[CreateSpec],
) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
    trees.transact(dir, |tx| {
        let now = OffsetDateTime::now_utc();
        specs
            .iter()
            .map(|spec| reserve_create(tx, max_queued, spec, now))
            .collect()
    })
}

/// The create of `spec` inside a transaction: `Ok(Err(_))` when refused.
fn reserve_create(
    tx: &Tx<'_>,
    max_queued: usize,
    spec: &CreateSpec,
    now: OffsetDateTime,
) -> TxResult<Result<Job, QueueError>> {
    if let Some(rec) = tx.record(spec.id)? {
        return Ok(Err(match rec.job_id {
            Some(job) => QueueError::Conflict(format!(
                "container {} has a job pending (job {job})",
                spec.id
            )),
            None => QueueError::Conflict(format!("container {} already exists", spec.id)),
        }));
    }
    if let Some(holder) = tx.addr_holder(spec.vlan, spec.ip.addr)? {
        return Ok(Err(QueueError::Conflict(format!(
            "{} is already used on vlan {} by container {holder}",
            spec.ip.addr, spec.vlan
        ))));
    }
    let job = match new_job(tx, max_queued, JobRequest::Create(spec.clone()), now)? {
        Ok(job) => job,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.put_record(&ContainerRecord::creating(spec, job.id, now))?;
    Ok(Ok(job))
}

/// Adds a queued job for `request` if the queue has fewer than `max` waiting; `Ok(Err(_))`
/// when it is full.
fn new_job(
    tx: &Tx<'_>,
    max: usize,
    request: JobRequest,
    now: OffsetDateTime,
) -> TxResult<Result<Job, QueueError>> {
    if tx.queued()? >= max as u64 {
        return Ok(Err(QueueError::QueueFull { max }));
    }
    let job = Job::new(request, tx.next_seq()?, now);
    tx.add_job(&job)?;
    tx.push_pending(&job)?;
    Ok(Ok(job))
}

/// Moves `job` to `next`, or leaves the transaction with [`QueueError::BadTransition`].
fn advance(job: &mut Job, next: JobState) -> TxResult<()> {
    job.transition(next).or_else(abort)
}

/// Settles the reservation `job` held, once it is over. The container is kept (as `active`)
/// after a successful create or a failed destroy, released otherwise. A record the job does
/// not hold is left alone: the ledger never loses another job's reservation.
fn settle(tx: &Tx<'_>, job: &Job, succeeded: bool) -> TxResult<()> {
    let Some(mut rec) = tx.record(job.container_id)? else {
        tracing::warn!(job_id = %job.id, container_id = %job.container_id, "job ended without a container record");
        return Ok(());
    };
    if rec.job_id != Some(job.id) {
        tracing::warn!(job_id = %job.id, container_id = %job.container_id, holder = ?rec.job_id, "container record is not held by this job");
        return Ok(());
    }
    let keep = match job.kind {
        JobKind::Create => succeeded,
        JobKind::Destroy => !succeeded,
    };
    if keep {
        rec.state = ContainerRecordState::Active;
        rec.job_id = None;
        tx.put_record(&rec)
    } else {
        tx.remove_record(&rec)
    }
}
