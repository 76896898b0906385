//! Queueing a job: a create reserves its container ID and `(vlan, address)`, a destroy marks
//! its container `destroying`. Both go whole to the commit thread, which commits every one
//! waiting at that moment in one transaction and one disk sync (`committer.rs`); each is
//! checked on its own, against the ledger as the ones before it in the batch left it.

use time::OffsetDateTime;

use super::committer::BatchedWrite;
use super::db::{Tx, TxResult};
use super::job::{ContainerRecord, ContainerRecordState, Job, JobRequest, Lifecycle, Origin};
use super::store::JobStore;
use super::{Conflict, QueueError};
use crate::model::ContainerId;
use crate::spec::CreateSpec;

impl JobStore {
    /// Queues a create of `spec`, reserving its container ID and `(vlan, address)`.
    /// Returns once the job is on disk.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the ID has a record or the address is held on that VLAN;
    /// [`QueueError::QueueFull`]; [`QueueError::Storage`] when sled or the flush fails.
    pub async fn enqueue_create(&self, spec: CreateSpec) -> Result<Job, QueueError> {
        let write = create_write(self.inner.opts.max_queued, spec);
        let job = self.inner.committer.write(write).await?;
        tracing::info!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), "create queued");
        Ok(job)
    }

    /// Queues `op` on existing container `id` for `origin`; the job holds the container until
    /// it ends. Returns once the job is on disk.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when there is no such container; [`QueueError::Conflict`]
    /// when a job holds it or it is not in service; [`QueueError::QueueFull`];
    /// [`QueueError::Storage`].
    pub async fn enqueue_lifecycle(
        &self,
        id: ContainerId,
        op: Lifecycle,
        origin: Origin,
    ) -> Result<Job, QueueError> {
        let max = self.inner.opts.max_queued;
        let write = Box::new(move |tx: &Tx<'_>| reserve_lifecycle(tx, max, id, op, origin));
        let job = self.inner.committer.write(write).await?;
        tracing::info!(job_id = %job.id, container_id = %id, kind = job.kind.as_str(), "job queued");
        Ok(job)
    }

    /// Queues a destroy of container `id`, marking it `destroying`. Returns once the job is on
    /// disk.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when there is no such container; [`QueueError::Conflict`]
    /// when a job holds it; [`QueueError::QueueFull`]; [`QueueError::Storage`].
    pub async fn enqueue_destroy(&self, id: ContainerId) -> Result<Job, QueueError> {
        let write = destroy_write(self.inner.opts.max_queued, id);
        let job = self.inner.committer.write(write).await?;
        tracing::info!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), "destroy queued");
        Ok(job)
    }
}

