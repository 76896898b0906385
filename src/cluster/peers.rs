//! Automatic peers: each `vxlanV` floods by unicast to exactly the live members that serve
//! VLAN V. The members are read whole (at most 254 keys) whenever etcd reports a change under
//! `<prefix>/hosts/` — a server joining, or one whose lease expired — and every
//! [`RESYNC_EVERY`] besides, which also puts back the entries of a VXLAN device the
//! reconciler had to make anew. While etcd cannot be read the entries stay as they are: a
//! server cut from etcd still reaches the others it knew.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, Member};
use crate::fabric::set_flood_peers;
use crate::model::{HostId, VlanId};
use crate::sys::Netlink;

/// Time between full re-reads of the members when nothing changed.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// Each VLAN `me` serves, with the underlay addresses of the other members that serve it
/// (sorted, without `me` and without members that share `me`'s address).
pub fn peers_by_vlan(
    me: &Member,
    members: &BTreeMap<HostId, Member>,
) -> BTreeMap<VlanId, Vec<Ipv4Addr>> {
    me.vlans
        .iter()
        .map(|&vlan| {
            let mut addrs: Vec<Ipv4Addr> = members
                .values()
                .filter(|m| {
                    m.node != me.node && m.underlay != me.underlay && m.vlans.contains(&vlan)
                })
                .map(|m| m.underlay)
                .collect();
            addrs.sort_unstable();
            addrs.dedup();
            (vlan, addrs)
        })
        .collect()
}

impl Cluster {
    /// Reads the live members; returns them with the revision the read saw.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn read_members(&self) -> Result<(BTreeMap<HostId, Member>, i64), ClusterError> {
        let listing = self.kv.list(&self.keys.hosts()).await?;
        let members = listing
            .entries
            .iter()
            .filter_map(|e| Member::from_value(&e.value))
            .map(|m| (m.host_id, m))
            .collect();
        Ok((members, listing.revision))
    }

    /// Reads the members and sets the flood entries to match; returns the revision read.
    async fn apply_members(&self, nl: &dyn Netlink) -> Result<i64, ClusterError> {
        let (members, revision) = self.read_members().await?;
        let want = peers_by_vlan(&self.me, &members);
        match set_flood_peers(nl, &want).await {
            Ok(actions) => {
                for action in &actions {
                    tracing::info!(%action, "cluster peers");
                }
            }
            // The kernel's refusal is not etcd's fault: logged, tried again at the next change.
            Err(e) => tracing::error!(error = %e, "cannot set the cluster's flood entries"),
        }
        *self.members.lock().expect("members") = members;
        Ok(revision)
    }

    /// Keeps the flood entries equal to the members until `shutdown`.
    pub async fn run_peers(self: Arc<Self>, nl: Arc<dyn Netlink>, shutdown: CancellationToken) {
        loop {
            let wait = match self.apply_members(nl.as_ref()).await {
                Ok(revision) => {
                    let hosts = self.keys.hosts();
                    let changed = self.kv.wait_change(&hosts, revision);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = tokio::time::timeout(RESYNC_EVERY, changed) => match r {
                            Ok(Err(_)) => Duration::from_secs(1),
                            _ => Duration::ZERO,
                        },
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the cluster's members");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
