//! Queueing a job: a create reserves its container ID and `(vlan, address)`, a destroy marks
//! its container `destroying`. Both go whole to the commit thread, which commits every one
//! waiting at that moment in one transaction and one disk sync (`committer.rs`); each is
//! checked on its own, against the ledger as the ones before it in the batch left it.
//!
//! A request may carry an idempotency key ([`IdempotencyKey`]): the key is stored with its job
//! in the same transaction, so the same key again (a client's retry after a lost answer) finds
//! that job instead of making another, even when the retries race — the commit thread runs
//! them one after another — and the same key with another request is refused.

use time::OffsetDateTime;

use super::committer::BatchedWrite;
use super::db::{Tx, TxResult};
use super::event::Event;
use super::job::{
    fingerprint_digest, ContainerRecord, ContainerRecordState, Job, JobRequest, Lifecycle, Origin,
};
use super::store::JobStore;
use super::{Conflict, QueueError};
use crate::model::ContainerId;
use crate::spec::CreateSpec;

/// A job queued, or found again by the idempotency key of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job.
    pub job: Job,
    /// Whether the key named a job made before (nothing was queued now).
    pub replayed: bool,
}

/// An `Idempotency-Key` and the fingerprint of the request that carries it (its method, path
/// and the request as parsed: the same request sent as a form or as JSON has one fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, as the client sent it.
    pub key: String,
    /// The request's fingerprint.
    pub fingerprint: String,
}

impl JobStore {
    /// Queues a create of `spec`, reserving its container ID and `(vlan, address)`.
    /// Returns once the job is on disk.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the ID has a record or the address is held on that VLAN;
    /// [`QueueError::QueueFull`]; [`QueueError::Storage`] when sled or the flush fails.
    pub async fn enqueue_create(&self, spec: CreateSpec) -> Result<Job, QueueError> {
        Ok(self.enqueue_create_keyed(spec, None).await?.job)
    }

    /// [`Self::enqueue_create`], or the job `key` made before.
    ///
    /// # Errors
    /// As [`Self::enqueue_create`]; [`QueueError::KeyReused`].
    pub async fn enqueue_create_keyed(
        &self,
        spec: CreateSpec,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        self.enqueue_create_as(spec, key, Gate::Open).await
    }

    /// [`Self::enqueue_create_keyed`] with the job gated: stored with its `queued` event,
    /// holding its ID and address, but not taken by the worker until [`Self::open_gate`] (or
    /// removed by [`Self::refuse_gate`]): the create waits for its cluster reservation
    /// (`gate.rs`).
    ///
    /// # Errors
    /// As [`Self::enqueue_create_keyed`].
    pub async fn enqueue_create_gated(
        &self,
        spec: CreateSpec,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        self.enqueue_create_as(spec, key, Gate::Closed).await
    }

    async fn enqueue_create_as(
        &self,
        spec: CreateSpec,
        key: Option<IdempotencyKey>,
        gate: Gate,
    ) -> Result<Enqueued, QueueError> {
        let max = self.inner.opts.max_queued;
        let done = self
            .write(keyed(key, move |tx, k| {
                reserve_create(tx, max, &spec, k, gate)
            }))
            .await?;
        // The API says "create accepted" at info with the request's details: one line a create.
        tracing::debug!(job_id = %done.job.id, container_id = done.job.container_id.map(tracing::field::display), replayed = done.replayed, gated = gate == Gate::Closed, "create queued");
        Ok(done)
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
        Ok(self
            .enqueue_lifecycle_keyed(id, op, origin, None)
            .await?
            .job)
    }

    /// [`Self::enqueue_lifecycle`], or the job `key` made before.
    ///
    /// # Errors
    /// As [`Self::enqueue_lifecycle`]; [`QueueError::KeyReused`].
    pub async fn enqueue_lifecycle_keyed(
        &self,
        id: ContainerId,
        op: Lifecycle,
        origin: Origin,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        let max = self.inner.opts.max_queued;
        let reserve =
            move |tx: &Tx<'_>, k: KeyOf<'_>| reserve_lifecycle(tx, max, id, (op, origin), k);
        let done = self.write(keyed(key, reserve)).await?;
        tracing::info!(job_id = %done.job.id, container_id = %id, kind = done.job.kind.as_str(), replayed = done.replayed, "job queued");
        Ok(done)
    }

