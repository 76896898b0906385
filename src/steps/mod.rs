//! Provisioning as ordered lists of steps, and the runners that go through them.
//!
//! A plan is a list of [`StepName`]s ([`StepName::CREATE`], [`StepName::DESTROY`]); [`step`]
//! is the one place that maps a name to the code that runs it. Each [`Step`] has `apply` and
//! `undo`; undo of something absent succeeds, so undo can run after any partial apply, after a
//! crash, or twice. The runners record each step's progress through [`Progress`] *before*
//! touching the host (so a store always says what may have been done). [`run_steps`] rolls
//! back on failure: it undoes the failed step and every completed one, newest first, going on
//! past undo errors and reporting them all (Incus' `revert`, netavark's teardown).
//! [`run_forward`] does not: a destroy's steps are idempotent and are simply run again.

pub mod container;
pub mod destroy;
pub mod image;
pub mod network;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::images::{ImageError, Images};
use crate::model::ContainerId;
use crate::spec::{CreateSpec, StepEvent, StepName};
use crate::sys::{Host, SysError};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The kernel or LXC refused.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Its progress could not be recorded, so it did not act (or does not count as done).
    #[error(transparent)]
    Progress(#[from] ProgressError),
    /// An image could not be built, cloned from or removed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// It ran past its time limit (`serve --step-timeout`); what it ran was killed.
    #[error("timed out after {}s (serve --step-timeout); its tools were killed", after.as_secs_f64())]
    TimedOut {
        /// The limit it ran out of.
        after: Duration,
    },
    /// Anything else (a missing precondition).
    #[error("{0}")]
    Other(String),
}

impl StepError {
    /// Whether a time limit ended it: the step's own, or its tool's (which `serve` sets to the
    /// same value, so either may fire first).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::TimedOut { .. } | Self::Sys(SysError::TimedOut { .. })
        )
    }
}

/// How long a step (its apply, or one try of its undo) may take unless the engine is told
/// otherwise (`serve --step-timeout`).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// State the steps share while they run.
pub struct StepCtx<'a> {
    /// The host to act on.
    pub host: &'a Host,
    /// The container the steps are about; `None` for an image's steps.
    id: Option<ContainerId>,
    /// The create request, when the steps build a container.
    create: Option<&'a CreateSpec>,
    /// The images, when containers are cloned from them (`None`: `--clone=off`).
    pub images: Option<&'a Images>,
    /// The template whose image an image build makes.
    template: Option<&'a str>,
    /// The LXC name of the image the container is cloned from, once ensured.
    pub image: Option<String>,
    /// PID of the container's init, once started (or found again, for undo after a crash).
    pub pid: Option<u32>,
    /// MTU of the VLAN's bridge, read when the veth is made.
    pub mtu: Option<u32>,
    /// How long one apply, or one try of an undo, may take before it is dropped (which kills
    /// the tool it waits on, with its process group: `sys::process::run`).
    pub limit: Duration,
}

