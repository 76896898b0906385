//! Provisioning as an ordered list of reversible steps, and the runner that rolls back.
//!
//! Each [`Step`] has `apply` and `undo`; undo of something absent succeeds, so undo can run
//! after any partial apply, after a crash, or twice. The runner records each step's progress
//! through [`Progress`] *before* touching the host (so a store always says what may have been
//! done), and on failure undoes the failed step and every completed one, newest first, going on
//! past undo errors and reporting them all (Incus' `revert`, netavark's teardown).

pub mod container;
pub mod network;

use std::fmt;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{ContainerId, Ipv4Cidr, VlanId};
use crate::sys::{Host, SysError};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// Container ID; names `container<ID>` and `vethc_br<ID>`.
    pub id: ContainerId,
    /// VLAN whose bridge the container joins.
    pub vlan: VlanId,
    /// The container's `eth0` address.
    pub ip: Ipv4Cidr,
    /// Default gateway inside the container, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The kernel or LXC refused.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Anything else (a timeout, a missing precondition, a progress record that failed).
    #[error("{0}")]
    Other(String),
}

/// State the steps share while they run.
pub struct StepCtx<'a> {
    /// The host to act on.
    pub host: &'a Host,
    /// The request.
    pub spec: &'a CreateSpec,
    /// PID of the container's init, once started (or found again, for undo after a crash).
    pub pid: Option<u32>,
    /// MTU of the VLAN's bridge, read when the veth is made.
    pub mtu: Option<u32>,
}

impl<'a> StepCtx<'a> {
    /// A fresh context for `spec` on `host`.
    pub fn new(host: &'a Host, spec: &'a CreateSpec) -> Self {
        Self {
            host,
            spec,
            pid: None,
            mtu: None,
        }
    }

    /// The init PID: remembered from the start step, or asked of LXC (after a crash).
    ///
    /// # Errors
    /// When LXC cannot be asked.
    pub async fn running_pid(&mut self) -> Result<Option<u32>, StepError> {
        if self.pid.is_none() {
            let name = self.spec.id.container_name();
            self.pid = self.host.lxc.status(&name).await?.and_then(|s| s.pid);
        }
        Ok(self.pid)
    }
}

/// One reversible change to the host.
#[async_trait]
pub trait Step: Send + Sync {
    /// Stable name, recorded in jobs and shown to users.
    fn name(&self) -> &'static str;
    /// Makes the change.
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError>;
    /// Reverts it; succeeds when there is nothing to revert.
    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError>;
}

/// The steps of a create, in order.
pub fn create_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(container::CreateContainer),
        Box::new(container::StartContainer),
        Box::new(network::CreateVeth),
        Box::new(network::ConfigureNetwork),
    ]
}

/// Names of the create steps, in order.
pub const CREATE_STEPS: [&str; 4] = [
    "create_container",
    "start_container",
    "create_veth",
    "configure_network",
];

/// A moment in a step's life, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent<'e> {
    /// About to apply.
    Started,
    /// Applied.
    Done,
    /// Apply failed with this error.
    Failed(&'e str),
    /// About to undo.
    Undoing,
    /// Undone.
    Undone,
    /// Undo failed with this error.
    UndoFailed(&'e str),
}

impl StepEvent<'_> {
    /// Whether a durable recorder must have this event on disk before the runner goes on.
    /// Every event must, except the end of an action (`Done`, `Undone`): what follows it is
    /// either another recorded event or the end of the job, whose durable write carries it,
    /// and if the process dies in between, recovery already treats a `running` step as
    /// possibly done, which it is. So the host is never changed without a durable record.
    pub fn must_be_durable_at_once(self) -> bool {
        !matches!(self, Self::Done | Self::Undone)
    }
}

/// Where progress goes: the job store, a log, a test. An error from recording `Started` or
/// `Done` fails the step (we do not act on the host without a record of it).
#[async_trait]
pub trait Progress: Send {
    /// Records `event` for `step`.
    async fn record(&mut self, step: &'static str, event: StepEvent<'_>) -> Result<(), String>;
}

/// Progress that goes nowhere.
pub struct NoProgress;

#[async_trait]
impl Progress for NoProgress {
    async fn record(&mut self, _: &'static str, _: StepEvent<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// A failed create: the step and its error, and whatever the rollback could not undo.
#[derive(Debug)]
pub struct CreateError {
    /// The step that failed.
    pub step: &'static str,
    /// Why.
    pub error: StepError,
    /// Steps whose undo failed, with why; empty when the host is back as it was.
    pub undo_errors: Vec<(&'static str, StepError)>,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} failed: {}", self.step, self.error)?;
        if self.undo_errors.is_empty() {
            write!(f, "; rolled back, nothing left behind")
        } else {
            write!(f, "; rollback incomplete, left behind:")?;
            for (step, e) in &self.undo_errors {
                write!(f, " [{step}: {e}]")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for CreateError {}

/// Applies `steps` in order; on a failure undoes the failed step and the completed ones.
///
/// # Errors
/// [`CreateError`] naming the failed step, with any undo failures.
pub async fn run_steps(
    steps: &[Box<dyn Step>],
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Result<(), CreateError> {
    for (i, step) in steps.iter().enumerate() {
        if let Err(error) = apply_one(step.as_ref(), ctx, progress).await {
            let text = error.to_string();
            tracing::warn!(step = step.name(), error = %text, "step failed, rolling back");
            let _ = progress.record(step.name(), StepEvent::Failed(&text)).await;
            let undo_errors = undo_steps(&steps[..=i], ctx, progress).await;
            return Err(CreateError {
                step: step.name(),
                error,
                undo_errors,
            });
        }
    }
    Ok(())
}

async fn apply_one(
    step: &dyn Step,
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Result<(), StepError> {
    progress
        .record(step.name(), StepEvent::Started)
        .await
        .map_err(StepError::Other)?;
    let started = std::time::Instant::now();
    step.apply(ctx).await?;
    tracing::debug!(
        step = step.name(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "step done"
    );
    progress
        .record(step.name(), StepEvent::Done)
        .await
        .map_err(StepError::Other)
}

/// How many times an undo is tried before its error is reported: right after a crash the host
/// may still be settling (a process we killed still releasing files, a container still
/// stopping), and an undo that fails then may well succeed a moment later.
pub const UNDO_TRIES: u32 = 5;

/// The pause before the second try; it doubles before each next one (100 + 200 + 400 + 800
/// ms: a step is given up on after about 1.5 s).
const UNDO_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Undoes `steps` newest first, never stopping at an error; returns the errors. Each undo is
/// tried up to [`UNDO_TRIES`] times, with a doubling pause in between.
pub async fn undo_steps(
    steps: &[Box<dyn Step>],
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Vec<(&'static str, StepError)> {
    let mut errors = Vec::new();
    for step in steps.iter().rev() {
        let _ = progress.record(step.name(), StepEvent::Undoing).await;
        match undo_one(step.as_ref(), ctx).await {
            Ok(()) => {
                let _ = progress.record(step.name(), StepEvent::Undone).await;
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!(step = step.name(), error = %text, "undo failed");
                let _ = progress
                    .record(step.name(), StepEvent::UndoFailed(&text))
                    .await;
                errors.push((step.name(), e));
            }
        }
    }
    errors
}

async fn undo_one(step: &dyn Step, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
    let mut pause = UNDO_FIRST_PAUSE;
    let mut tries = 1;
    loop {
        match step.undo(ctx).await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= UNDO_TRIES => return Err(e),
            Err(e) => {
                tracing::warn!(step = step.name(), error = %e, tries, "undo failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