    /// Queues a destroy of container `id`, marking it `destroying`. Returns once the job is on
    /// disk.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when there is no such container; [`QueueError::Conflict`]
    /// when a job holds it; [`QueueError::QueueFull`]; [`QueueError::Storage`].
    pub async fn enqueue_destroy(&self, id: ContainerId) -> Result<Job, QueueError> {
        Ok(self.enqueue_destroy_keyed(id, None).await?.job)
    }

    /// [`Self::enqueue_destroy`], or the job `key` made before.
    ///
    /// # Errors
    /// As [`Self::enqueue_destroy`]; [`QueueError::KeyReused`].
    pub async fn enqueue_destroy_keyed(
        &self,
        id: ContainerId,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        let max = self.inner.opts.max_queued;
        let done = self
            .write(keyed(key, move |tx, k| reserve_destroy(tx, max, id, k)))
            .await?;
        tracing::debug!(job_id = %done.job.id, container_id = %id, replayed = done.replayed, "destroy queued");
        Ok(done)
    }

    pub(super) async fn write(&self, write: BatchedWrite) -> Result<Enqueued, QueueError> {
        self.inner.committer.write(write).await
    }

    /// [`Self::write`], answered once committed: on disk with the next flush.
    pub(super) async fn write_lazy(&self, write: BatchedWrite) -> Result<Enqueued, QueueError> {
        self.inner.committer.write_lazy(write).await
    }
}

/// An idempotency key and the digest of its request's fingerprint, as a new job carries them.
type KeyOf<'k> = Option<(&'k str, [u8; 16])>;

/// `reserve` (which queues a job inside a transaction, stamped with the key it is given) behind
/// idempotency key `key`: the job the key made before, when it names one for the same
/// request; a refusal when it names one for another; else `reserve`'s job, which carries the
/// key and its request's digest (and so the key names it).
fn keyed(
    key: Option<IdempotencyKey>,
    reserve: impl Fn(&Tx<'_>, KeyOf<'_>) -> TxResult<Result<Job, QueueError>> + Send + 'static,
) -> BatchedWrite {
    // The key with its request's digest, computed once: sled may run the write again.
    let key = key.map(|k| {
        let digest = fingerprint_digest(&k.fingerprint);
        (k.key, digest)
    });
    Box::new(move |tx| {
        if let Some((k, digest)) = &key {
            if let Some(known) = tx.key(k)? {
                if known.digest != *digest {
                    let (key, job) = (k.clone(), known.job);
                    return Ok(Err(QueueError::KeyReused { key, job }));
                }
                // A key goes with its job (`Tx::remove_job`): found, it is there.
                if let Some(job) = tx.find_job(known.job)? {
                    return Ok(Ok(Enqueued {
                        job,
                        replayed: true,
                    }));
                }
            }
        }
        let job = match reserve(tx, key.as_ref().map(|(k, d)| (k.as_str(), *d)))? {
            Ok(job) => job,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(Ok(Enqueued {
            job,
            replayed: false,
        }))
    })
}

impl JobStore {
    /// Queues a build of a new version of template `template`'s image, or answers the job
    /// `key` made before. Returns once the job is on disk.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when a build of it is pending or running;
    /// [`QueueError::QueueFull`]; [`QueueError::KeyReused`]; [`QueueError::Storage`].
    pub async fn enqueue_build_image_keyed(
        &self,
        template: String,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        let max = self.inner.opts.max_queued;
        let done = self
            .write(keyed(key, move |tx, k| {
                reserve_build(tx, max, &template, k)
            }))
            .await?;
        tracing::info!(job_id = %done.job.id, replayed = done.replayed, "image build queued");
        Ok(done)
    }
}

/// The build of `template`'s image inside a transaction: `Ok(Err(_))` when refused.
fn reserve_build(
    tx: &Tx<'_>,
    max: usize,
    template: &str,
    key: KeyOf<'_>,
) -> TxResult<Result<Job, QueueError>> {
    if let Some(job) = tx.image_build(template)? {
        let template = template.to_string();
        return Ok(Err(Conflict::BuildPending { template, job }.into()));
    }
    let now = OffsetDateTime::now_utc();
    let request = JobRequest::BuildImage {
        template: template.into(),
    };
    let job = match new_job(tx, max, request, (Origin::Operator, key), now)? {
        Ok(job) => job,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.set_image_build(template, Some(job.id))?;
    Ok(Ok(job))
}

/// The write that queues a create of `spec` while fewer than `max_queued` jobs wait.
#[cfg(test)]
pub(super) fn create_write(max_queued: usize, spec: CreateSpec) -> BatchedWrite {
    keyed(None, move |tx, k| {
        reserve_create(tx, max_queued, &spec, k, Gate::Open)
    })
}

/// The write that queues a destroy of container `id` while fewer than `max_queued` jobs wait.
#[cfg(test)]
pub(super) fn destroy_write(max_queued: usize, id: ContainerId) -> BatchedWrite {
    keyed(None, move |tx, k| reserve_destroy(tx, max_queued, id, k))
}

/// Whether a new job goes to the worker's queue at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Queued, with its event.
    Open,
    /// Held back until its gate opens (`gate.rs`).
    Closed,
}

/// The create of `spec` inside a transaction: `Ok(Err(_))` when refused (nothing written).
fn reserve_create(
    tx: &Tx<'_>,
    max_queued: usize,
    spec: &CreateSpec,
    key: KeyOf<'_>,
    gate: Gate,
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
            holder: holder.get(),
        }
        .into()));
    }
    let now = OffsetDateTime::now_utc();
    let request = JobRequest::Create(spec.clone());
    let job = match new_job_gated(tx, max_queued, request, (Origin::Operator, key), now, gate)? {
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
    key: KeyOf<'_>,
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
        (Origin::Operator, key),
    )
}

