//! Reconciliation: the store's container records are the desired state, and a pass brings the
//! host in line with them — at start (after interrupted jobs are recovered, before new jobs
//! are taken), every `--reconcile-interval` seconds, and on `POST /api/reconcile`.
//!
//! A pass ensures the fabric first, then reads the host once (`view.rs`: no process is
//! started, and nothing read grows with the processes on the host), classifies every record not
//! held by a job (`classify.rs`, pure), and repairs drift through jobs that show in
//! `/api/jobs` like any other, queued behind every job an operator asked for. It never
//! recreates a container whose rootfs is gone (the record becomes `missing`), never touches a
//! container or `vethc_*` link it has no record of (reported as foreign), and never stops a
//! container that runs against its desired state (reported). Each drift found and each change
//! of a container's health since the pass before is written as an event (`GET /api/events`).

pub mod classify;
mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fabric::{ensure_fabric, FabricConfig, FabricError};
use crate::metrics::Metrics;
use crate::model::ContainerId;
use crate::queue::{ContainerRecord, ContainerRecordState, Event, JobStore, Origin, QueueError};
use crate::sys::{Host, LinkState, SysError};
use crate::worker::QueueControl;
use classify::{classify, Drift, Health, Observed};
use view::HostView;

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store.
    #[error(transparent)]
    Store(#[from] QueueError),
    /// The host could not be read.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The fabric could not be ensured.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
}

/// What one pass found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Records checked against the host.
    pub checked: usize,
    /// Fabric repairs made first (a bridge or VXLAN port that was gone), in words.
    pub fabric_repaired: Vec<String>,
    /// Every drift found, with the job that repairs it.
    pub drift: Vec<Finding>,
    /// What the daemon has no record of, left untouched.
    pub foreign: Foreign,
    /// The health of every record checked, by container ID.
    #[serde(skip)]
    pub health: BTreeMap<ContainerId, Health>,
}

/// One drift.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The container.
    pub container_id: ContainerId,
    /// What drifted.
    pub drift: Drift,
    /// Its health, with what is wrong.
    #[serde(flatten)]
    pub health: Health,
    /// The job queued to repair it.
    pub job_id: Option<Uuid>,
    /// Why no job could be queued, if one should have been.
    pub error: Option<String>,
}

/// Containers and links the daemon never made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Foreign {
    /// LXC containers in the daemon's LXC path without a record.
    pub containers: Vec<String>,
    /// `vethc_*` links without a record.
    pub links: Vec<String>,
}

/// Runs reconcile passes, one at a time, and keeps the last report.
pub struct Reconciler {
    /// The records.
    pub store: JobStore,
    /// The host.
    pub host: Host,
    /// The fabric to ensure.
    pub fabric: FabricConfig,
    /// Wakes the worker for the repairs.
    pub control: QueueControl,
    /// Drift and repair counters.
    pub metrics: Arc<Metrics>,
    /// One pass at a time.
    pub running: tokio::sync::Mutex<()>,
    /// The last pass's report.
    pub last: Mutex<Option<Arc<Report>>>,
}

impl Reconciler {
    /// A reconciler with no pass run yet.
    pub fn new(
        store: JobStore,
        host: Host,
        fabric: FabricConfig,
        control: QueueControl,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            host,
            fabric,
            control,
            metrics,
            running: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    /// The last pass's report, if a pass ran.
    pub fn last(&self) -> Option<Arc<Report>> {
        lock(&self.last).clone()
    }

    /// Runs one pass (see the module doc) and returns its report.
    ///
    /// # Errors
    /// When the store or the host cannot be read, or the fabric cannot be ensured.
    pub async fn pass(&self) -> Result<Arc<Report>, ReconcileError> {
        let _one = self.running.lock().await;
        let started_at = OffsetDateTime::now_utc();
        let started = std::time::Instant::now();
        let fabric_repaired = self.ensure_fabric().await?;
        let fabric_done = std::time::Instant::now();
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.records())
            .await
            .map_err(|e| QueueError::Storage(format!("reading the records failed: {e}")))??;
        let records_done = std::time::Instant::now();
        let view = HostView::read(&self.host, &self.fabric.vlans, &records).await?;
        let read_done = std::time::Instant::now();
        let mut report = Report {
            started_at,
            finished_at: started_at,
            checked: 0,
            fabric_repaired,
            drift: Vec::new(),
            foreign: view.foreign(&records),
            health: BTreeMap::new(),
        };
        let drifted = judge(&records, &view, &mut report);
        // Queued together, the repairs share the store's group commits (one disk sync for a
        // restore's hundred starts, not one each), in the order of the records.
        let acts = drifted
            .into_iter()
            .map(|(rec, drift, health)| self.act(rec, drift, health));
        report.drift = futures::future::join_all(acts).await;
        tracing::debug!(
            fabric_us = (fabric_done - started).as_micros() as u64,
            records_us = (records_done - fabric_done).as_micros() as u64,
            host_us = (read_done - records_done).as_micros() as u64,
            classify_and_queue_us = read_done.elapsed().as_micros() as u64,
            "reconcile pass timing"
        );
        for name in report
            .foreign
            .containers
            .iter()
            .chain(&report.foreign.links)
        {
            tracing::warn!(name, "reconcile: foreign to this daemon; left untouched");
        }
        report.finished_at = OffsetDateTime::now_utc();
        let events = observations(self.last().as_deref(), &report);
        if let Err(e) = self.store.record_observations(events).await {
            tracing::warn!(error = %e, "reconcile: cannot record the pass's findings as events");
        }
        let report = Arc::new(report);
        *lock(&self.last) = Some(Arc::clone(&report));
        Ok(report)
    }

