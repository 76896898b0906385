//! What the store keeps: jobs with their steps, the job lifecycle as one state machine, and the
//! container records that reserve an ID and an address while a job works on them.
//!
//! Everything here is plain data with serde (stored as JSON) and pure functions, so it is unit
//! tested without a store.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{ContainerId, Ipv4Cidr, VlanId};
use crate::spec::{CreateSpec, StepEvent, StepName};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Creates a container.
    Create,
    /// Destroys a container.
    Destroy,
    /// Starts a stopped container, with its network.
    Start,
    /// Stops a container (graceful, then a kill).
    Stop,
    /// Stops, then starts a container.
    Restart,
    /// Makes a running container's network again (reconciliation).
    Repair,
    /// Builds a new version of a template's image.
    #[serde(rename = "build_image")]
    BuildImage,
}

impl JobKind {
    /// The kind as stored and shown (`create`, `destroy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Destroy => "destroy",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Repair => "repair",
            Self::BuildImage => "build_image",
        }
    }

    /// Whether a failed or interrupted job of this kind is rolled back (its steps undone,
    /// newest first), or left to be run again (its steps are idempotent).
    pub fn rolls_back(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Start | Self::Restart | Self::BuildImage
        )
    }

    /// The desired state a container has once a job of this kind succeeded, if it sets one.
    pub fn desired_after(self) -> Option<DesiredState> {
        match self {
            Self::Create | Self::Start | Self::Restart => Some(DesiredState::Running),
            Self::Stop => Some(DesiredState::Stopped),
            Self::Destroy | Self::Repair | Self::BuildImage => None,
        }
    }
}

/// What can be asked of an existing container, as a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Start it with its network.
    Start,
    /// Stop it.
    Stop,
    /// Stop, then start it.
    Restart,
    /// Make its network again.
    Repair,
}

impl Lifecycle {
    /// The request for container `spec`.
    pub fn request(self, spec: CreateSpec) -> JobRequest {
        match self {
            Self::Start => JobRequest::Start(spec),
            Self::Stop => JobRequest::Stop(spec),
            Self::Restart => JobRequest::Restart(spec),
            Self::Repair => JobRequest::Repair(spec),
        }
    }
}

/// Who asked for a job. Reconciliation's repairs wait behind every job an operator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Through the API.
    #[default]
    Operator,
    /// A reconcile pass, to repair drift.
    Reconcile,
}

/// What should run: the container's desired state, which only jobs change (never a reboot, a
/// crash, or an `lxc-stop` by hand).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Running with its network (after a create, a start or a restart).
    #[default]
    Running,
    /// Stopped (after a stop).
    Stopped,
}

/// What was asked, kept whole so a job can run (or be rolled back) after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobRequest {
    /// Create this container.
    Create(CreateSpec),
    /// Destroy this container.
    Destroy {
        /// The container.
        id: ContainerId,
        /// Its record's state when the destroy was queued, given back if the destroy fails or
        /// is cancelled (`active`, or `leftover`/`missing`, which must not become `active`).
        /// Absent in jobs stored before it existed: those were all `active`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<ContainerRecordState>,
    },
    /// Start this existing container (its record, as the job was queued).
    Start(CreateSpec),
    /// Stop it.
    Stop(CreateSpec),
    /// Restart it.
    Restart(CreateSpec),
    /// Repair its network.
    Repair(CreateSpec),
    /// Build a new version of this template's image.
    #[serde(rename = "build_image")]
    BuildImage {
        /// The template, as requests name it.
        template: String,
    },
}

impl JobRequest {
    /// The kind of job this request makes.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Create(_) => JobKind::Create,
            Self::Destroy { .. } => JobKind::Destroy,
            Self::Start(_) => JobKind::Start,
            Self::Stop(_) => JobKind::Stop,
            Self::Restart(_) => JobKind::Restart,
            Self::Repair(_) => JobKind::Repair,
            Self::BuildImage { .. } => JobKind::BuildImage,
        }
    }

    /// The container the request is about; `None` for an image build.
    pub fn container_id(&self) -> Option<ContainerId> {
        match self {
            Self::Destroy { id, .. } => Some(*id),
            Self::BuildImage { .. } => None,
            Self::Create(spec)
            | Self::Start(spec)
            | Self::Stop(spec)
            | Self::Restart(spec)
            | Self::Repair(spec) => Some(spec.id),
        }
    }

    /// The steps a job of this request runs, in order.
    pub fn step_names(&self) -> &'static [StepName] {
        match self {
            Self::Create(_) => &StepName::CREATE,
            Self::Destroy { .. } => &StepName::DESTROY,
            Self::Start(_) => &StepName::START,
            Self::Stop(_) => &StepName::STOP,
            Self::Restart(_) => &StepName::RESTART,
            Self::Repair(_) => &StepName::REPAIR,
            Self::BuildImage { .. } => &StepName::BUILD_IMAGE,
        }
    }

    /// The container's record as the request knows it (every kind but destroy carries it).
    pub fn spec(&self) -> Option<&CreateSpec> {
        match self {
            Self::Destroy { .. } | Self::BuildImage { .. } => None,
            Self::Create(spec)
            | Self::Start(spec)
            | Self::Stop(spec)
            | Self::Restart(spec)
            | Self::Repair(spec) => Some(spec),
        }
    }
}

