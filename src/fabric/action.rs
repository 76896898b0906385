//! The actions a fabric plan is made of, each named for the operator (`setup` prints them, the
//! daemon logs them).

use std::fmt;
use std::net::Ipv4Addr;

use crate::model::Ipv4Cidr;
use crate::sys::VxlanSpec;

/// One change to the host, named for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a bridge, down.
    CreateBridge {
        /// Bridge name.
        name: String,
        /// Its MTU.
        mtu: u32,
    },
    /// Create a VXLAN device, down.
    CreateVxlan(VxlanSpec),
    /// Delete a link.
    DeleteLink {
        /// Link name.
        name: String,
        /// Why, for the operator.
        why: String,
    },
    /// Change a link's MTU.
    SetMtu {
        /// Link name.
        name: String,
        /// New MTU.
        mtu: u32,
        /// The MTU it had.
        was: u32,
    },
    /// Make a link a port of a bridge.
    SetMaster {
        /// Link name.
        name: String,
        /// Bridge name.
        bridge: String,
    },
    /// Bring a link up.
    SetUp {
        /// Link name.
        name: String,
    },
    /// Add an address to a link.
    AddAddress {
        /// Link name.
        name: String,
        /// The address.
        addr: Ipv4Cidr,
    },
    /// Remove an address from a link.
    DeleteAddress {
        /// Link name.
        name: String,
        /// The address.
        addr: Ipv4Cidr,
        /// Why, for the operator.
        why: String,
    },
    /// Add a peer to a VXLAN device's flood entries (`00:00:00:00:00:00 dst <peer>`).
    AddPeer {
        /// The VXLAN device.
        name: String,
        /// The peer's underlay address.
        peer: Ipv4Addr,
    },
    /// Remove a flood entry from a VXLAN device.
    DeletePeer {
        /// The VXLAN device.
        name: String,
        /// The address it sent to.
        peer: Ipv4Addr,
        /// Why, for the operator.
        why: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateBridge { name, mtu } => write!(f, "create bridge {name} (mtu {mtu})"),
            Self::CreateVxlan(s) => {
                let source = match (s.attrs.group, s.attrs.local) {
                    (Some(g), _) => format!("group {g}"),
                    (None, Some(l)) => format!("local {l}"),
                    (None, None) => "group none".into(),
                };
                write!(
                    f,
                    "create vxlan {} (vni {}, {source}, dstport {}, mtu {})",
                    s.name, s.attrs.vni, s.attrs.port, s.mtu
                )
            }
            Self::DeleteLink { name, why } => write!(f, "delete {name}: {why}"),
            Self::SetMtu { name, mtu, was } => write!(f, "set mtu of {name} to {mtu} (was {was})"),
            Self::SetMaster { name, bridge } => write!(f, "attach {name} to {bridge}"),
            Self::SetUp { name } => write!(f, "bring {name} up"),
            Self::AddAddress { name, addr } => write!(f, "add {addr} to {name}"),
            Self::DeleteAddress { name, addr, why } => {
                write!(f, "remove {addr} from {name}: {why}")
            }
            Self::AddPeer { name, peer } => write!(f, "add peer {peer} to {name}"),
            Self::DeletePeer { name, peer, why } => {
                write!(f, "remove peer {peer} from {name}: {why}")
            }
        }
    }
}