    /// Ensures the fabric, and logs and counts each repair made, in words.
    async fn ensure_fabric(&self) -> Result<Vec<String>, ReconcileError> {
        let repaired: Vec<String> = ensure_fabric(self.host.net.as_ref(), &self.fabric)
            .await?
            .actions
            .iter()
            .map(ToString::to_string)
            .collect();
        for action in &repaired {
            tracing::warn!(%action, "reconcile: the fabric had drifted; repaired");
            self.metrics.observe_drift("fabric");
        }
        Ok(repaired)
    }

    /// What the host shows of `rec` right now, its health, and its host veth: for `info`.
    /// Reads only what concerns `rec` (`HostView::read_one`); starts no process.
    ///
    /// # Errors
    /// When the host cannot be read.
    pub async fn inspect(
        &self,
        rec: &ContainerRecord,
    ) -> Result<(Observed, Health, Option<LinkState>), ReconcileError> {
        let view = HostView::read_one(&self.host, rec).await?;
        let (obs, _) = view.observe(rec);
        let (health, _) = classify(rec, &obs);
        Ok((obs, health, view.veth(rec).cloned()))
    }

    /// Logs and counts `drift` of `rec`, and queues its repair.
    async fn act(&self, rec: &ContainerRecord, drift: Drift, health: Health) -> Finding {
        let problems = match &health {
            Health::Degraded(p) => p.join("; "),
            other => other.as_str().to_string(),
        };
        tracing::warn!(container_id = %rec.id, drift = drift.as_str(), %problems, "reconcile: drift found");
        self.metrics.observe_drift(drift.as_str());
        let mut finding = Finding {
            container_id: rec.id,
            drift,
            health,
            job_id: None,
            error: None,
        };
        let queued = match drift.repair() {
            Some(op) => self
                .store
                .enqueue_lifecycle(rec.id, op, Origin::Reconcile)
                .await
                .map(|job| Some(job.id)),
            None if drift == Drift::Missing => self.store.mark_missing(rec.id).await.map(|_| None),
            None => Ok(None),
        };
        match queued {
            Ok(Some(job)) => {
                self.metrics.observe_repair(drift.as_str());
                self.control.wake_worker();
                self.control.job_changed();
                finding.job_id = Some(job);
            }
            Ok(None) => {}
            Err(e) => finding.error = Some(e.to_string()),
        }
        finding
    }

    /// Runs a pass every `every` until `shutdown` (none when `every` is zero).
    pub fn spawn_loop(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if every.is_zero() {
            return None;
        }
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.cancelled() => return,
                }
                if let Err(e) = me.pass().await {
                    tracing::error!(error = %e, "reconcile pass failed");
                }
            }
        }))
    }
}

/// Locks `m`, whatever a panicking holder left (the data is replaced whole, never half-made).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Classifies every checkable record against `view` into `report` (checked, health), and
/// returns those that drifted. Those LXC is starting or stopping are left to the next pass
/// (`HostView::observe`).
fn judge<'r>(
    records: &'r [ContainerRecord],
    view: &HostView,
    report: &mut Report,
) -> Vec<(&'r ContainerRecord, Drift, Health)> {
    let mut drifted = Vec::new();
    for rec in records.iter().filter(|r| checkable(r)) {
        let (obs, settled) = view.observe(rec);
        if !settled {
            continue;
        }
        let (health, drift) = classify(rec, &obs);
        report.checked += 1;
        report.health.insert(rec.id, health.clone());
        if let Some(drift) = drift {
            drifted.push((rec, drift, health));
        }
    }
    drifted
}

/// The events a pass makes: one per drift found, and one per container whose health changed
/// since the pass before (at the first pass of a daemon, each that is not `ok`).
fn observations(before: Option<&Report>, now: &Report) -> Vec<Event> {
    let mut events: Vec<Event> = now
        .drift
        .iter()
        .map(|f| Event::drift(f.container_id, f.drift.as_str(), f.job_id, f.error.clone()))
        .collect();
    for (id, health) in &now.health {
        let changed = match before {
            Some(b) => b.health.get(id) != Some(health),
            None => *health != Health::Ok,
        };
        if changed {
            let detail = match health {
                Health::Degraded(problems) => Some(problems.join("; ")),
                _ => None,
            };
            events.push(Event::health(*id, health.as_str(), detail));
        }
    }
    events
}

/// Whether a pass checks `rec`: in service (or already known missing), and no job holds it.
fn checkable(rec: &ContainerRecord) -> bool {
    rec.job_id.is_none()
        && matches!(
            rec.state,
            ContainerRecordState::Active | ContainerRecordState::Missing
        )
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod inspect_tests;
