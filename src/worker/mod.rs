//! The one worker: takes queued jobs oldest first and runs them through the [`Engine`], one at
//! a time, recording every step in the store before it touches the host.
//!
//! - Pause: between jobs, the worker waits while [`QueueControl`] says paused.
//! - Shutdown: the token is checked before each step; once it fires, the current job's
//!   completed steps are undone and the job is queued again, to resume after restart.
//! - Recovery ([`Worker::recover`]): a job found `running` at start was interrupted by a crash.
//!   A create is rolled back (every step's undo, which is safe on what was never done) and
//!   queued again at its old place; a destroy, idempotent, is simply queued again. A rollback
//!   that fails marks the job `failed` with what was left behind.

mod control;
mod progress;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use control::QueueControl;
use progress::StoreProgress;

use crate::engine::{Engine, EngineError};
use crate::metrics::Metrics;
use crate::queue::{Job, JobRequest, JobStore, QueueError};
use crate::steps::NoProgress;

/// Pause between retries when the store itself fails.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Runs jobs. Owns the receiving side of the queue: there is exactly one.
pub struct Worker {
    /// The jobs.
    pub store: JobStore,
    /// What runs them.
    pub engine: Engine,
    /// Pause and wake signals.
    pub control: QueueControl,
    /// Step timings.
    pub metrics: Arc<Metrics>,
    /// Fires on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Test hook: a pause on both sides of every step's action (see [`STEP_PAUSE_ENV`]).
    pub step_pause: Option<Duration>,
}

/// Environment variable naming milliseconds to pause before and after every step's action.
/// Only for tests that must land a SIGKILL inside a step; never set it in production.
pub const STEP_PAUSE_ENV: &str = "CREEPY_MEOW_TEST_STEP_PAUSE_MS";

/// The step pause asked for by [`STEP_PAUSE_ENV`], if any.
pub fn step_pause_from_env() -> Option<Duration> {
    let ms: u64 = std::env::var(STEP_PAUSE_ENV).ok()?.parse().ok()?;
    tracing::warn!(
        ms,
        "{STEP_PAUSE_ENV} is set: every step is slowed down (test hook)"
    );
    Some(Duration::from_millis(ms))
}

impl Worker {
    /// Reconciles jobs a crash left `running` (see the module doc).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn recover(&self) -> Result<usize, QueueError> {
        let interrupted = self.store.running()?;
        for job in &interrupted {
            tracing::warn!(job_id = %job.id, container_id = %job.container_id, "job was interrupted; reconciling with the host");
            let leftovers = match &job.request {
                JobRequest::Create(spec) => self.engine.roll_back(spec, &mut NoProgress).await,
                JobRequest::Destroy { .. } => Vec::new(),
            };
            if leftovers.is_empty() {
                self.store.requeue_interrupted(job.id).await?;
            } else {
                let text: Vec<String> =
                    leftovers.iter().map(|(s, e)| format!("{s}: {e}")).collect();
                let msg = format!(
                    "interrupted by a crash and the rollback failed: {}",
                    text.join("; ")
                );
                self.store.finish(job.id, Err(msg)).await?;
            }
        }
        Ok(interrupted.len())
    }

    /// Takes and runs jobs until shutdown.
    pub async fn run(self) {
        let mut paused = self.control.paused_rx();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if *paused.borrow_and_update() {
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = self.shutdown.cancelled() => {}
                }
                continue;
            }
            match self.store.next_queued() {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("job", job_id = %job.id, container_id = %job.container_id, kind = ?job.kind);
                    if let Err(e) = self.run_job(job).instrument(span).await {
                        tracing::error!(error = %e, "the store failed while running a job");
                        self.idle(STORE_RETRY).await;
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.control.woken() => {}
                        _ = paused.changed() => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    self.idle(STORE_RETRY).await;
                }
            }
        }
        tracing::info!("worker stopped");
    }

    async fn idle(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    async fn run_job(&self, job: Job) -> Result<(), QueueError> {
        let job = self.store.start(job.id).await?;
        self.control.job_changed();
        tracing::info!("job started");
        let mut progress = StoreProgress::new(
            &self.store,
            job.id,
            &self.control,
            &self.metrics,
            &self.shutdown,
            self.step_pause,
        );
        let outcome = match &job.request {
            JobRequest::Create(spec) => self.engine.create(spec, &mut progress).await,
            JobRequest::Destroy { id } => self
                .engine
                .destroy_recorded(*id, &mut progress)
                .await
                .map(drop),
        };
        // A create stopped by shutdown whose rollback was complete can simply run again later;
        // so can a destroy (every destroy step is idempotent).
        let clean_interrupt = progress.interrupted()
            && match &outcome {
                Err(EngineError::Create(c)) => c.undo_errors.is_empty(),
                Err(_) => true,
                Ok(()) => false,
            };
        let result = outcome.map_err(|e| e.to_string());
        if clean_interrupt {
            tracing::info!("shutting down: job rolled back and queued again");
            self.store.requeue_interrupted(job.id).await?;
        } else {
            match &result {
                Ok(()) => tracing::info!("job succeeded"),
                Err(e) => tracing::warn!(error = %e, "job failed"),
            }
            self.store.finish(job.id, result).await?;
        }
        self.control.job_changed();
        Ok(())
    }
}