impl JobStore {
    /// Queues a build of a new version of template `template`'s image. Returns once the job
    /// is on disk.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when a build of it is pending or running;
    /// [`QueueError::QueueFull`]; [`QueueError::Storage`].
    pub async fn enqueue_build_image(&self, template: String) -> Result<Job, QueueError> {
        let max = self.inner.opts.max_queued;
        let write = Box::new(move |tx: &Tx<'_>| reserve_build(tx, max, &template));
        let job = self.inner.committer.write(write).await?;
        tracing::info!(job_id = %job.id, "image build queued");
        Ok(job)
    }
}

/// The build of `template`'s image inside a transaction: `Ok(Err(_))` when refused.
fn reserve_build(tx: &Tx<'_>, max: usize, template: &str) -> TxResult<Result<Job, QueueError>> {
    if let Some(job) = tx.image_build(template)? {
        let template = template.to_string();
        return Ok(Err(Conflict::BuildPending { template, job }.into()));
    }
    let now = OffsetDateTime::now_utc();
    let request = JobRequest::BuildImage {
        template: template.into(),
    };
    let job = match new_job(tx, max, request, Origin::Operator, now)? {
        Ok(job) => job,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.set_image_build(template, Some(job.id))?;
    Ok(Ok(job))
}

/// The write that queues a create of `spec` while fewer than `max_queued` jobs wait.
pub(super) fn create_write(max_queued: usize, spec: CreateSpec) -> BatchedWrite {
    Box::new(move |tx| reserve_create(tx, max_queued, &spec))
}

/// The write that queues a destroy of container `id` while fewer than `max_queued` jobs wait.
pub(super) fn destroy_write(max_queued: usize, id: ContainerId) -> BatchedWrite {
    Box::new(move |tx| reserve_destroy(tx, max_queued, id))
}

/// The create of `spec` inside a transaction: `Ok(Err(_))` when refused (nothing written).
fn reserve_create(
    tx: &Tx<'_>,
    max_queued: usize,
    spec: &CreateSpec,
) -> TxResult<Result<Job, QueueError>> {
    if let Some(rec) = tx.record(spec.id)? {
        return Ok(Err(match rec.job_id {
            Some(job) => Conflict::JobPending { id: spec.id, job },
            None => Conflict::Exists(spec.id),
        }
        .into()));
    }
    if let Some(holder) = tx.addr_holder(spec.vlan, spec.ip.addr)? {
        return Ok(Err(Conflict::AddressInUse {
            ip: spec.ip.addr,
            vlan: spec.vlan,
            holder,
        }
        .into()));
    }
    let now = OffsetDateTime::now_utc();
    let job = match new_job(
        tx,
        max_queued,
        JobRequest::Create(spec.clone()),
        Origin::Operator,
        now,
    )? {
        Ok(job) => job,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.put_record(&ContainerRecord::creating(spec, job.id, now))?;
    Ok(Ok(job))
}

/// The destroy of container `id` inside a transaction: `Ok(Err(_))` when refused (nothing
/// written).
fn reserve_destroy(
    tx: &Tx<'_>,
    max_queued: usize,
    id: ContainerId,
) -> TxResult<Result<Job, QueueError>> {
    let rec = match free_record(tx, id)? {
        Ok(rec) => rec,
        Err(refused) => return Ok(Err(refused)),
    };
    let request = JobRequest::Destroy {
        id,
        from: Some(rec.state),
    };
    hold(
        tx,
        rec,
        ContainerRecordState::Destroying,
        max_queued,
        request,
        Origin::Operator,
    )
}

/// `op` on container `id` inside a transaction: `Ok(Err(_))` when refused (nothing written).
fn reserve_lifecycle(
    tx: &Tx<'_>,
    max_queued: usize,
    id: ContainerId,
    op: Lifecycle,
    origin: Origin,
) -> TxResult<Result<Job, QueueError>> {
    let rec = match free_record(tx, id)? {
        Ok(rec) => rec,
        Err(refused) => return Ok(Err(refused)),
    };
    if rec.state != ContainerRecordState::Active {
        let state = rec.state;
        return Ok(Err(Conflict::NotInService { id, state }.into()));
    }
    // A start, stop, restart or repair creates nothing: no template.
    let spec = CreateSpec {
        id,
        vlan: rec.vlan,
        ip: rec.ip,
        gateway: rec.gateway,
        template: None,
    };
    let state = rec.state;
    hold(tx, rec, state, max_queued, op.request(spec), origin)
}

/// The record of container `id` if no job holds it; `Ok(Err(_))` when there is none or a job
/// holds it.
fn free_record(tx: &Tx<'_>, id: ContainerId) -> TxResult<Result<ContainerRecord, QueueError>> {
    let Some(rec) = tx.record(id)? else {
        return Ok(Err(QueueError::NotFound(format!(
            "container {id} does not exist"
        ))));
    };
    match rec.job_id {
        Some(job) => {
            let doing = held_as(rec.state);
            Ok(Err(Conflict::Busy { id, doing, job }.into()))
        }
        None => Ok(Ok(rec)),
    }
}

/// Queues `request` by `origin` and makes its job the holder of `rec`, now in `state`.
fn hold(
    tx: &Tx<'_>,
    mut rec: ContainerRecord,
    state: ContainerRecordState,
    max_queued: usize,
    request: JobRequest,
    origin: Origin,
) -> TxResult<Result<Job, QueueError>> {
    let now = OffsetDateTime::now_utc();
    let job = match new_job(tx, max_queued, request, origin, now)? {
        Ok(job) => job,
        Err(refused) => return Ok(Err(refused)),
    };
    rec.state = state;
    rec.job_id = Some(job.id);
    tx.put_record(&rec)?;
    Ok(Ok(job))
}

/// What the job holding a record in `state` does to it, in words.
fn held_as(state: ContainerRecordState) -> &'static str {
    match state {
        ContainerRecordState::Creating => "being created",
        ContainerRecordState::Destroying => "being destroyed already",
        ContainerRecordState::Active
        | ContainerRecordState::Leftover
        | ContainerRecordState::Missing => "held",
    }
}

/// Adds a queued job for `request` by `origin` if fewer than `max` wait; `Ok(Err(_))` when
/// the queue is full.
fn new_job(
    tx: &Tx<'_>,
    max: usize,
    request: JobRequest,
    origin: Origin,
    now: OffsetDateTime,
) -> TxResult<Result<Job, QueueError>> {
    if tx.queued()? >= max as u64 {
        return Ok(Err(QueueError::QueueFull { max }));
    }
    let job = Job::new(request, origin, tx.next_seq()?, now);
    tx.add_job(&job)?;
    tx.push_pending(&job)?;
    Ok(Ok(job))
}
