//! Pure decisions: from what the kernel shows to the list of actions that make the fabric right.

use std::collections::HashMap;
use std::fmt;

use super::{FabricConfig, FabricError, VXLAN_PORT};
use crate::model::{Ipv4Cidr, VlanId};
use crate::sys::{LinkKind, LinkState, VxlanAttrs, VxlanSpec};

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
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateBridge { name, mtu } => write!(f, "create bridge {name} (mtu {mtu})"),
            Self::CreateVxlan(s) => write!(
                f,
                "create vxlan {} (vni {}, group {}, dstport {}, mtu {})",
                s.name,
                s.attrs.vni,
                s.attrs.group.map_or("none".into(), |g| g.to_string()),
                s.attrs.port,
                s.mtu
            ),
            Self::DeleteLink { name, why } => write!(f, "delete {name}: {why}"),
            Self::SetMtu { name, mtu, was } => write!(f, "set mtu of {name} to {mtu} (was {was})"),
            Self::SetMaster { name, bridge } => write!(f, "attach {name} to {bridge}"),
            Self::SetUp { name } => write!(f, "bring {name} up"),
            Self::AddAddress { name, addr } => write!(f, "add {addr} to {name}"),
            Self::DeleteAddress { name, addr, why } => {
                write!(f, "remove {addr} from {name}: {why}")
            }
        }
    }
}

/// What the kernel shows: the fabric's links, and the IPv4 addresses of the links that matter.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The fabric's bridges and VXLAN devices that exist, then (for removal) every bridge port.
    pub links: Vec<LinkState>,
    /// Addresses by link name (only bridges and VXLAN devices of the fabric are read).
    pub addrs: HashMap<String, Vec<Ipv4Cidr>>,
}

