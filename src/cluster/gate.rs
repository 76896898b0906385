//! A create's etcd reservation and its local enqueue run at once (the two durable commits
//! overlap instead of adding up): the local job waits gated (`queue/gate.rs`) until the
//! reservation is known. [`Cluster::accept_create`] is that path; [`Cluster::settle_gates`]
//! settles the gates no request is settling any more — a crash, or a request that went away —
//! by what etcd holds: this server's reservation of the container opens its gate; anything else
//! (nothing, or another server's) removes the job.
//!
//! Why no client is ever misled: a `202` is answered only after the reservation is made, and
//! then the keys are this server's (only this server removes its own, and only for a container
//! with no record), so a restart opens the gate. A refusal (`409`, `503`) is answered only
//! after the job's removal is on disk, so no restart can open it.

use std::sync::Arc;

use super::reserve::Hold;
use super::{Cluster, ClusterError, Reservation};
use crate::queue::{Enqueued, IdempotencyKey, Job, JobRequest, JobStore, QueueError};
use crate::spec::CreateSpec;
use crate::worker::QueueControl;

/// Why a gate a crash left is removed.
const NOT_RESERVED: &str =
    "its cluster reservation was not made before the daemon stopped (its request was never answered 202)";

/// Why a create in cluster mode was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// The cluster refused the reservation.
    Cluster(ClusterError),
    /// The local store refused the create.
    Store(QueueError),
}

/// What settling the gates did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Gates opened: this server holds the reservation.
    pub opened: usize,
    /// Jobs removed: the reservation is not this server's.
    pub removed: usize,
}

impl Cluster {
    /// Reserves `spec` in the cluster while queueing it gated in `store`, then opens the gate
    /// (in the background, waking the worker through `control`: the answer need not wait for
    /// it) or removes the job (before answering).
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store refused the create (the keys this request created
    /// are given back) or could not remove a refused one; [`Refusal::Cluster`] when the
    /// cluster refused it (nothing is left queued).
    pub async fn accept_create(
        self: &Arc<Self>,
        store: &JobStore,
        control: &QueueControl,
        spec: CreateSpec,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, Refusal> {
        let hold = self.begin(&spec).map_err(Refusal::Cluster)?;
        let claim = async {
            crate::testhook::barrier("claim", "create").await;
            hold.claim(&spec).await
        };
        let queued = store.enqueue_create_gated(spec.clone(), key);
        let (claim, queued) = tokio::join!(claim, queued);
        crate::testhook::barrier("reserved", "create").await;
        match (claim, queued) {
            (claim, Err(e)) => {
                if let Ok(hold) = claim {
                    hold.release().await;
                }
                Err(Refusal::Store(e))
            }
            // Also a retry that found the job its idempotency key made, in case a request that
            // went away left it gated (no gate: nothing to do).
            (Ok(hold), Ok(done)) => {
                open_later(store.clone(), done.job.clone(), hold, control.clone());
                Ok(done)
            }
            // A retry's refusal leaves the job its key made to the request that made it.
            (Err(e), Ok(done)) => {
                if !done.replayed {
                    let why = e.to_string();
                    store
                        .refuse_gate(done.job.id, &why)
                        .await
                        .map_err(Refusal::Store)?;
                }
                Err(Refusal::Cluster(e))
            }
        }
    }

    /// Settles every gate in `store` that no request is settling (not in flight): opens the
    /// jobs whose reservation this server holds in etcd, removes the others.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when etcd or the store does not answer (what was settled
    /// stays settled; the rest waits for the next pass).
    pub async fn settle_gates(&self, store: &JobStore) -> Result<Settled, ClusterError> {
        let unavailable = |e: QueueError| ClusterError::Unavailable(format!("job store: {e}"));
        let mut settled = Settled::default();
        for job in store.gated().map_err(unavailable)? {
            let Some(r) = self.reservation_of(&job) else {
                continue;
            };
            let keys = self.keys.of(&r);
            if keys.iter().any(|k| self.is_in_flight(k)) {
                continue;
            }
            let mut ours = true;
            for k in &keys {
                let held = self.kv.get(k).await?;
                let holder = held.and_then(|e| Reservation::from_value(&e.value));
                ours &= holder.is_some_and(|h| same(&h, &r));
            }
            if ours {
                if store.open_gate(&job).await.map_err(unavailable)?.is_some() {
                    tracing::info!(job_id = %job.id, container_id = %r.id, "gated create queued: its reservation is this server's");
                    settled.opened += 1;
                }
            } else if store
                .refuse_gate(job.id, NOT_RESERVED)
                .await
                .map_err(unavailable)?
            {
                settled.removed += 1;
            }
        }
        Ok(settled)
    }

    /// This server's reservation for gated create `job`.
    fn reservation_of(&self, job: &Job) -> Option<Reservation> {
        match &job.request {
            JobRequest::Create(spec) => Some(self.reservation(spec.id, spec.vlan, spec.ip)),
            _ => None,
        }
    }
}

/// Opens `job`'s gate in the background (not before the `202`: the answer waits only for the
/// two commits), wakes the worker, then ends `hold`. A store that cannot write now leaves the
/// gate to the sync's next pass, which opens it from the reservation (kept).
fn open_later(store: JobStore, job: Job, hold: Hold, control: QueueControl) {
    tokio::spawn(async move {
        match store.open_gate(&job).await {
            Ok(Some(_)) => {
                control.wake_worker();
                control.job_changed();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot queue an accepted create now; the next cluster sync will");
            }
        }
        // Out of flight only now: a sync pass meanwhile leaves the gate alone.
        hold.keep();
    });
}

/// Whether `held` is reservation `r` (the same node, container, VLAN and address; the host ID
/// a node had when it reserved does not matter).
fn same(held: &Reservation, r: &Reservation) -> bool {
    (held.node, held.id, held.vlan, held.ip) == (r.node, r.id, r.vlan, r.ip)
}
