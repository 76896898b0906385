//! The host fabric: per VLAN V, `vxlanV` (VNI V, UDP 4789, on the underlay) as the one uplink
//! port of bridge `brV`, which carries the host address `192.168.V.N/24`. `vxlanV` floods
//! broadcast and unknown frames to multicast group 239.0.0.V, or, with peers, by unicast to
//! each other server ([`peers`]).
//!
//! [`plan`] compares what the kernel shows with what the configuration wants and returns the
//! [`action`]s that close the gap (nothing, on a correct fabric); [`apply`] runs them through
//! [`crate::sys::Netlink`]. Splitting the two keeps the decisions testable without a kernel.

pub mod action;
pub mod apply;
pub mod peers;
pub mod plan;

use std::net::Ipv4Addr;

use crate::model::{HostId, VlanId};
use crate::sys::SysError;

pub use apply::{ensure_fabric, remove_fabric, resolve_flooding_of, set_flood_peers, Ensured};
pub use peers::{FabricMode, Flooding};
pub use plan::{plan_removal, plan_setup, Action};

/// IANA's VXLAN port. The kernel's default, 8472, predates the RFC and does not talk to other
/// implementations (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;

/// Bytes VXLAN adds over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Smallest overlay MTU we accept (RFC 791: every IPv4 host must accept 576-byte datagrams).
pub const MIN_MTU: u32 = 576;

/// What the fabric of one server must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricConfig {
    /// This server's ID, the last byte of its bridge addresses.
    pub host_id: HostId,
    /// The device VXLAN traffic leaves by.
    pub underlay: String,
    /// VLANs served, in order.
    pub vlans: Vec<VlanId>,
    /// Overlay MTU; `None` means the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: Option<u32>,
    /// The other servers' underlay addresses (checked: [`peers::check_peers`]); empty means
    /// multicast flooding. This server's own address may be among them: it is skipped.
    pub peers: Vec<Ipv4Addr>,
    /// Cluster mode: the peers come from the cluster's members (`crate::cluster::peers`), so
    /// the VXLAN devices flood by unicast even while no peer is known, and their flood entries
    /// are left to the cluster's sync ([`apply::set_flood_peers`]) rather than planned here.
    pub cluster_peers: bool,
}

impl FabricConfig {
    /// How the VXLAN devices flood, as configured.
    pub fn mode(&self) -> FabricMode {
        if self.peers.is_empty() && !self.cluster_peers {
            FabricMode::Multicast
        } else {
            FabricMode::Unicast
        }
    }
}

/// Why the fabric could not be built or removed.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// The configuration cannot work on this host; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// An existing link conflicts in a way we will not repair silently; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The kernel refused an action.
    #[error("{0}")]
    Sys(#[from] SysError),
}

impl FabricError {
    /// True when the error is the operator's to fix (exit code 2), not a runtime failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::Refused(_))
    }
}