impl<'a> StepCtx<'a> {
    /// A fresh context for creating `spec` on `host`.
    pub fn new(host: &'a Host, spec: &'a CreateSpec) -> Self {
        Self {
            host,
            id: Some(spec.id),
            create: Some(spec),
            images: None,
            template: None,
            image: None,
            pid: None,
            mtu: None,
            limit: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// A fresh context for steps on container `id` that need no create request (destroy).
    pub fn for_container(host: &'a Host, id: ContainerId) -> Self {
        Self {
            host,
            id: Some(id),
            create: None,
            images: None,
            template: None,
            image: None,
            pid: None,
            mtu: None,
            limit: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// A fresh context for building template `template`'s image with `images`.
    pub fn for_image(host: &'a Host, images: &'a Images, template: &'a str) -> Self {
        Self {
            host,
            id: None,
            create: None,
            images: Some(images),
            template: Some(template),
            image: None,
            pid: None,
            mtu: None,
            limit: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// The same context, each step given `limit` instead of [`DEFAULT_STEP_TIMEOUT`].
    pub fn with_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The same context, cloning containers from `images` (`None`: from the template).
    pub fn with_images(mut self, images: Option<&'a Images>) -> Self {
        self.images = images;
        self
    }

    /// The container the steps are about.
    ///
    /// # Errors
    /// For an image's steps, which have none.
    pub fn id(&self) -> Result<ContainerId, StepError> {
        self.id.ok_or_else(|| {
            StepError::Other("this step needs a container and was given none".into())
        })
    }

    /// The template an image build is for.
    ///
    /// # Errors
    /// For a container's steps.
    pub fn template(&self) -> Result<&'a str, StepError> {
        self.template
            .ok_or_else(|| StepError::Other("this step needs a template and was given none".into()))
    }

    /// The create request.
    ///
    /// # Errors
    /// When the steps were not given one (a create step in a destroy's plan).
    pub fn spec(&self) -> Result<&'a CreateSpec, StepError> {
        self.create.ok_or_else(|| {
            StepError::Other("this step needs a create request and was given none".into())
        })
    }

    /// The init PID: remembered from the start step, or found through LXC (after a crash).
    ///
    /// # Errors
    /// When LXC cannot be asked.
    pub async fn running_pid(&mut self) -> Result<Option<u32>, StepError> {
        if self.pid.is_none() {
            let name = self.id()?.container_name();
            self.pid = self.host.lxc.init_pid(&name).await?;
        }
        Ok(self.pid)
    }
}

/// One reversible change to the host.
#[async_trait]
pub trait Step: Send + Sync {
    /// Makes the change.
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError>;
    /// Reverts it; succeeds when there is nothing to revert.
    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError>;
}

/// The code that runs step `name`: the one map from names to steps.
pub fn step(name: StepName) -> &'static dyn Step {
    match name {
        StepName::CreateContainer => &container::CreateContainer,
        StepName::StartContainer => &container::StartContainer,
        StepName::CreateVeth => &network::CreateVeth,
        StepName::ConfigureNetwork => &network::ConfigureNetwork,
        StepName::StopContainer => &destroy::StopContainer,
        StepName::DeleteVeth => &destroy::DeleteVeth,
        StepName::DestroyContainer => &destroy::DestroyContainer,
        StepName::ShutdownContainer => &container::ShutdownContainer,
        StepName::EnsureImage => &image::EnsureImage,
        StepName::BuildImage => &image::BuildImage,
        StepName::RemoveUnusedImages => &image::RemoveUnusedImages,
    }
}

/// Why a progress record was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The daemon is shutting down: no step starts any more.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The record could not be kept.
    #[error("cannot record step {step}: {cause}")]
    NotRecorded {
        /// The step.
        step: StepName,
        /// Why (the store's error).
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where progress goes: the job store, a log, a test. An error from recording `Started` or
/// `Done` fails the step (we do not act on the host without a record of it).
#[async_trait]
pub trait Progress: Send {
    /// Records `event` for `step`.
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError>;
}

/// Progress that goes nowhere.
pub struct NoProgress;

#[async_trait]
impl Progress for NoProgress {
    async fn record(&mut self, _: StepName, _: StepEvent<'_>) -> Result<(), ProgressError> {
        Ok(())
    }
}

/// A failed create: the step and its error, and whatever the rollback could not undo.
#[derive(Debug)]
pub struct CreateError {
    /// The step that failed.
    pub step: StepName,
    /// Why.
    pub error: StepError,
    /// Steps whose undo failed, with why; empty when the host is back as it was.
    pub undo_errors: Vec<(StepName, StepError)>,
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

impl CreateError {
    /// Whether the create stopped because the daemon is shutting down (not a failure).
    pub fn stopped_by_shutdown(&self) -> bool {
        self.error.is_shutdown()
    }
}

impl StepError {
    /// Whether the step was refused because the daemon is shutting down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Self::Progress(ProgressError::ShuttingDown))
    }
}

/// Applies `plan` in order; on a failure undoes the failed step and the completed ones.
///
/// # Errors
/// [`CreateError`] naming the failed step, with any undo failures.
pub async fn run_steps(
    plan: &[StepName],
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Result<(), CreateError> {
    for (i, &name) in plan.iter().enumerate() {
        if let Err(error) = apply_one(name, ctx, progress).await {
            tracing::warn!(step = name.as_str(), error = %error, "step failed, rolling back");
            let undo_errors = undo_steps(&plan[..=i], ctx, progress).await;
            return Err(CreateError {
                step: name,
                error,
                undo_errors,
            });
        }
    }
    Ok(())
}

/// Applies `plan` in order and stops at the first failure, undoing nothing: for plans whose
/// steps are idempotent and are run again rather than reverted (a destroy).
///
/// # Errors
/// The step that failed, and why.
pub async fn run_forward(
    plan: &[StepName],
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Result<(), (StepName, StepError)> {
    for &name in plan {
        if let Err(error) = apply_one(name, ctx, progress).await {
            tracing::warn!(step = name.as_str(), error = %error, "step failed");
            return Err((name, error));
        }
    }
    Ok(())
}

/// Applies one step between its `Started` and `Done` records; a failure is recorded as
/// `Failed`.
async fn apply_one(
    name: StepName,
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Result<(), StepError> {
    progress.record(name, StepEvent::Started).await?;
    let started = std::time::Instant::now();
    if let Err(error) = within_limit(ctx.limit, step(name).apply(ctx)).await {
        let _ = progress
            .record(name, StepEvent::Failed(&error.to_string()))
            .await;
        return Err(error);
    }
    tracing::debug!(
        step = name.as_str(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "step done"
    );
    Ok(progress.record(name, StepEvent::Done).await?)
}

/// Runs `work` (a step's apply or undo) for at most `limit`. A hung tool (a stuck `lxc-start`
/// or `lxc-stop`, issue 17) would otherwise hold the worker, and every job behind it, forever;
/// dropping `work` kills the tool it waits on with its group (`sys::process::run`).
async fn within_limit(
    limit: Duration,
    work: impl std::future::Future<Output = Result<(), StepError>>,
) -> Result<(), StepError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(StepError::TimedOut { after: limit }))
}

/// How many times an undo is tried before its error is reported: right after a crash the host
/// may still be settling (a process we killed still releasing files, a container still
/// stopping), and an undo that fails then may well succeed a moment later.
pub const UNDO_TRIES: u32 = 5;

/// The pause before the second try; it doubles before each next one (100 + 200 + 400 + 800
/// ms: a step is given up on after about 1.5 s).
const UNDO_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Undoes `plan` newest first, never stopping at an error; returns the errors. Each undo is
/// tried up to [`UNDO_TRIES`] times, with a doubling pause in between, unless it timed out.
pub async fn undo_steps(
    plan: &[StepName],
    ctx: &mut StepCtx<'_>,
    progress: &mut dyn Progress,
) -> Vec<(StepName, StepError)> {
    let mut errors = Vec::new();
    for &name in plan.iter().rev() {
        let _ = progress.record(name, StepEvent::Undoing).await;
        match undo_one(name, ctx).await {
            Ok(()) => {
                let _ = progress.record(name, StepEvent::Undone).await;
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!(step = name.as_str(), error = %text, "undo failed");
                let _ = progress.record(name, StepEvent::UndoFailed(&text)).await;
                errors.push((name, e));
            }
        }
    }
    errors
}

async fn undo_one(name: StepName, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
    let mut pause = UNDO_FIRST_PAUSE;
    let mut tries = 1;
    loop {
        let limit = ctx.limit;
        match within_limit(limit, step(name).undo(ctx)).await {
            Ok(()) => return Ok(()),
            // A time-out is not the host settling: trying again would hold the worker for
            // another whole limit, most likely for nothing.
            Err(e) if tries >= UNDO_TRIES || e.is_timeout() => return Err(e),
            Err(e) => {
                tracing::warn!(step = name.as_str(), error = %e, tries, "undo failed; trying again");
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
