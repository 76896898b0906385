//! Jobs, their steps, and the one place their state transitions are decided.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::engine::DESTROY_STEPS;
use crate::model::{ContainerId, Ipv4Cidr, VlanId};
use crate::steps::{CreateSpec, StepEvent, CREATE_STEPS};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Create a container.
    Create,
    /// Destroy a container.
    Destroy,
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobRequest {
    /// Create this container.
    Create(CreateSpec),
    /// Destroy this container.
    Destroy {
        /// The container.
        id: ContainerId,
    },
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the worker.
    Queued,
    /// The worker is on it.
    Running,
    /// Done.
    Succeeded,
    /// Failed (rolled back).
    Failed,
    /// Cancelled before it started.
    Cancelled,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        })
    }
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The allowed transitions, all of them. `running → queued` is for a job interrupted by a
    /// crash or a shutdown, queued again to run from the start.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Queued)
        )
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Undone by a rollback.
    Undone,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Where it is.
    pub state: StepState,
    /// When apply started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When apply (or undo) ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why apply failed.
    pub error: Option<String>,
    /// Why undo failed.
    pub undo_error: Option<String>,
}

impl StepRecord {
    fn pending(name: &str) -> Self {
        Self {
            name: name.into(),
            state: StepState::Pending,
            started_at: None,
            finished_at: None,
            error: None,
            undo_error: None,
        }
    }
}

/// A job, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job ID.
    pub id: Uuid,
    /// Enqueue order.
    pub seq: u64,
    /// Create or destroy.
    pub kind: JobKind,
    /// The container.
    pub container_id: ContainerId,
    /// The request.
    pub request: JobRequest,
    /// Where it is.
    pub state: JobState,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
    /// Why it failed.
    pub error: Option<String>,
    /// Times the worker started it (more than one after a crash).
    pub attempts: u32,
    /// When accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the worker last started it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl Job {
    /// A new queued job for `request`.
    pub fn new(seq: u64, request: JobRequest) -> Self {
        let (kind, container_id, names): (_, _, &[&str]) = match &request {
            JobRequest::Create(spec) => (JobKind::Create, spec.id, &CREATE_STEPS),
            JobRequest::Destroy { id } => (JobKind::Destroy, *id, &DESTROY_STEPS),
        };
        Self {
            id: Uuid::new_v4(),
            seq,
            kind,
            container_id,
            request,
            state: JobState::Queued,
            steps: names.iter().map(|n| StepRecord::pending(n)).collect(),
            error: None,
            attempts: 0,
            created_at: OffsetDateTime::now_utc(),
            started_at: None,
            finished_at: None,
        }
    }

    /// Resets the steps, for a job that runs again from the start.
    pub fn reset_steps(&mut self) {
        for s in &mut self.steps {
            *s = StepRecord::pending(&s.name);
        }
        self.error = None;
    }

    /// Records a runner event on the named step.
    pub fn apply_step_event(&mut self, step: &str, event: StepEvent<'_>) {
        let Some(s) = self.steps.iter_mut().find(|s| s.name == step) else {
            return;
        };
        let now = Some(OffsetDateTime::now_utc());
        match event {
            StepEvent::Started => {
                s.state = StepState::Running;
                s.started_at = now;
                s.finished_at = None;
            }
            StepEvent::Done => {
                s.state = StepState::Done;
                s.finished_at = now;
            }
            StepEvent::Failed(e) => {
                s.state = StepState::Failed;
                s.finished_at = now;
                s.error = Some(e.to_string());
            }
            StepEvent::Undoing => {}
            StepEvent::Undone => {
                s.state = StepState::Undone;
                s.finished_at = now;
            }
            StepEvent::UndoFailed(e) => s.undo_error = Some(e.to_string()),
        }
    }
}

/// Where a container stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRecordState {
    /// A create job holds the ID and address.
    Creating,
    /// Created.
    Active,
    /// A destroy job holds it.
    Destroying,
}

/// A container in the ledger: its ID and address are reserved while the record exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container ID.
    pub id: ContainerId,
    /// Its VLAN.
    pub vlan: VlanId,
    /// Its address.
    pub ip: Ipv4Cidr,
    /// Its gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Where it stands.
    pub state: ContainerRecordState,
    /// The job holding it, if any.
    pub job_id: Option<Uuid>,
    /// When first reserved.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_exactly_the_documented_ones() {
        use JobState::*;
        let all = [Queued, Running, Succeeded, Failed, Cancelled];
        let allowed: Vec<(JobState, JobState)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Queued, Running),
                (Queued, Cancelled),
                (Running, Queued),
                (Running, Succeeded),
                (Running, Failed)
            ]
        );
        assert!(all
            .iter()
            .filter(|s| s.is_terminal())
            .all(|s| all.iter().all(|n| !s.can_become(*n))));
    }

    #[test]
    fn step_events_map_onto_records() {
        let spec = CreateSpec {
            id: ContainerId::new(5).unwrap(),
            vlan: VlanId::new(2).unwrap(),
            ip: "192.168.2.5/24".parse().unwrap(),
            gateway: None,
        };
        let mut job = Job::new(1, JobRequest::Create(spec));
        assert_eq!(job.kind, JobKind::Create);
        assert!(job.steps.iter().all(|s| s.state == StepState::Pending));
        job.apply_step_event("create_container", StepEvent::Started);
        assert_eq!(job.steps[0].state, StepState::Running);
        assert!(job.steps[0].started_at.is_some());
        job.apply_step_event("create_container", StepEvent::Done);
        job.apply_step_event("start_container", StepEvent::Started);
        job.apply_step_event("start_container", StepEvent::Failed("boom"));
        assert_eq!(
            (job.steps[1].state, job.steps[1].error.as_deref()),
            (StepState::Failed, Some("boom"))
        );
        job.apply_step_event("start_container", StepEvent::Undone);
        job.apply_step_event("create_container", StepEvent::UndoFailed("stuck"));
        assert_eq!(job.steps[0].undo_error.as_deref(), Some("stuck"));
        assert_eq!(job.steps[1].state, StepState::Undone);
        job.reset_steps();
        assert!(job
            .steps
            .iter()
            .all(|s| s.state == StepState::Pending && s.error.is_none()));
        let back: Job = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }
}