/// Where a job is in its life. The allowed moves are in [`JobState::can_become`], and nowhere
/// else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the worker.
    Queued,
    /// The worker is running it.
    Running,
    /// Done.
    Succeeded,
    /// Failed; the job's `error` says why.
    Failed,
    /// Cancelled before it started.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the job is over: succeeded, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The lifecycle: whether a job in `self` may move to `next`. `Running` back to `Queued` is
    /// only for a job interrupted by a crash or a shutdown, queued again to run later.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::{Cancelled, Failed, Queued, Running, Succeeded};
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Queued)
        )
    }

    /// The lowercase name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started: the host may have been changed.
    Running,
    /// Applied.
    Done,
    /// Apply failed.
    Failed,
    /// Rolled back.
    Undone,
}

/// One step of a job, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub name: StepName,
    /// Where it is.
    pub state: StepState,
    /// When it started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it was applied or failed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why the apply failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Why the undo failed: what may be left behind on the host.
    #[serde(default)]
    pub undo_error: Option<String>,
}

impl StepRecord {
    /// A step not started yet.
    pub fn pending(name: StepName) -> Self {
        Self {
            name,
            state: StepState::Pending,
            started_at: None,
            finished_at: None,
            error: None,
            undo_error: None,
        }
    }
}

/// A unit of work for the worker, with everything needed to run it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's ID.
    pub id: Uuid,
    /// Position in enqueue order; the worker takes the lowest queued first.
    pub seq: u64,
    /// Create, destroy, start, ...
    pub kind: JobKind,
    /// Who asked for it.
    #[serde(default)]
    pub origin: Origin,
    /// The container the job is about; `None` for an image build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    /// What was asked.
    pub request: JobRequest,
    /// Where the job is.
    pub state: JobState,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// How many times the worker started it (more than one after a crash or a shutdown).
    pub attempts: u32,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the worker last started it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The `Idempotency-Key` the request that made it carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// With the key: [`fingerprint_digest`] of that request (32 hex digits in JSON), so a
    /// retry is told from a reuse of the key.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "digest_hex")]
    pub idempotency_digest: Option<[u8; 16]>,
    /// The number of the event that says it was queued: `GET /api/events?job=<id>` starts
    /// there. Absent in jobs stored before events existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event: Option<u64>,
}

/// What an idempotency key names: the job its first request made, and the digest of that
/// request's fingerprint (method, path and the request as parsed), so a retry is told from a
/// reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The job.
    pub job: Uuid,
    /// `fingerprint_digest` of the request's fingerprint.
    pub digest: [u8; 16],
}

/// A fingerprint's 128-bit FNV-1a digest: what a key record stores (16 bytes in every keyed
/// enqueue's transaction instead of the text's hundred or so). Not a defence against a
/// crafted collision, and need not be: a client chooses its own keys, so a collision could only
/// make its own second request replay its own first.
pub fn fingerprint_digest(fingerprint: &str) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = fingerprint
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    hash.to_be_bytes()
}

/// A digest as 32 hex digits in JSON.
mod digest_hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes the field by reference
    pub fn serialize<S: Serializer>(d: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{:032x}", u128::from_be_bytes(*d))),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 16]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let n = u128::from_str_radix(&text, 16)
            .ok()
            .filter(|_| text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| D::Error::custom(format!("not a digest of 32 hex digits: {text:?}")))?;
        Ok(Some(n.to_be_bytes()))
    }
}

