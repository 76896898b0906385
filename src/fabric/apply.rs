//! Reads the host, plans, and carries the plan out through [`Netlink`].

use std::collections::HashMap;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::peers::{plan_flood_entries, resolve_flooding, FabricMode, Flooding};
use super::plan::{plan_removal, plan_setup, Action, Observed, Target};
use super::{FabricConfig, FabricError, MIN_MTU, VXLAN_OVERHEAD};
use crate::model::VlanId;
use crate::sys::{FdbEntry, IdempotentResult, LinkKind, Netlink, SysResult};

/// What to read besides the fabric's own links and their addresses.
#[derive(Debug, Clone, Copy)]
struct Reads {
    /// Every bridge port (removal refuses while containers are attached). A full link dump
    /// would cost more with every container (see [`Netlink::bridge_ports`]).
    ports: bool,
    /// The VXLAN devices' own forwarding tables (their flood entries).
    fdb: bool,
}

/// Reads the fabric's bridges and VXLAN devices by name, with their addresses, and what
/// `reads` asks for.
async fn observe(nl: &dyn Netlink, vlans: &[VlanId], reads: Reads) -> SysResult<Observed> {
    let mut seen = Observed::default();
    for vlan in vlans {
        for name in [vlan.bridge_name(), vlan.vxlan_name()] {
            let Some(l) = nl.link(&name).await? else {
                continue;
            };
            if reads.fdb && matches!(l.kind, LinkKind::Vxlan(_)) {
                seen.fdb
                    .insert(name.clone(), nl.fdb_entries(l.index).await?);
            }
            seen.addrs.insert(name, nl.addresses(l.index).await?);
            seen.links.push(l);
        }
    }
    if reads.ports {
        seen.links.extend(nl.bridge_ports().await?);
    }
    Ok(seen)
}

/// The overlay MTU for `cfg` over an underlay of `underlay_mtu`.
///
/// # Errors
/// [`FabricError::Invalid`] when `--mtu` is larger than the underlay can carry with the VXLAN
/// header, or smaller than IPv4 allows.
pub fn overlay_mtu(cfg: &FabricConfig, underlay_mtu: u32) -> Result<u32, FabricError> {
    let max = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
    let mtu = cfg.mtu.unwrap_or(max);
    if mtu > max {
        return Err(FabricError::Invalid(format!(
            "mtu {mtu} does not fit: underlay {} has mtu {underlay_mtu}, and VXLAN needs {VXLAN_OVERHEAD} bytes of it, so at most {max}",
            cfg.underlay
        )));
    }
    if mtu < MIN_MTU {
        return Err(FabricError::Invalid(format!(
            "overlay mtu {mtu} is below the IPv4 minimum of {MIN_MTU} (underlay {} has mtu {underlay_mtu})",
            cfg.underlay
        )));
    }
    Ok(mtu)
}

/// What [`ensure_fabric`] found and did.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The flooding in force.
    pub flooding: Flooding,
    /// What it changed: empty on a fabric that was already right.
    pub actions: Vec<Action>,
}

/// Resolves `cfg` against the host: the underlay, the overlay MTU and the flooding.
async fn resolve(nl: &dyn Netlink, cfg: &FabricConfig) -> Result<Target, FabricError> {
    let underlay = nl.link(&cfg.underlay).await?.ok_or_else(|| {
        FabricError::Invalid(format!(
            "underlay interface {} not found; pass --underlay",
            cfg.underlay
        ))
    })?;
    let mtu = overlay_mtu(cfg, underlay.mtu)?;
    let flooding = match cfg.mode() {
        FabricMode::Multicast => Flooding::Multicast,
        FabricMode::Unicast => {
            let own = nl.addresses(underlay.index).await?;
            resolve_flooding(&cfg.peers, &cfg.underlay, &own)?
        }
    };
    Ok(Target {
        underlay: underlay.index,
        mtu,
        flooding,
    })
}

/// The flooding `cfg` resolves to on this host, read without changing anything (cluster mode
/// registers the underlay address before the fabric is touched).
///
/// # Errors
/// As [`ensure_fabric`]'s checks: a missing underlay, an impossible MTU, unicast flooding on
/// an underlay without an IPv4 address.
pub async fn resolve_flooding_of(
    nl: &dyn Netlink,
    cfg: &FabricConfig,
) -> Result<Flooding, FabricError> {
    Ok(resolve(nl, cfg).await?.flooding)
}

/// Makes the host fabric match `cfg`, changing only what differs.
///
/// Every check happens before the first change, so a refusal leaves the host as it was.
///
/// # Errors
/// [`FabricError::Invalid`] for a missing underlay, an impossible MTU or peers without an
/// underlay address, [`FabricError::Refused`] for a conflicting link, [`FabricError::Sys`]
/// when the kernel refuses an action (the actions before it stay; running setup again
/// completes the fabric).
pub async fn ensure_fabric(nl: &dyn Netlink, cfg: &FabricConfig) -> Result<Ensured, FabricError> {
    let target = resolve(nl, cfg).await?;
    let unicast = matches!(target.flooding, Flooding::Unicast { .. });
    let reads = Reads {
        ports: false,
        fdb: unicast,
    };
    let seen = observe(nl, &cfg.vlans, reads).await?;
    let actions = plan_setup(cfg, &target, &seen)?;
    run_all(nl, &actions, &seen).await?;
    Ok(Ensured {
        flooding: target.flooding,
        actions,
    })
}