impl Observed {
    fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }

    fn addrs(&self, name: &str) -> &[Ipv4Cidr] {
        self.addrs.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Describes how `have` differs from `want`, or `None` when they match.
fn vxlan_difference(name: &str, have: &VxlanAttrs, want: &VxlanAttrs) -> Option<String> {
    let mut diffs = Vec::new();
    if have.vni != want.vni {
        diffs.push(format!("VNI {} (want {})", have.vni, want.vni));
    }
    if have.group != want.group {
        let show = |g: Option<std::net::Ipv4Addr>| g.map_or("none".into(), |g| g.to_string());
        diffs.push(format!(
            "group {} (want {})",
            show(have.group),
            show(want.group)
        ));
    }
    if have.port != want.port {
        diffs.push(format!("dstport {} (want {})", have.port, want.port));
    }
    if have.underlay != want.underlay {
        let show = |u: Option<u32>| u.map_or("none".into(), |u| format!("ifindex {u}"));
        diffs.push(format!(
            "device {} (want {})",
            show(have.underlay),
            show(want.underlay)
        ));
    }
    (!diffs.is_empty()).then(|| format!("{name} has {}", diffs.join(", ")))
}

/// The VXLAN device VLAN `vlan` needs.
pub fn vxlan_spec(vlan: VlanId, underlay: u32, mtu: u32) -> VxlanSpec {
    VxlanSpec {
        name: vlan.vxlan_name(),
        attrs: VxlanAttrs {
            vni: u32::from(vlan.get()),
            group: Some(vlan.group()),
            port: VXLAN_PORT,
            underlay: Some(underlay),
        },
        mtu,
    }
}

/// Plans the fabric of `cfg` over `underlay` with overlay MTU `mtu`.
///
/// # Errors
/// [`FabricError::Refused`] when a link of a fabric name exists with another kind: it is not
/// ours to delete.
pub fn plan_setup(
    cfg: &FabricConfig,
    underlay: &LinkState,
    mtu: u32,
    seen: &Observed,
) -> Result<Vec<Action>, FabricError> {
    let mut actions = Vec::new();
    for &vlan in &cfg.vlans {
        plan_vlan(cfg, vlan, underlay.index, mtu, seen, &mut actions)?;
    }
    Ok(actions)
}

fn refuse_kind(link: &LinkState, want: &str) -> FabricError {
    FabricError::Refused(format!(
        "link {} exists but is a {}, not a {want}; remove it or serve other VLANs",
        link.name,
        link.kind.name()
    ))
}

fn plan_vlan(
    cfg: &FabricConfig,
    vlan: VlanId,
    underlay: u32,
    mtu: u32,
    seen: &Observed,
    out: &mut Vec<Action>,
) -> Result<(), FabricError> {
    let (br_name, vx_name) = (vlan.bridge_name(), vlan.vxlan_name());
    let want = vxlan_spec(vlan, underlay, mtu);
    let br = seen.link(&br_name);
    let vx = seen.link(&vx_name);
    if let Some(b) = br.filter(|b| b.kind != LinkKind::Bridge) {
        return Err(refuse_kind(b, "bridge"));
    }
    if let Some(v) = vx.filter(|v| !matches!(v.kind, LinkKind::Vxlan(_))) {
        return Err(refuse_kind(v, "vxlan"));
    }

    match br {
        None => out.push(Action::CreateBridge {
            name: br_name.clone(),
            mtu,
        }),
        Some(b) if b.mtu != mtu => out.push(Action::SetMtu {
            name: br_name.clone(),
            mtu,
            was: b.mtu,
        }),
        Some(_) => {}
    }

    // A VXLAN device's VNI, group, port and device cannot be changed in place: recreate it.
    let kept_vx = match vx {
        Some(
            v @ LinkState {
                kind: LinkKind::Vxlan(have),
                ..
            },
        ) => match vxlan_difference(&vx_name, have, &want.attrs) {
            Some(why) => {
                out.push(Action::DeleteLink {
                    name: vx_name.clone(),
                    why,
                });
                None
            }
            None => Some(v),
        },
        _ => None,
    };
    match kept_vx {
        None => out.push(Action::CreateVxlan(want)),
        Some(v) if v.mtu != mtu => out.push(Action::SetMtu {
            name: vx_name.clone(),
            mtu,
            was: v.mtu,
        }),
        Some(_) => {}
    }
    let attached = matches!((kept_vx, br), (Some(v), Some(b)) if v.master == Some(b.index));
    if !attached {
        out.push(Action::SetMaster {
            name: vx_name.clone(),
            bridge: br_name.clone(),
        });
    }

    plan_addresses(cfg, vlan, kept_vx.is_some(), br.is_some(), seen, out);

    if !kept_vx.is_some_and(|v| v.up) {
        out.push(Action::SetUp { name: vx_name });
    }
    if !br.is_some_and(|b| b.up) {
        out.push(Action::SetUp { name: br_name });
    }
    Ok(())
}

fn plan_addresses(
    cfg: &FabricConfig,
    vlan: VlanId,
    vx_kept: bool,
    br_kept: bool,
    seen: &Observed,
    out: &mut Vec<Action>,
) {
    let (br_name, vx_name) = (vlan.bridge_name(), vlan.vxlan_name());
    let subnet = vlan.subnet();
    let mine = vlan.host_address(cfg.host_id);
    if vx_kept {
        for &addr in seen
            .addrs(&vx_name)
            .iter()
            .filter(|a| subnet.contains(a.addr))
        {
            out.push(Action::DeleteAddress {
                name: vx_name.clone(),
                addr,
                why: "a bridge port cannot carry the host address; it belongs on the bridge".into(),
            });
        }
    }
    let on_bridge = if br_kept { seen.addrs(&br_name) } else { &[] };
    for &addr in on_bridge
        .iter()
        .filter(|a| subnet.contains(a.addr) && **a != mine)
    {
        out.push(Action::DeleteAddress {
            name: br_name.clone(),
            addr,
            why: format!("this server is host {}, its address is {mine}", cfg.host_id),
        });
    }
    if !on_bridge.contains(&mine) {
        out.push(Action::AddAddress {
            name: br_name,
            addr: mine,
        });
    }
}

/// Plans taking the fabric of `vlans` down.
///
/// # Errors
/// [`FabricError::Refused`] when a bridge still has other ports (containers) and `force` is
/// false.
pub fn plan_removal(
    vlans: &[VlanId],
    force: bool,
    seen: &Observed,
) -> Result<Vec<Action>, FabricError> {
    let mut out = Vec::new();
    for &vlan in vlans {
        let (br_name, vx_name) = (vlan.bridge_name(), vlan.vxlan_name());
        if let Some(v) = seen
            .link(&vx_name)
            .filter(|v| matches!(v.kind, LinkKind::Vxlan(_)))
        {
            out.push(Action::DeleteLink {
                name: v.name.clone(),
                why: "fabric removal".into(),
            });
        }
        let Some(br) = seen.link(&br_name).filter(|b| b.kind == LinkKind::Bridge) else {
            continue;
        };
        let ports: Vec<&str> = seen
            .links
            .iter()
            .filter(|l| l.master == Some(br.index) && l.name != vx_name)
            .map(|l| l.name.as_str())
            .collect();
        if !ports.is_empty() && !force {
            return Err(FabricError::Refused(format!(
                "bridge {br_name} still has container ports ({}); destroy those containers first or pass --force",
                ports.join(", ")
            )));
        }
        out.push(Action::DeleteLink {
            name: br_name,
            why: "fabric removal".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
