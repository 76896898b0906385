//! The store's operations after enqueue: the worker's (start, record, finish, requeue), the
//! API's (cancel, reads), and pruning.

use super::*;

impl JobStore {
    /// Changes one job in a transaction (with the ledger when `settle` says so), durably.
    async fn update(
        &self,
        id: Uuid,
        f: impl Fn(&mut Job, Tx<'_>, Tx<'_>, Tx<'_>, Tx<'_>) -> Result<(), Abort>,
    ) -> Result<Job, QueueError> {
        let job = self.transact(|jobs, pending, containers, addrs, meta| {
            let mut job = tx_job(jobs, id)?;
            f(&mut job, pending, containers, addrs, meta)?;
            jobs.insert(id.as_bytes(), enc(&job))?;
            Ok(job)
        })?;
        self.durable().await?;
        Ok(job)
    }

    /// Oldest queued job, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn next_queued(&self) -> Result<Option<Job>, QueueError> {
        let Some(entry) = self
            .inner
            .pending
            .first()
            .map_err(storage("read the queue"))?
        else {
            return Ok(None);
        };
        let id = Uuid::from_slice(&entry.1)
            .map_err(|e| QueueError::Corrupt(format!("queue entry: {e}")))?;
        self.get(id)
    }

    /// queued → running: the worker takes the job.
    ///
    /// # Errors
    /// When the job is not queued or the store fails.
    pub async fn start(&self, id: Uuid) -> Result<Job, QueueError> {
        self.update(id, |job, pending, _, _, meta| {
            tx_transition(job, JobState::Running)?;
            pending.remove(&job.seq.to_be_bytes())?;
            tx_counter(meta, "queued", -1)?;
            job.attempts += 1;
            job.started_at = Some(OffsetDateTime::now_utc());
            Ok(())
        })
        .await
    }

    /// Records a step event; durable before it returns (the worker acts only after).
    ///
    /// # Errors
    /// When the job is unknown or the store fails.
    pub async fn record_step(
        &self,
        id: Uuid,
        step: &str,
        event: StepEvent<'_>,
    ) -> Result<(), QueueError> {
        let step = step.to_string();
        let event = owned_event(event);
        self.update(id, |job, _, _, _, _| {
            job.apply_step_event(&step, borrowed_event(&event));
            Ok(())
        })
        .await
        .map(drop)
    }

    /// running → succeeded/failed, with the reservation outcome, in one transaction.
    ///
    /// # Errors
    /// When the job is not running or the store fails.
    pub async fn finish(&self, id: Uuid, result: Result<(), String>) -> Result<Job, QueueError> {
        self.update(id, |job, _, containers, addrs, _| {
            let ok = result.is_ok();
            tx_transition(
                job,
                if ok {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                },
            )?;
            job.error = result.clone().err();
            job.finished_at = Some(OffsetDateTime::now_utc());
            tx_settle(containers, addrs, job, ok)
        })
        .await
    }

    /// running → queued for a job interrupted by a crash or shutdown, at its original place in
    /// the queue, its steps reset.
    ///
    /// # Errors
    /// When the job is not running or the store fails.
    pub async fn requeue_interrupted(&self, id: Uuid) -> Result<Job, QueueError> {
        self.update(id, |job, pending, _, _, meta| {
            tx_transition(job, JobState::Queued)?;
            job.reset_steps();
            job.started_at = None;
            pending.insert(&job.seq.to_be_bytes(), job.id.as_bytes())?;
            tx_counter(meta, "queued", 1)?;
            Ok(())
        })
        .await
    }

    /// queued → cancelled, releasing the reservations.
    ///
    /// # Errors
    /// [`QueueError::NotCancellable`] once started, [`QueueError::NotFound`].
    pub async fn cancel(&self, id: Uuid) -> Result<Job, QueueError> {
        self.update(id, |job, pending, containers, addrs, meta| {
            if job.state != JobState::Queued {
                return Err(abort(QueueError::NotCancellable { state: job.state }));
            }
            tx_transition(job, JobState::Cancelled)?;
            pending.remove(&job.seq.to_be_bytes())?;
            tx_counter(meta, "queued", -1)?;
            job.finished_at = Some(OffsetDateTime::now_utc());
            tx_settle(containers, addrs, job, false)
        })
        .await
    }

    /// One job.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn get(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        match self
            .inner
            .jobs
            .get(id.as_bytes())
            .map_err(storage("read a job"))?
        {
            None => Ok(None),
            Some(v) => dec(&format!("job {id}"), &v).map(Some),
        }
    }

    fn all_jobs(&self) -> impl Iterator<Item = Result<Job, QueueError>> + '_ {
        self.inner.jobs.iter().map(|r| {
            let (k, v) = r.map_err(storage("read jobs"))?;
            dec(&format!("job record {}", hex(&k)), &v)
        })
    }

    /// Jobs, newest first, optionally only in one state.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let mut jobs: Vec<Job> = self
            .all_jobs()
            .filter(|j| {
                j.as_ref()
                    .map_or(true, |j| state.is_none_or(|s| j.state == s))
            })
            .collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| std::cmp::Reverse(j.seq));
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// Jobs left `running` (after a crash, all of them were interrupted).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn running(&self) -> Result<Vec<Job>, QueueError> {
        let mut jobs = self.list(Some(JobState::Running), usize::MAX)?;
        jobs.reverse();
        Ok(jobs)
    }

    /// Jobs waiting.
    pub fn queued_count(&self) -> usize {
        self.inner.pending.len()
    }

    /// Jobs by state.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn counts_by_state(&self) -> Result<BTreeMap<JobState, usize>, QueueError> {
        let mut counts = BTreeMap::new();
        for job in self.all_jobs() {
            *counts.entry(job?.state).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Every container in the ledger, by ID.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, QueueError> {
        self.inner
            .containers
            .iter()
            .map(|r| {
                let (_, v) = r.map_err(storage("read containers"))?;
                dec("container record", &v)
            })
            .collect()
    }

    /// One container of the ledger.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn container(&self, id: ContainerId) -> Result<Option<ContainerRecord>, QueueError> {
        match self
            .inner
            .containers
            .get(id_key(id))
            .map_err(storage("read a container"))?
        {
            None => Ok(None),
            Some(v) => dec(&format!("container record {id}"), &v).map(Some),
        }
    }

    /// Deletes finished jobs older than `keep_for` or beyond the newest `keep_finished`;
    /// never a queued or running one. Returns how many went.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune(&self) -> Result<usize, QueueError> {
        let opts = &self.inner.opts;
        let cutoff = OffsetDateTime::now_utc() - opts.keep_for;
        let mut finished: Vec<Job> = self
            .all_jobs()
            .filter(|j| j.as_ref().map_or(true, |j| j.state.is_terminal()))
            .collect::<Result<_, _>>()?;
        finished.sort_by_key(|j| std::cmp::Reverse(j.seq));
        let doomed: Vec<Uuid> = finished
            .iter()
            .enumerate()
            .filter(|(i, j)| *i >= opts.keep_finished || j.finished_at.is_some_and(|t| t < cutoff))
            .map(|(_, j)| j.id)
            .collect();
        for id in &doomed {
            self.inner
                .jobs
                .remove(id.as_bytes())
                .map_err(storage("prune jobs"))?;
        }
        Ok(doomed.len())
    }

    /// Prunes every `every` on the blocking pool until `shutdown`.
    pub fn spawn_pruner(&self, every: Duration, shutdown: CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.cancelled() => return,
                }
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.prune()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "pruned finished jobs"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed"),
                    _ => {}
                }
            }
        });
    }
}

/// A step event that owns its text, to be replayed if sled retries the transaction.
enum OwnedEvent {
    Plain(StepEvent<'static>),
    Failed(String),
    UndoFailed(String),
}

fn owned_event(e: StepEvent<'_>) -> OwnedEvent {
    match e {
        StepEvent::Started => OwnedEvent::Plain(StepEvent::Started),
        StepEvent::Done => OwnedEvent::Plain(StepEvent::Done),
        StepEvent::Undoing => OwnedEvent::Plain(StepEvent::Undoing),
        StepEvent::Undone => OwnedEvent::Plain(StepEvent::Undone),
        StepEvent::Failed(t) => OwnedEvent::Failed(t.into()),
        StepEvent::UndoFailed(t) => OwnedEvent::UndoFailed(t.into()),
    }
}

fn borrowed_event(e: &OwnedEvent) -> StepEvent<'_> {
    match e {
        OwnedEvent::Plain(p) => *p,
        OwnedEvent::Failed(t) => StepEvent::Failed(t),
        OwnedEvent::UndoFailed(t) => StepEvent::UndoFailed(t),
    }
}
