//! Pruning: finished jobs are dropped once older than `keep_for`, and beyond the newest
//! `keep_finished`. Queued and running jobs are never touched, and neither are container
//! records (only queued and running jobs hold one).
//!
//! Events go with the jobs: every event older than the first event of the oldest job kept is
//! deleted (when no job is kept, every event older than `keep_for`).
//!
//! A prune is not flushed: a prune lost in a crash is simply done again.

use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::{Inner, JobStore};
use super::QueueError;

/// Jobs deleted per transaction, so a large prune never holds sled's transaction lock long.
const PRUNE_CHUNK: usize = 256;

impl JobStore {
    /// Deletes finished jobs older than `keep_for` and beyond the newest `keep_finished`.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn prune(&self) -> Result<usize, QueueError> {
        self.prune_at(OffsetDateTime::now_utc())
    }

    /// [`Self::prune`] as if the time were `now`.
    pub(super) fn prune_at(&self, now: OffsetDateTime) -> Result<usize, QueueError> {
        let opts = &self.inner.opts;
        let cutoff = time::Duration::try_from(opts.keep_for)
            .ok()
            .and_then(|d| now.checked_sub(d));
        // Finished jobs, oldest first, with when they ended.
        let mut finished: Vec<(Uuid, OffsetDateTime)> = Vec::new();
        for stored in self.trees()?.jobs_in_order(false) {
            let stored = stored?;
            let head = stored.head()?;
            if head.state.is_terminal() {
                finished.push((stored.id, head.finished_at.unwrap_or(head.created_at)));
            }
        }
        let excess = finished.len().saturating_sub(opts.keep_finished);
        let doomed: Vec<Uuid> = finished
            .iter()
            .enumerate()
            .filter(|(i, (_, ended))| *i < excess || cutoff.is_some_and(|c| *ended < c))
            .map(|(_, (id, _))| *id)
            .collect();
        let mut deleted = 0;
        for chunk in doomed.chunks(PRUNE_CHUNK) {
            deleted += self.transact(|tx| {
                let mut n = 0;
                for id in chunk {
                    // Finished jobs never change state, but check inside the transaction all
                    // the same: a queued or running job must never be lost.
                    match tx.find_job(*id)? {
                        Some(job) if job.state.is_terminal() => {
                            tx.remove_job(&job)?;
                            n += 1;
                        }
                        _ => {}
                    }
                }
                Ok(n)
            })?;
        }
        self.prune_events(cutoff)?;
        Ok(deleted)
    }

    /// Deletes the events older than the oldest job kept, or, when no job is kept, those
    /// committed before `cutoff`.
    fn prune_events(&self, cutoff: Option<OffsetDateTime>) -> Result<(), QueueError> {
        let trees = self.trees()?;
        let mut oldest_job_event = None;
        for stored in trees.jobs_in_order(false) {
            if let Some(first) = stored?.job()?.first_event {
                oldest_job_event = Some(first);
                break;
            }
        }
        loop {
            let chunk = trees.events_between(0, u64::MAX, PRUNE_CHUNK)?;
            let doomed: Vec<u64> = match (oldest_job_event, cutoff) {
                (Some(floor), _) => chunk.iter().map(|e| e.seq).filter(|s| *s < floor).collect(),
                (None, Some(cutoff)) => {
                    let mut old = Vec::new();
                    for e in &chunk {
                        let head = e.head().map_err(|why| {
                            QueueError::Corrupt(format!("event {} does not decode: {why}", e.seq))
                        })?;
                        if head.at >= cutoff {
                            break;
                        }
                        old.push(e.seq);
                    }
                    old
                }
                (None, None) => Vec::new(),
            };
            if doomed.is_empty() {
                return Ok(());
            }
            self.transact(|tx| doomed.iter().try_for_each(|seq| tx.remove_event(*seq)))?;
            if doomed.len() < chunk.len() {
                return Ok(());
            }
        }
    }

    /// Prunes every `every` on the blocking pool until `shutdown` fires or the store is
    /// closed. The task holds no reference to the store between prunes, so it never keeps the
    /// database open. Join the returned handle at shutdown: it ends once a prune under way
    /// has finished.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn_pruner(&self, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let store = JobStore { inner };
                match tokio::task::spawn_blocking(move || store.prune()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(jobs = n, "pruned finished jobs"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune finished jobs"),
                    Err(e) => tracing::error!(error = %e, "the prune task failed"),
                }
            }
        })
    }
}
