//! Step progress into the job store: every event that announces a change to the host the
//! store must account for is on disk before the runner goes on (see
//! [`StepEvent::must_be_durable_at_once`]), so after a crash the store says what may have
//! been done.

use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::QueueControl;
use crate::metrics::Metrics;
use crate::queue::JobStore;
use crate::spec::{StepEvent, StepName};
use crate::steps::{Progress, ProgressError};
use crate::testhook;

/// Progress of one job, recorded in the store.
pub struct StoreProgress<'a> {
    store: &'a JobStore,
    job: Uuid,
    control: &'a QueueControl,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
    step_started: Option<Instant>,
}

impl<'a> StoreProgress<'a> {
    /// Progress of job `job`.
    pub fn new(
        store: &'a JobStore,
        job: Uuid,
        control: &'a QueueControl,
        metrics: &'a Metrics,
        shutdown: &'a CancellationToken,
    ) -> Self {
        Self {
            store,
            job,
            control,
            metrics,
            shutdown,
            step_started: None,
        }
    }
}

#[async_trait]
impl Progress for StoreProgress<'_> {
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError> {
        if event == StepEvent::Started && self.shutdown.is_cancelled() {
            return Err(ProgressError::ShuttingDown);
        }
        // The crash tests' barriers (see `testhook`): the action is complete, its end is not
        // recorded; the start is on disk, the action not begun.
        if event == StepEvent::Done {
            testhook::barrier("before_done", step.as_str()).await;
        }
        let recording = Instant::now();
        self.store
            .record_step(self.job, step, event)
            .await
            .map_err(|e| ProgressError::NotRecorded {
                step,
                cause: Box::new(e),
            })?;
        tracing::debug!(
            step = step.as_str(),
            ?event,
            record_us = recording.elapsed().as_micros() as u64,
            "step recorded"
        );
        if event == StepEvent::Started {
            testhook::barrier("before_action", step.as_str()).await;
        }
        match event {
            StepEvent::Started => self.step_started = Some(Instant::now()),
            StepEvent::Done => {
                if let Some(t) = self.step_started.take() {
                    tracing::debug!(
                        step = step.as_str(),
                        action_us = t.elapsed().as_micros() as u64,
                        "step applied"
                    );
                    self.metrics
                        .observe_step(step.as_str(), t.elapsed().as_secs_f64());
                }
            }
            _ => {}
        }
        self.control.job_changed();
        Ok(())
    }
}
