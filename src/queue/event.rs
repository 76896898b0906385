//! Events: what the store committed, one record per change, for `GET /api/events`.
//!
//! Every job state change, every step event and every change of a container record's state
//! or desired state is written as an [`Event`] **in the transaction that makes the change**,
//! under the next number of one durable counter. So events are numbered in the order the
//! store committed the changes, and an event exists exactly when its change does: after a
//! crash, a change that did not reach the disk took its event (and its number) with it.
//!
//! Readers only see events up to the last one known to be on disk (the commit thread
//! publishes that number after each sync, `db/events.rs`): a number a client has seen is
//! never handed out again, even after a crash.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::job::{ContainerRecord, DesiredState, Job, JobKind};
use crate::model::ContainerId;
use crate::spec::{StepEvent, StepName};

/// What an event is about: its SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A job changed state (`queued`, `running`, `succeeded`, `failed`, `cancelled`).
    Job,
    /// A step of a job started, ended, or was undone.
    Step,
    /// A container record's state or desired state changed outside a job's own states
    /// (found missing, kept as leftover, desired state set by a start or stop).
    Container,
    /// A reconcile pass found a container's health changed (`ok`, `stopped`, `degraded`,
    /// `missing`).
    Health,
    /// A reconcile pass found a container drifted from its desired state (and queued the job
    /// that repairs it, if one applies).
    Reconcile,
}

impl EventType {
    /// The name, as sent in the SSE `event:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Step => "step",
            Self::Container => "container",
            Self::Health => "health",
            Self::Reconcile => "reconcile",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its number: strictly increasing in commit order, never reused.
    pub seq: u64,
    /// What it is about.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the change was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The job, for job and step events (and container events a job caused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// The container, if the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    /// The job's kind.
    #[serde(default, rename = "job_kind", skip_serializing_if = "Option::is_none")]
    pub job_kind: Option<JobKind>,
    /// The step, for step events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    /// The new state: the job's, the step's (`running`, `done`, `failed`, `undoing`, `undone`,
    /// `undo_failed`) or the container record's.
    pub state: String,
    /// The container's desired state, for container events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredState>,
    /// Why a job or a step failed, or what an undo could not remove; for a drift, why no
    /// repair could be queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is wrong with a degraded container, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    fn of_job(job: &Job, kind: EventType, state: &str) -> Self {
        Self {
            seq: 0,
            kind,
            at: OffsetDateTime::now_utc(),
            job_id: Some(job.id),
            container_id: job.container_id,
            job_kind: Some(job.kind),
            step: None,
            state: state.to_owned(),
            desired: None,
            error: None,
            detail: None,
        }
    }

    fn of_container(id: ContainerId, kind: EventType, state: &str) -> Self {
        Self {
            seq: 0,
            kind,
            at: OffsetDateTime::now_utc(),
            job_id: None,
            container_id: Some(id),
            job_kind: None,
            step: None,
            state: state.to_owned(),
            desired: None,
            error: None,
            detail: None,
        }
    }

    /// A reconcile pass found container `id`'s health is now `health`, with `detail` when
    /// degraded.
    pub fn health(id: ContainerId, health: &str, detail: Option<String>) -> Self {
        Self {
            detail,
            ..Self::of_container(id, EventType::Health, health)
        }
    }

    /// A reconcile pass found container `id` drifted (`drift`), and queued `job` to repair it
    /// (or could not: `error`).
    pub fn drift(id: ContainerId, drift: &str, job: Option<Uuid>, error: Option<String>) -> Self {
        Self {
            job_id: job,
            error,
            ..Self::of_container(id, EventType::Reconcile, drift)
        }
    }

    /// `job` is now in its current state (the number is given when it is stored).
    pub fn job_state(job: &Job) -> Self {
        Self {
            error: job.error.clone().filter(|e| !e.is_empty()),
            ..Self::of_job(job, EventType::Job, job.state.as_str())
        }
    }

    /// `event` happened to `step` of `job`.
    pub fn step(job: &Job, step: StepName, event: StepEvent<'_>) -> Self {
        let (state, error) = match event {
            StepEvent::Started => ("running", None),
            StepEvent::Done => ("done", None),
            StepEvent::Failed(e) => ("failed", Some(e.to_owned())),
            StepEvent::Undoing => ("undoing", None),
            StepEvent::Undone => ("undone", None),
            StepEvent::UndoFailed(e) => ("undo_failed", Some(e.to_owned())),
        };
        Self {
            step: Some(step),
            error,
            ..Self::of_job(job, EventType::Step, state)
        }
    }

    /// Container `rec` is now as it says; `job` is the job that changed it, if one did.
    pub fn container(rec: &ContainerRecord, job: Option<&Job>) -> Self {
        Self {
            job_id: job.map(|j| j.id),
            job_kind: job.map(|j| j.kind),
            desired: Some(rec.desired),
            ..Self::of_container(rec.id, EventType::Container, rec.state.as_str())
        }
    }
}

/// The fields a filtered reader needs, decoded without the rest.
#[derive(Debug, Deserialize)]
pub(crate) struct EventHead {
    /// The job, if any.
    #[serde(default)]
    pub job_id: Option<Uuid>,
    /// The container, if any.
    #[serde(default)]
    pub container_id: Option<ContainerId>,
    /// When it was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A stored event as read back: its number, its type and its JSON, as stored (a reader sends
/// it on without encoding it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its number.
    pub seq: u64,
    /// Its type.
    pub kind: EventType,
    /// The [`Event`] as JSON.
    pub json: bytes::Bytes,
}

impl StoredEvent {
    /// The job and container it names.
    ///
    /// # Errors
    /// When the JSON does not decode.
    pub(crate) fn head(&self) -> Result<EventHead, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// The whole event.
    ///
    /// # Errors
    /// When the JSON does not decode.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{JobRequest, Origin};

    #[test]
    fn a_step_event_names_its_state_and_error() {
        let job = Job::new(
            JobRequest::Destroy {
                id: ContainerId::new(5).unwrap(),
                from: None,
            },
            Origin::Operator,
            1,
            OffsetDateTime::now_utc(),
        );
        let e = Event::step(
            &job,
            StepName::StartContainer,
            StepEvent::UndoFailed("busy"),
        );
        assert_eq!(
            (e.state.as_str(), e.error.as_deref()),
            ("undo_failed", Some("busy"))
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "step");
        assert_eq!(json["step"], "start_container");
        assert_eq!(json["container_id"], 5);
        assert_eq!(json["job_kind"], "destroy");
        assert!(json.get("desired").is_none());
    }
}