impl Job {
    /// A new queued job for `request` asked by `origin`, at position `seq`, with every step
    /// pending.
    pub fn new(request: JobRequest, origin: Origin, seq: u64, now: OffsetDateTime) -> Self {
        Self {
            id: Uuid::new_v4(),
            seq,
            kind: request.kind(),
            origin,
            container_id: request.container_id(),
            steps: request
                .step_names()
                .iter()
                .map(|&n| StepRecord::pending(n))
                .collect(),
            request,
            state: JobState::Queued,
            error: None,
            attempts: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            idempotency_key: None,
            idempotency_digest: None,
            first_event: None,
        }
    }

    /// Moves the job to `next`, if the lifecycle allows it.
    ///
    /// # Errors
    /// [`super::QueueError::BadTransition`] when [`JobState::can_become`] says no.
    pub(crate) fn transition(&mut self, next: JobState) -> Result<(), super::QueueError> {
        if !self.state.can_become(next) {
            return Err(super::QueueError::BadTransition {
                from: self.state,
                to: next,
            });
        }
        self.state = next;
        Ok(())
    }

    /// Records a runner event for `step`, now. A step name the job does not list is added at
    /// the end, so no event is lost.
    pub fn apply_step_event(&mut self, step: StepName, event: StepEvent<'_>) {
        self.apply_step_event_at(step, event, OffsetDateTime::now_utc());
    }

    /// [`Self::apply_step_event`] at a given time.
    pub(crate) fn apply_step_event_at(
        &mut self,
        step: StepName,
        event: StepEvent<'_>,
        now: OffsetDateTime,
    ) {
        let idx = match self.steps.iter().position(|s| s.name == step) {
            Some(i) => i,
            None => {
                self.steps.push(StepRecord::pending(step));
                self.steps.len() - 1
            }
        };
        let rec = &mut self.steps[idx];
        match event {
            StepEvent::Started => {
                rec.state = StepState::Running;
                rec.started_at = Some(now);
            }
            StepEvent::Done => {
                rec.state = StepState::Done;
                rec.finished_at = Some(now);
            }
            StepEvent::Failed(e) => {
                rec.state = StepState::Failed;
                rec.finished_at = Some(now);
                rec.error = Some(e.to_owned());
            }
            // The step keeps its state until the undo ends: a crash in between leaves it as
            // it was, which is what recovery needs to know.
            StepEvent::Undoing => {}
            StepEvent::Undone => rec.state = StepState::Undone,
            StepEvent::UndoFailed(e) => rec.undo_error = Some(e.to_owned()),
        }
    }

    /// Puts the job back in the queue after an interruption: every step pending again, no
    /// error, no start time; `attempts` is kept.
    pub(crate) fn reset_for_retry(&mut self) {
        for step in &mut self.steps {
            *step = StepRecord::pending(step.name);
        }
        self.error = None;
        self.started_at = None;
        self.finished_at = None;
    }
}

/// Where a reserved container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRecordState {
    /// A create job is pending or running.
    Creating,
    /// Created and in service.
    Active,
    /// A destroy job is pending or running.
    Destroying,
    /// Reconciliation found its rootfs gone: it is never made again under this name; the ID
    /// and address stay reserved until a destroy.
    Missing,
    /// A create failed and its rollback could not undo everything: what is left on the host
    /// keeps the ID and address reserved until a destroy removes it.
    Leftover,
}

impl ContainerRecordState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Active => "active",
            Self::Destroying => "destroying",
            Self::Leftover => "leftover",
            Self::Missing => "missing",
        }
    }
}

impl fmt::Display for ContainerRecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ledger entry that holds a container ID and its `(vlan, address)` from the moment a
/// create is accepted until the container is destroyed (or the create fails).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container.
    pub id: ContainerId,
    /// Its VLAN.
    pub vlan: VlanId,
    /// Its `eth0` address; the address part is unique per VLAN.
    pub ip: Ipv4Cidr,
    /// Its default gateway, if any.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Where it is.
    pub state: ContainerRecordState,
    /// Whether it should run.
    #[serde(default)]
    pub desired: DesiredState,
    /// The job pending or running on it, if any.
    #[serde(default)]
    pub job_id: Option<Uuid>,
    /// When the create was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl ContainerRecord {
    /// The record a create of `spec` by job `job` makes.
    pub fn creating(spec: &CreateSpec, job: Uuid, now: OffsetDateTime) -> Self {
        Self {
            id: spec.id,
            vlan: spec.vlan,
            ip: spec.ip,
            gateway: spec.gateway,
            state: ContainerRecordState::Creating,
            desired: DesiredState::Running,
            job_id: Some(job),
            created_at: now,
        }
    }
}