/// Takes down the bridges and VXLAN devices of `vlans`.
///
/// # Errors
/// [`FabricError::Refused`] while a bridge still has container ports and `force` is false;
/// [`FabricError::Sys`] when the kernel refuses a deletion.
pub async fn remove_fabric(
    nl: &dyn Netlink,
    vlans: &[VlanId],
    force: bool,
) -> Result<Vec<Action>, FabricError> {
    let reads = Reads {
        ports: true,
        fdb: true,
    };
    let seen = observe(nl, vlans, reads).await?;
    let actions = plan_removal(vlans, force, &seen)?;
    run_all(nl, &actions, &seen).await?;
    Ok(actions)
}

/// Makes the flood entries of each listed VLAN's `vxlanV` equal to its peers (cluster mode:
/// the members serving that VLAN), adding and removing only what differs; a VLAN whose device
/// does not exist (yet) is skipped. Returns what it changed.
///
/// # Errors
/// [`FabricError::Sys`] when the kernel refuses a read or a change.
pub async fn set_flood_peers(
    nl: &dyn Netlink,
    peers: &BTreeMap<VlanId, Vec<Ipv4Addr>>,
) -> Result<Vec<Action>, FabricError> {
    let mut seen = Observed::default();
    let mut actions = Vec::new();
    for (vlan, want) in peers {
        let name = vlan.vxlan_name();
        let Some(link) = nl.link(&name).await? else {
            continue;
        };
        let have = nl.fdb_entries(link.index).await?;
        plan_flood_entries(&name, want, Some(&have), &mut actions);
        seen.links.push(link);
    }
    run_all(nl, &actions, &seen).await?;
    Ok(actions)
}

/// Runs `actions` in order, stopping at the first failure.
async fn run_all(nl: &dyn Netlink, actions: &[Action], seen: &Observed) -> SysResult<()> {
    let mut links = Indexes {
        known: seen
            .links
            .iter()
            .map(|l| (l.name.clone(), l.index))
            .collect(),
    };
    for action in actions {
        tracing::debug!(%action, "fabric");
        run(nl, action, &mut links).await?;
    }
    Ok(())
}

/// The index of each link by name: those just observed, and those looked up since. A plan's
/// actions name links (some do not exist when it is made); resolving each name once spares a
/// request per action, which counts with a flood entry per peer and VLAN.
struct Indexes {
    /// Link name → index.
    known: HashMap<String, u32>,
}

impl Indexes {
    async fn of(&mut self, nl: &dyn Netlink, name: &str) -> SysResult<u32> {
        if let Some(&index) = self.known.get(name) {
            return Ok(index);
        }
        let index = nl.index_of(name).await?;
        self.known.insert(name.to_string(), index);
        Ok(index)
    }

    /// Forgets `name`, whose link is being made or deleted.
    fn forget(&mut self, name: &str) {
        self.known.remove(name);
    }
}

async fn run(nl: &dyn Netlink, action: &Action, links: &mut Indexes) -> SysResult<()> {
    match action {
        Action::CreateBridge { name, mtu } => {
            links.forget(name);
            nl.create_bridge(name, *mtu).await
        }
        Action::CreateVxlan(spec) => {
            links.forget(&spec.name);
            nl.create_vxlan(spec).await
        }
        Action::DeleteLink { name, .. } => {
            let deleted = async { nl.delete_link(links.of(nl, name).await?).await };
            let result = deleted.await.missing_ok();
            links.forget(name);
            result
        }
        Action::SetMtu { name, mtu, .. } => nl.set_mtu(links.of(nl, name).await?, *mtu).await,
        Action::SetMaster { name, bridge } => {
            let br = links.of(nl, bridge).await?;
            nl.set_master(links.of(nl, name).await?, Some(br)).await
        }
        Action::SetUp { name } => nl.set_up(links.of(nl, name).await?).await,
        Action::AddAddress { name, addr } => nl.add_address(links.of(nl, name).await?, *addr).await,
        Action::DeleteAddress { name, addr, .. } => {
            nl.delete_address(links.of(nl, name).await?, *addr).await
        }
        Action::AddPeer { name, peer } => {
            let entry = FdbEntry::flood(*peer);
            nl.append_fdb_entry(links.of(nl, name).await?, &entry).await
        }
        Action::DeletePeer { name, peer, .. } => {
            let entry = FdbEntry::flood(*peer);
            let deleted = nl.delete_fdb_entry(links.of(nl, name).await?, &entry);
            deleted.await.missing_ok()
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
