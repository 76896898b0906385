//! Cluster-wide reservations: a create claims `<prefix>/containers/<id>` and
//! `<prefix>/addresses/<vlan>/<address>` in one etcd transaction, create-if-absent, while the
//! local store queues it gated (`gate.rs`: the worker takes it only once the keys are made).
//! Two servers can therefore never both accept one ID or one `(VLAN, address)`: etcd orders
//! the two transactions and the second finds the keys taken.
//!
//! Keys this server already holds pass (a client's retry with its idempotency key, or a
//! reservation a crash left behind): the local store then decides, as it does
//! without a cluster. Only the keys a request created are given back if its enqueue fails.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Cluster, ClusterError, Reservation, RESERVE_TIMEOUT};
use crate::spec::CreateSpec;
use crate::sys::{KvCond, KvEntry, KvOp, KvTxn};

/// A reservation between etcd and the local enqueue. [`Hold::keep`] once the job is queued,
/// [`Hold::release`] when it was refused; dropped without either (the request went away), its
/// keys are left for the next sync, which gives them back if no record took them.
pub struct Hold {
    /// The cluster.
    cluster: Arc<Cluster>,
    /// Both keys, marked in flight until the hold ends.
    keys: Vec<String>,
    /// The value written.
    value: Vec<u8>,
    /// The keys this request created (not those this server held before).
    created: Vec<String>,
}

impl Hold {
    /// The job is queued: the keys stay.
    pub fn keep(self) {}

    /// The job was not queued: gives back the keys this request created, if they still hold
    /// what it wrote. A failure is left to the next sync.
    pub async fn release(self) {
        if self.created.is_empty() {
            return;
        }
        let when = self
            .created
            .iter()
            .map(|k| KvCond::Equals(k.clone(), self.value.clone()))
            .collect();
        let then = self.created.iter().cloned().map(KvOp::Delete).collect();
        if let Err(e) = self.cluster.kv.txn(when, then).await {
            tracing::warn!(error = %e, keys = ?self.created, "cannot give back a reservation now: the next sync will");
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut in_flight = self.cluster.in_flight.lock().expect("in flight");
        for k in &self.keys {
            in_flight.remove(k);
        }
    }
}

/// The sentence for a key another server holds: `spec`'s container key (`container`), or
/// its address key.
fn held_by(
    key: &str,
    container: bool,
    spec: &CreateSpec,
    holder: Option<&Reservation>,
) -> ClusterError {
    let what = if container {
        format!("container {}", spec.id)
    } else {
        format!("address {} on VLAN {}", spec.ip.addr, spec.vlan)
    };
    ClusterError::Held(match holder {
        Some(r) => format!(
            "{what} is held by host {} (container {}, node {})",
            r.host_id, r.id, r.node
        ),
        None => {
            format!("{what} is held in the cluster by something that is not a reservation ({key})")
        }
    })
}

impl Cluster {
    /// Reserves `spec`'s ID and address for this server, within [`RESERVE_TIMEOUT`]:
    /// [`Self::begin`], then [`Hold::claim`] (the tests' shorthand; a create runs the two
    /// apart, its enqueue beside the claim: `gate.rs`).
    ///
    /// # Errors
    /// As those two.
    #[cfg(test)]
    pub async fn reserve(self: &Arc<Self>, spec: &CreateSpec) -> Result<Hold, ClusterError> {
        self.begin(spec)?.claim(spec).await
    }

    /// Marks `spec`'s keys in flight on this server, before anything else is done for its
    /// create: from then on a second create of the same ID or address here is refused at once,
    /// before it reaches the store or etcd (so one of two local creates wins, never neither).
    ///
    /// # Errors
    /// [`ClusterError::Held`] when a create of the same is being accepted here.
    pub fn begin(self: &Arc<Self>, spec: &CreateSpec) -> Result<Hold, ClusterError> {
        let r = self.reservation(spec.id, spec.vlan, spec.ip);
        let keys = self.keys.of(&r).to_vec();
        {
            let mut in_flight = self.in_flight.lock().expect("in flight");
            if keys.iter().any(|k| in_flight.contains(k)) {
                return Err(ClusterError::Held(format!(
                    "a create of container {} or of address {} on VLAN {} is being accepted on this server",
                    spec.id, spec.ip.addr, spec.vlan
                )));
            }
            in_flight.extend(keys.iter().cloned());
        }
        Ok(Hold {
            cluster: self.clone(),
            keys,
            value: r.to_value(),
            created: Vec::new(),
        })
    }
}

impl Hold {
    /// Claims the keys in etcd, within [`RESERVE_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClusterError::Held`] when another server holds either; [`ClusterError::Unavailable`]
    /// when etcd does not answer in time.
    pub async fn claim(mut self, spec: &CreateSpec) -> Result<Hold, ClusterError> {
        let cluster = self.cluster.clone();
        let claim = cluster.claim(spec, &self.keys, &self.value);
        match tokio::time::timeout(RESERVE_TIMEOUT, claim).await {
            Ok(Ok(created)) => {
                self.created = created;
                Ok(self)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "etcd did not answer within {} ms",
                RESERVE_TIMEOUT.as_millis()
            ))),
        }
    }
}

impl Cluster {
    /// Puts `value` under every key of `keys` (the container's, then the address's:
    /// [`super::Keys::of`]) not held yet, if every held one is this server's; returns the keys
    /// it created.
    async fn claim(
        &self,
        spec: &CreateSpec,
        keys: &[String],
        value: &[u8],
    ) -> Result<Vec<String>, ClusterError> {
        let put = |k: &String| KvOp::Put {
            key: k.clone(),
            value: value.to_vec(),
            lease: 0,
        };
        // The common case, one round trip shared with the creates waiting at the same moment
        // (`batch.rs`): nothing is held.
        let first = KvTxn {
            when: keys.iter().cloned().map(KvCond::Absent).collect(),
            then: keys.iter().map(put).collect(),
        };
        if self.claims.run(first).await? {
            return Ok(keys.to_vec());
        }
        for _ in 0..3 {
            let mut held: Vec<(String, Option<KvEntry>)> = Vec::new();
            for k in keys {
                held.push((k.clone(), self.kv.get(k).await?));
            }
            let mut when = Vec::new();
            let mut created = Vec::new();
            for (k, entry) in &held {
                match entry {
                    None => {
                        when.push(KvCond::Absent(k.clone()));
                        created.push(k.clone());
                    }
                    Some(e) => {
                        let holder = Reservation::from_value(&e.value);
                        if holder.as_ref().map(|r| r.node) != Some(self.me.node) {
                            return Err(held_by(k, k == &keys[0], spec, holder.as_ref()));
                        }
                        when.push(KvCond::Unchanged(k.clone(), e.mod_revision));
                    }
                }
            }
            let then = created.iter().map(put).collect();
            if self.kv.txn(when, then).await? {
                return Ok(created);
            }
        }
        Err(ClusterError::Unavailable(format!(
            "the reservation of container {} kept changing under this create",
            spec.id
        )))
    }

    /// The keys of creates being accepted, now (a snapshot, for a sync pass's ordering).
    pub(super) fn in_flight(&self) -> HashSet<String> {
        self.in_flight.lock().expect("in flight").clone()
    }

    /// Whether a create being accepted holds `key` now.
    pub(super) fn is_in_flight(&self, key: &str) -> bool {
        self.in_flight.lock().expect("in flight").contains(key)
    }
}
