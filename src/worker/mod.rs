//! The one worker: takes queued jobs oldest first and runs them through the [`Engine`], one at
//! a time, recording every step in the store before it touches the host.
//!
//! - Pause: between jobs, the worker waits while [`QueueControl`] says paused.
//! - Shutdown: the token is checked before each step; once it fires, the current job's
//!   completed steps are undone and the job is queued again, to resume after restart.
//! - Recovery ([`Worker::recover`]): a job found `running` at start was interrupted by a crash.
//!   A create is rolled back (every step's undo, which is safe on what was never done) and
//!   queued again at its old place; a destroy, idempotent, is simply queued again. A rollback
//!   that fails marks the job `failed` with what was left behind. The same runs when the store
//!   failed under a job (a full disk), once it writes again.

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
use crate::spec::{StepEvent, StepName};
use crate::steps::{Progress, ProgressError};
use crate::sys::process::owned_by;
use crate::testhook;

/// Pause between retries when the store itself fails.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Undo progress of recovery: recorded nowhere (the job is queued again or failed as a
/// whole afterwards), but a crash test can stop the daemon before each undo.
struct RecoveryProgress;

#[async_trait::async_trait]
impl Progress for RecoveryProgress {
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError> {
        if event == StepEvent::Undoing {
            testhook::barrier("recovery_undo", step.as_str()).await;
        }
        Ok(())
    }
}

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
}

impl Worker {
    /// Reconciles jobs a crash left `running` (see the module doc).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn recover(&self) -> Result<usize, QueueError> {
        let interrupted = self.store.running()?;
        for job in &interrupted {
            tracing::warn!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), "job was interrupted; reconciling with the host");
            let leftovers = owned_by(job.id, self.undo_interrupted(job)).await;
            if leftovers.is_empty() {
                self.store.requeue_interrupted(job.id).await?;
            } else {
                let msg = format!(
                    "interrupted by a crash and the rollback failed: {}",
                    leftovers.join("; ")
                );
                self.store.fail_leaving_host(job.id, msg).await?;
            }
        }
        Ok(interrupted.len())
    }

    /// Stops whatever the crashed run of `job` left running, then undoes what it may have
    /// done; returns what could not be undone.
    async fn undo_interrupted(&self, job: &Job) -> Vec<String> {
        // Nothing may act on the host while we undo: a tool's children (a template still
        // writing the rootfs) outlive the daemon that started them.
        if let Err(e) = self.engine.stop_leftover_tools(job.id).await {
            return vec![e.to_string()];
        }
        let undo_errors = match (&job.request, job.request.spec()) {
            (JobRequest::BuildImage { template }, _) => {
                self.engine
                    .roll_back_image(template, &mut RecoveryProgress)
                    .await
            }
            (_, Some(spec)) if job.kind.rolls_back() => {
                self.engine
                    .roll_back(job.request.step_names(), spec, &mut RecoveryProgress)
                    .await
            }
            // The others' steps are idempotent: the job simply runs again.
            _ => Vec::new(),
        };
        undo_errors
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect()
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
                    let span = tracing::info_span!("job", job_id = %job.id, container_id = job.container_id.map(tracing::field::display), kind = ?job.kind);
                    if let Err(e) = self.run_job(job).instrument(span.clone()).await {
                        tracing::error!(error = %e, "the store failed while running a job");
                        self.recover_after_store_failure().instrument(span).await;
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

    /// After the store failed under a running job: the job's records may be older than what
    /// was done on the host (the store reopened sled, dropping what was not on disk), exactly
    /// as after a crash. So once the store writes again, the job is reconciled as recovery at
    /// start would: rolled back and queued again, or failed with what was left behind.
    async fn recover_after_store_failure(&self) {
        tokio::select! {
            () = self.store.writable() => {}
            _ = self.shutdown.cancelled() => return,
        }
        match self.recover().await {
            Ok(n) => tracing::warn!(jobs = n, "reconciled the jobs a storage fault interrupted"),
            Err(e) => {
                tracing::error!(error = %e, "cannot reconcile after a storage fault; retrying");
                self.idle(STORE_RETRY).await;
            }
        }
    }

    async fn idle(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Runs `job`'s steps on the host through the engine.
    async fn execute(
        &self,
        job: &Job,
        progress: &mut StoreProgress<'_>,
    ) -> Result<(), EngineError> {
        let (plan, roll_back) = (job.request.step_names(), job.kind.rolls_back());
        match &job.request {
            JobRequest::Create(spec) => self.engine.create(spec, progress).await,
            JobRequest::Destroy { id, .. } => {
                self.engine.destroy_recorded(*id, progress).await.map(drop)
            }
            JobRequest::BuildImage { template } => {
                self.engine.build_image(template, progress).await
            }
            JobRequest::Start(spec)
            | JobRequest::Stop(spec)
            | JobRequest::Restart(spec)
            | JobRequest::Repair(spec) => {
                self.engine.run_plan(plan, spec, roll_back, progress).await
            }
        }
    }

    pub(crate) async fn run_job(&self, job: Job) -> Result<(), QueueError> {
        let job = self.store.start(job.id).await?;
        self.control.job_changed();
        tracing::info!("job started");
        let mut progress = StoreProgress::new(
            &self.store,
            job.id,
            &self.control,
            &self.metrics,
            &self.shutdown,
        );
        let outcome = owned_by(job.id, self.execute(&job, &mut progress)).await;
        // A create stopped by shutdown whose rollback was complete can simply run again later;
        // so can a destroy (every destroy step is idempotent).
        let clean_interrupt = match &outcome {
            Err(EngineError::Create(c)) => c.stopped_by_shutdown() && c.undo_errors.is_empty(),
            Err(e) => e.stopped_by_shutdown(),
            Ok(()) => false,
        };
        let left_behind =
            matches!(&outcome, Err(EngineError::Create(c)) if !c.undo_errors.is_empty());
        if clean_interrupt {
            tracing::info!("shutting down: job rolled back and queued again");
            self.store.requeue_interrupted(job.id).await?;
            self.control.job_changed();
            return Ok(());
        }
        testhook::barrier("before_finish", job.kind.as_str()).await;
        match outcome.map_err(|e| e.to_string()) {
            Ok(()) => {
                tracing::info!("job succeeded");
                self.store.finish(job.id, Ok(())).await?;
            }
            Err(e) if left_behind => {
                tracing::error!(error = %e, "job failed and left something on the host");
                self.store.fail_leaving_host(job.id, e).await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "job failed");
                self.store.finish(job.id, Err(e)).await?;
            }
        }
        self.control.job_changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
