//! Pure decisions: from what the kernel shows to the list of actions that make the fabric right.

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub use super::action::Action;
use super::peers::{plan_flood_entries, Flooding};
use super::{FabricConfig, FabricError, VXLAN_PORT};
use crate::model::{Ipv4Cidr, VlanId};
use crate::sys::{FdbEntry, LinkKind, LinkState, VxlanAttrs, VxlanSpec};

/// What the kernel shows: the fabric's links, and the IPv4 addresses of the links that matter.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The fabric's bridges and VXLAN devices that exist, then (for removal) every bridge port.
    pub links: Vec<LinkState>,
    /// Addresses by link name (only bridges and VXLAN devices of the fabric are read).
    pub addrs: HashMap<String, Vec<Ipv4Cidr>>,
    /// The own forwarding tables of the fabric's VXLAN devices, by name (read only where
    /// flood entries matter: unicast flooding, and removal's report).
    pub fdb: HashMap<String, Vec<FdbEntry>>,
}

impl Observed {
    fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }

    fn addrs(&self, name: &str) -> &[Ipv4Cidr] {
        self.addrs.get(name).map_or(&[], Vec::as_slice)
    }

    fn fdb(&self, name: &str) -> &[FdbEntry] {
        self.fdb.get(name).map_or(&[], Vec::as_slice)
    }
}

/// What the fabric must be, once resolved against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The underlay's interface index.
    pub underlay: u32,
    /// The overlay MTU.
    pub mtu: u32,
    /// How the VXLAN devices flood.
    pub flooding: Flooding,
}

/// Describes how `have` differs from `want`, or `None` when they match.
fn vxlan_difference(name: &str, have: &VxlanAttrs, want: &VxlanAttrs) -> Option<String> {
    let mut diffs = Vec::new();
    if have.vni != want.vni {
        diffs.push(format!("VNI {} (want {})", have.vni, want.vni));
    }
    let show = |a: Option<Ipv4Addr>| a.map_or("none".into(), |a| a.to_string());
    if have.group != want.group {
        diffs.push(format!(
            "group {} (want {})",
            show(have.group),
            show(want.group)
        ));
    }
    if have.local != want.local {
        diffs.push(format!(
            "local {} (want {})",
            show(have.local),
            show(want.local)
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

/// The VXLAN device VLAN `vlan` needs: with multicast flooding its group, with unicast
/// flooding no group and this server's underlay address as its source.
pub fn vxlan_spec(vlan: VlanId, target: &Target) -> VxlanSpec {
    let multicast = target.flooding == Flooding::Multicast;
    VxlanSpec {
        name: vlan.vxlan_name(),
        attrs: VxlanAttrs {
            vni: u32::from(vlan.get()),
            group: multicast.then(|| vlan.group()),
            local: target.flooding.local(),
            port: VXLAN_PORT,
            underlay: Some(target.underlay),
        },
        mtu: target.mtu,
    }
}

/// Plans the fabric of `cfg` as `target` resolved it.
///
/// # Errors
/// [`FabricError::Refused`] when a link of a fabric name exists with another kind: it is not
/// ours to delete.
pub fn plan_setup(
    cfg: &FabricConfig,
    target: &Target,
    seen: &Observed,
) -> Result<Vec<Action>, FabricError> {
    let mut actions = Vec::new();
    for &vlan in &cfg.vlans {
        plan_vlan(cfg, vlan, target, seen, &mut actions)?;
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
    target: &Target,
    seen: &Observed,
    out: &mut Vec<Action>,
) -> Result<(), FabricError> {
    let (br_name, vx_name) = (vlan.bridge_name(), vlan.vxlan_name());
    let mtu = target.mtu;
    let want = vxlan_spec(vlan, target);
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

    // A VXLAN device's VNI, group, source, port and device cannot be changed in place:
    // recreate it (a switch between multicast and unicast flooding too); the bridge, its
    // address and its other ports stay.
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
    // In cluster mode the flood entries follow the members (`set_flood_peers`), not a list.
    if let (Flooding::Unicast { peers, .. }, false) = (&target.flooding, cfg.cluster_peers) {
        let kept = kept_vx.map(|_| seen.fdb(&vx_name));
        plan_flood_entries(&vx_name, peers, kept, out);
    }

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
            // The kernel deletes the device's forwarding table with it: say what goes.
            let peers: Vec<String> = seen
                .fdb(&vx_name)
                .iter()
                // A multicast device shows its group as an all-zeros entry too: not a peer.
                .filter(|e| e.is_flood() && !e.dst.is_multicast())
                .map(|e| e.dst.to_string())
                .collect();
            let why = match peers.len() {
                0 => "fabric removal".into(),
                _ => format!(
                    "fabric removal, with its flood entries to {}",
                    peers.join(", ")
                ),
            };
            out.push(Action::DeleteLink {
                name: v.name.clone(),
                why,
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
