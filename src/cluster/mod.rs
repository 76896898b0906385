//! Cluster mode (`serve --etcd`): servers that know each other through etcd.
//!
//! Without `--etcd` none of this runs and a server is alone, as before. With it:
//!
//! - [`membership`]: the server registers `<prefix>/hosts/<host-id>` under a 10 s lease kept
//!   alive; a host ID that a live, different node holds is refused at start;
//! - [`peers`]: it watches the members and keeps each `vxlanV`'s unicast flood entries equal to
//!   the live members that serve VLAN V (no multicast, no `--peers` list);
//! - [`reserve`]: a create reserves its container ID and `(VLAN, address)` cluster-wide in one
//!   etcd transaction, so two servers never accept the same; [`gate`]: the local durable
//!   enqueue runs at the same time, its job held back (gated) until the reservation is made;
//! - [`sync`]: reservations follow the local store: a container that is gone (failed or
//!   cancelled create, finished destroy) gives its keys back, and a full pass at start and
//!   periodically removes keys with no local record (a crash between etcd and sled) and puts
//!   back records with no key. The store itself is the record of what must be released, so a
//!   release that etcd could not take is simply made again by the next pass.
//!
//! etcd being unreachable never stops the local daemon: creates answer `503
//! cluster_unavailable` within [`RESERVE_TIMEOUT`], everything else goes on, and the daemon
//! registers and resyncs by itself when etcd is back. The calls go through [`crate::sys::Kv`],
//! real (etcd) or fake.

pub mod batch;
pub mod gate;
#[cfg(test)]
mod gate_tests;
pub mod keys;
pub mod membership;
pub mod peers;
pub mod reserve;
pub mod sync;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::model::{ContainerId, HostId, Ipv4Cidr, VlanId};
use crate::sys::{Kv, KvError};
pub use keys::{Keys, Member, Reservation, DEFAULT_CLUSTER};

/// A member's lease: it expires this long after its last keep-alive.
pub const LEASE_TTL_SECS: i64 = 10;
/// Time between keep-alives: a third of the lease, so two can be lost.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);
/// The longest a create waits for its reservation before answering 503.
pub const RESERVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The longest any one etcd call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Cluster mode's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// The cluster name, the prefix of every key.
    pub name: String,
    /// Where this server's API answers, as other servers and clients should reach it.
    pub api_url: String,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// etcd did not answer (in time).
    #[error("{0}")]
    Unavailable(String),
    /// Another server holds what was asked for.
    #[error("{0}")]
    Held(String),
    /// This server may not take part: another live node has its host ID.
    #[error("{0}")]
    Refused(String),
}

impl From<KvError> for ClusterError {
    fn from(e: KvError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// How this server stands with the cluster, for `/healthz` and the 503s
/// (`api::cluster::standing_json` gives its JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Registered, lease alive, etcd answering.
    Connected,
    /// Not registered yet (the start's first attempt is under way).
    Joining,
    /// etcd does not answer; the reason.
    Unavailable(String),
    /// Another live node holds this host ID; the sentence saying so.
    Refused(String),
}

impl Standing {
    /// Whether this server is a member in good standing.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected)
    }
}

/// This server's membership in one cluster, shared by the API and the background tasks.
pub struct Cluster {
    /// The store.
    kv: Arc<dyn Kv>,
    /// The key layout.
    keys: Keys,
    /// This server as it registers: node, host ID, underlay, VLANs, API URL.
    me: Member,
    /// The standing (a watch channel for its `send_if_modified`: a change is logged once).
    standing: watch::Sender<Standing>,
    /// Keys a create of this process is between its etcd reservation and its local enqueue:
    /// a sync must not take them for leftovers, and a second create of the same must wait.
    in_flight: Mutex<HashSet<String>>,
    /// The live members as last read, by host ID.
    members: Mutex<BTreeMap<HostId, Member>>,
    /// Creates' first claims, sent to etcd in batches.
    claims: batch::Claims,
}

impl Cluster {
    /// This server (`host_id`, node `node`, underlay `underlay`, serving `vlans`, API at
    /// `api_url`) in cluster `name` on `kv`. Touches nothing until a task runs, but starts the
    /// claims' batcher: call it within a tokio runtime.
    pub fn new(
        kv: Arc<dyn Kv>,
        name: &str,
        host_id: HostId,
        node: Uuid,
        underlay: Ipv4Addr,
        vlans: Vec<VlanId>,
        api_url: String,
    ) -> Self {
        Self {
            claims: batch::Claims::spawn(kv.clone()),
            kv,
            keys: Keys::new(name),
            me: Member {
                host_id,
                node,
                underlay,
                vlans,
                api_url,
                registered_at: time::OffsetDateTime::now_utc(),
            },
            standing: watch::channel(Standing::Joining).0,
            in_flight: Mutex::new(HashSet::new()),
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This server's host ID.
    pub fn host_id(&self) -> HostId {
        self.me.host_id
    }

    /// This server's node UUID.
    pub fn node(&self) -> Uuid {
        self.me.node
    }

    /// The standing now.
    pub fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    /// Sets the standing, logging a change.
    fn set_standing(&self, now: Standing) {
        self.standing.send_if_modified(|was| {
            if *was == now {
                return false;
            }
            match &now {
                Standing::Connected => tracing::info!(cluster = self.keys.name(), host_id = %self.me.host_id, "joined the cluster"),
                Standing::Joining => {}
                Standing::Unavailable(why) => tracing::warn!(cluster = self.keys.name(), reason = %why, "etcd unavailable: creates answer 503 until it is back"),
                Standing::Refused(why) => tracing::error!(cluster = self.keys.name(), reason = %why, "not a member of the cluster"),
            }
            *was = now;
            true
        });
    }

    /// Records that etcd did not answer a call made outside the membership task (a create's
    /// reservation); the next keep-alive that gets through makes it connected again.
    pub fn mark_unavailable(&self, why: &str) {
        if self.standing().is_connected() {
            self.set_standing(Standing::Unavailable(why.to_string()));
        }
    }

    /// The live members as last read.
    pub fn members(&self) -> BTreeMap<HostId, Member> {
        self.members.lock().expect("members").clone()
    }

    /// This server's reservation of container `id` at `ip` on `vlan`.
    pub fn reservation(&self, id: ContainerId, vlan: VlanId, ip: Ipv4Cidr) -> Reservation {
        Reservation {
            id,
            vlan,
            ip,
            host_id: self.me.host_id,
            node: self.me.node,
        }
    }

    /// Every container reservation in the cluster (whichever server holds it).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn reserved(&self) -> Result<Vec<Reservation>, ClusterError> {
        let listing = self.kv.list(&self.keys.containers()).await?;
        Ok(listing
            .entries
            .iter()
            .filter_map(|e| Reservation::from_value(&e.value))
            .collect())
    }
}
