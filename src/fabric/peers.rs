//! Unicast flooding (issue 15). Most clouds and many datacentre underlays carry no multicast,
//! and there a VXLAN that floods to group 239.0.0.V silently reaches no other server. With
//! peers, each `vxlanV` is made without a group, with `local` = this server's underlay
//! address, and its own forwarding table lists `00:00:00:00:00:00 dst <peer>` for every other
//! server: the kernel copies each broadcast and unknown frame to every peer by unicast
//! (head-end replication, as Flannel, Docker overlay and Proxmox SDN do).
//!
//! Here: the peer list, checked; the flooding a server ends up with once its own address is
//! known; and the plan of a device's flood entries. The flood entries (all-zeros MAC) of a
//! `vxlanV` in unicast mode are the fabric's: any not for a peer is removed. Every other entry
//! — learned ones, an operator's for a real MAC — is left alone.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::plan::Action;
use super::FabricError;
use crate::model::{invalid, InvalidValue, Ipv4Cidr};
use crate::sys::FdbEntry;

/// How the VXLAN devices flood broadcast and unknown frames, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FabricMode {
    /// To multicast group 239.0.0.V: the underlay must carry multicast.
    Multicast,
    /// A unicast copy to each peer.
    Unicast,
}

impl fmt::Display for FabricMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Multicast => "multicast",
            Self::Unicast => "unicast",
        })
    }
}

/// The flooding in force on this server: the mode, and for unicast the addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flooding {
    /// To group 239.0.0.V per VLAN.
    Multicast,
    /// A copy to each peer, sent from `local`.
    Unicast {
        /// This server's underlay address, the VXLAN devices' source.
        local: Ipv4Addr,
        /// The other servers, in the order listed.
        peers: Vec<Ipv4Addr>,
        /// Listed addresses that are this server's own, skipped.
        skipped: Vec<Ipv4Addr>,
    },
}

impl Flooding {
    /// The mode.
    pub fn mode(&self) -> FabricMode {
        match self {
            Self::Multicast => FabricMode::Multicast,
            Self::Unicast { .. } => FabricMode::Unicast,
        }
    }

    /// The source address the VXLAN devices must have (unicast only).
    pub fn local(&self) -> Option<Ipv4Addr> {
        match self {
            Self::Multicast => None,
            Self::Unicast { local, .. } => Some(*local),
        }
    }
}

fn list(addrs: &[Ipv4Addr]) -> String {
    let text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    text.join(", ")
}

impl fmt::Display for Flooding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Multicast => write!(f, "multicast (VLAN V floods to group 239.0.0.V)"),
            Self::Unicast {
                local,
                peers,
                skipped,
            } => {
                match peers.len() {
                    0 => write!(f, "unicast from {local} to no peer")?,
                    1 => write!(f, "unicast from {local} to 1 peer ({})", list(peers))?,
                    n => write!(f, "unicast from {local} to {n} peers ({})", list(peers))?,
                }
                if !skipped.is_empty() {
                    write!(f, "; {} is this server's own: skipped", list(skipped))?;
                }
                Ok(())
            }
        }
    }
}

/// One peer address: IPv4, and one a server can have (not multicast, loopback, unspecified
/// nor broadcast).
fn check_peer(text: &str) -> Result<Ipv4Addr, InvalidValue> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("an empty address in the peer list"));
    }
    let addr = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a,
        Ok(IpAddr::V6(_)) => {
            return Err(invalid(format!(
            "peer {text} is an IPv6 address; the underlay is IPv4, give the peers' IPv4 addresses"
        )))
        }
        Err(_) => return Err(invalid(format!("peer {text:?} is not an IPv4 address"))),
    };
    let what = if addr.is_multicast() {
        "a multicast address"
    } else if addr.is_loopback() {
        "a loopback address"
    } else if addr.is_unspecified() {
        "the unspecified address"
    } else if addr.is_broadcast() {
        "the broadcast address"
    } else {
        return Ok(addr);
    };
    Err(invalid(format!(
        "peer {addr} is {what}; list the other servers' own underlay addresses"
    )))
}

/// Checks a peer list given as items (the config file's array).
///
/// # Errors
/// The first item that is not a usable IPv4 address, or one listed twice.
pub fn check_peers<S: AsRef<str>>(items: &[S]) -> Result<Vec<Ipv4Addr>, InvalidValue> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let addr = check_peer(item.as_ref())?;
        if out.contains(&addr) {
            return Err(invalid(format!("peer {addr} is listed twice")));
        }
        out.push(addr);
    }
    Ok(out)
}

/// Parses `--peers`: addresses separated by commas; an empty value is no peer (multicast),
/// so that an unset variable in a unit file keeps the default.
///
/// # Errors
/// As [`check_peers`].
pub fn parse_peer_list(s: &str) -> Result<Vec<Ipv4Addr>, InvalidValue> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    check_peers(&s.split(',').collect::<Vec<_>>())
}

/// The unicast flooding to `peers` (none yet, in cluster mode) on a server whose underlay
/// `underlay` carries `own`: from the underlay's first (primary) IPv4 address to every
/// listed peer that is not one of `own`.
///
/// # Errors
/// [`FabricError::Invalid`] when the underlay has no IPv4 address.
pub fn resolve_flooding(
    peers: &[Ipv4Addr],
    underlay: &str,
    own: &[Ipv4Cidr],
) -> Result<Flooding, FabricError> {
    let Some(local) = own.first().map(|a| a.addr) else {
        return Err(FabricError::Invalid(format!(
            "unicast flooding sends from the underlay's IPv4 address, and {underlay} has none; give {underlay} an address, or leave out the peers and --etcd"
        )));
    };
    let is_own = |p: &Ipv4Addr| own.iter().any(|a| a.addr == *p);
    Ok(Flooding::Unicast {
        local,
        peers: peers.iter().copied().filter(|p| !is_own(p)).collect(),
        skipped: peers.iter().copied().filter(is_own).collect(),
    })
}

/// Plans the flood entries of VXLAN device `name` for unicast flooding to `peers`. `kept` is
/// the device's own table when the device stays, `None` when it is made anew (empty). Peers
/// missing are added, in the order listed; flood entries to anything else are removed; entries
/// of other MACs are left alone.
pub(super) fn plan_flood_entries(
    name: &str,
    peers: &[Ipv4Addr],
    kept: Option<&[FdbEntry]>,
    out: &mut Vec<Action>,
) {
    let have: BTreeSet<Ipv4Addr> = kept
        .unwrap_or_default()
        .iter()
        .filter(|e| e.is_flood())
        .map(|e| e.dst)
        .collect();
    for &peer in peers.iter().filter(|p| !have.contains(p)) {
        out.push(Action::AddPeer {
            name: name.to_string(),
            peer,
        });
    }
    for &peer in have.iter().filter(|p| !peers.contains(p)) {
        out.push(Action::DeletePeer {
            name: name.to_string(),
            peer,
            why: "not a peer any more".into(),
        });
    }
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