/// `op` on container `id` inside a transaction: `Ok(Err(_))` when refused (nothing written).
fn reserve_lifecycle(
    tx: &Tx<'_>,
    max_queued: usize,
    id: ContainerId,
    (op, origin): (Lifecycle, Origin),
    key: KeyOf<'_>,
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
    hold(tx, rec, state, max_queued, op.request(spec), (origin, key))
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

/// Queues `request` by `asker` (who, and the idempotency key) and makes its job the holder of
/// `rec`, now in `state`.
fn hold(
    tx: &Tx<'_>,
    mut rec: ContainerRecord,
    state: ContainerRecordState,
    max_queued: usize,
    request: JobRequest,
    asker: (Origin, KeyOf<'_>),
) -> TxResult<Result<Job, QueueError>> {
    let now = OffsetDateTime::now_utc();
    let job = match new_job(tx, max_queued, request, asker, now)? {
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

/// Adds a queued job for `request` by `origin`, carrying idempotency key `key`, if fewer than
/// `max` wait; `Ok(Err(_))` when the queue is full.
fn new_job(
    tx: &Tx<'_>,
    max: usize,
    request: JobRequest,
    asker: (Origin, KeyOf<'_>),
    now: OffsetDateTime,
) -> TxResult<Result<Job, QueueError>> {
    new_job_gated(tx, max, request, asker, now, Gate::Open)
}

/// [`new_job`], held back from the queue if `gate` is closed.
fn new_job_gated(
    tx: &Tx<'_>,
    max: usize,
    request: JobRequest,
    (origin, key): (Origin, KeyOf<'_>),
    now: OffsetDateTime,
    gate: Gate,
) -> TxResult<Result<Job, QueueError>> {
    if tx.queued()? >= max as u64 {
        return Ok(Err(QueueError::QueueFull { max }));
    }
    let mut job = Job::new(request, origin, tx.next_seq()?, now);
    if let Some((key, digest)) = key {
        job.idempotency_key = Some(key.to_string());
        job.idempotency_digest = Some(digest);
    }
    job.first_event = Some(tx.emit(Event::job_state(&job))?);
    tx.add_job(&job)?;
    match gate {
        Gate::Open => tx.push_pending(&job)?,
        Gate::Closed => tx.set_gate(job.id)?,
    }
    Ok(Ok(job))
}
