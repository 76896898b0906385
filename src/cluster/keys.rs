//! Where cluster mode keeps what in etcd, and the values it stores there (JSON):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `<prefix>/hosts/<host-id>` | [`Member`]: node, underlay address, VLANs, API URL | a lease, kept alive |
//! | `<prefix>/containers/<id>` | [`Reservation`] | until the container is gone |
//! | `<prefix>/addresses/<vlan>/<address>` | the same [`Reservation`] | the same |
//!
//! A container's two keys hold one identical value, so a release can require either key to
//! still hold exactly what this server put there.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{invalid, ContainerId, HostId, InvalidValue, Ipv4Cidr, VlanId};

/// Default cluster name, the first segment of every key.
pub const DEFAULT_CLUSTER: &str = "creepy-meow";

/// A cluster name: letters, digits, `.`, `_`, `-`; it prefixes every key, so servers of two
/// clusters can share one etcd.
///
/// # Errors
/// A sentence naming what is wrong.
pub fn check_cluster_name(name: &str) -> Result<String, InvalidValue> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(invalid(format!(
            "cluster name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(name.to_string())
}

/// The key layout of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The cluster name.
    prefix: String,
}

impl Keys {
    /// The keys of cluster `name` (checked by [`check_cluster_name`]).
    pub fn new(name: &str) -> Self {
        Self {
            prefix: name.to_string(),
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.prefix
    }

    /// Every member's key starts with this.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// Member `host`'s key.
    pub fn host(&self, host: HostId) -> String {
        format!("{}{host}", self.hosts())
    }

    /// Every container reservation starts with this.
    pub fn containers(&self) -> String {
        format!("{}/containers/", self.prefix)
    }

    /// Container `id`'s reservation.
    pub fn container(&self, id: ContainerId) -> String {
        format!("{}{id}", self.containers())
    }

    /// Every address reservation starts with this.
    pub fn addresses(&self) -> String {
        format!("{}/addresses/", self.prefix)
    }

    /// The reservation of `addr` on `vlan` (the address alone: two prefixes of one address
    /// are one machine on the wire).
    pub fn address(&self, vlan: VlanId, addr: Ipv4Addr) -> String {
        format!("{}{vlan}/{addr}", self.addresses())
    }

    /// Both keys of `r`: its container's, then its address's.
    pub fn of(&self, r: &Reservation) -> [String; 2] {
        [self.container(r.id), self.address(r.vlan, r.ip.addr)]
    }
}

/// A live member of the cluster, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its host ID.
    pub host_id: HostId,
    /// Its node UUID, kept in its data directory: tells a restart of the same server from
    /// another server given the same host ID.
    pub node: Uuid,
    /// Its underlay address: where VXLAN reaches it.
    pub underlay: Ipv4Addr,
    /// The VLANs it serves.
    pub vlans: Vec<VlanId>,
    /// Where its API answers.
    pub api_url: String,
    /// When it registered (this lease).
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
}

/// A container's claim on its ID and its `(VLAN, address)`, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The container.
    pub id: ContainerId,
    /// Its VLAN.
    pub vlan: VlanId,
    /// Its address.
    pub ip: Ipv4Cidr,
    /// The server that holds it.
    pub host_id: HostId,
    /// That server's node UUID.
    pub node: Uuid,
}

impl Reservation {
    /// The stored form.
    pub fn to_value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reservation serializes")
    }

    /// Reads a stored value; `None` for one that is not a reservation (never ours to touch).
    pub fn from_value(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

impl Member {
    /// The stored form.
    pub fn to_value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member serializes")
    }

    /// Reads a stored value; `None` for one that is not a member.
    pub fn from_value(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}
