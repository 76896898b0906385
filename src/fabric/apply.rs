//! Reads the host, plans, and carries the plan out through [`Netlink`].

use super::plan::{plan_removal, plan_setup, Action, Observed};
use super::{FabricConfig, FabricError, MIN_MTU, VXLAN_OVERHEAD};
use crate::model::VlanId;
use crate::sys::{IdempotentResult, Netlink, SysResult};

/// Reads the fabric's bridges and VXLAN devices by name, with their addresses, and with
/// `ports`, every bridge port (for removal, which refuses while containers are attached). A
/// full link dump would cost more with every container (see [`Netlink::bridge_ports`]).
async fn observe(nl: &dyn Netlink, vlans: &[VlanId], ports: bool) -> SysResult<Observed> {
    let mut seen = Observed::default();
    for vlan in vlans {
        for name in [vlan.bridge_name(), vlan.vxlan_name()] {
            if let Some(l) = nl.link(&name).await? {
                seen.addrs.insert(name, nl.addresses(l.index).await?);
                seen.links.push(l);
            }
        }
    }
    if ports {
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

/// Makes the host fabric match `cfg`, changing only what differs. Returns what it did, which is
/// empty on a fabric that was already right.
///
/// Every check happens before the first change, so a refusal leaves the host as it was.
///
/// # Errors
/// [`FabricError::Invalid`] for a missing underlay or impossible MTU, [`FabricError::Refused`]
/// for a conflicting link, [`FabricError::Sys`] when the kernel refuses an action (the actions
/// before it stay; running setup again completes the fabric).
pub async fn ensure_fabric(
    nl: &dyn Netlink,
    cfg: &FabricConfig,
) -> Result<Vec<Action>, FabricError> {
    let underlay = nl.link(&cfg.underlay).await?.ok_or_else(|| {
        FabricError::Invalid(format!(
            "underlay interface {} not found; pass --underlay",
            cfg.underlay
        ))
    })?;
    let mtu = overlay_mtu(cfg, underlay.mtu)?;
    let seen = observe(nl, &cfg.vlans, false).await?;
    let actions = plan_setup(cfg, &underlay, mtu, &seen)?;
    for action in &actions {
        tracing::debug!(%action, "fabric");
        run(nl, action).await?;
    }
    Ok(actions)
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
    let seen = observe(nl, vlans, true).await?;
    let actions = plan_removal(vlans, force, &seen)?;
    for action in &actions {
        tracing::debug!(%action, "fabric");
        run(nl, action).await?;
    }
    Ok(actions)
}

async fn run(nl: &dyn Netlink, action: &Action) -> SysResult<()> {
    match action {
        Action::CreateBridge { name, mtu } => nl.create_bridge(name, *mtu).await,
        Action::CreateVxlan(spec) => nl.create_vxlan(spec).await,
        Action::DeleteLink { name, .. } => {
            let deleted = async { nl.delete_link(nl.index_of(name).await?).await };
            deleted.await.missing_ok()
        }
        Action::SetMtu { name, mtu, .. } => nl.set_mtu(nl.index_of(name).await?, *mtu).await,
        Action::SetMaster { name, bridge } => {
            let br = nl.index_of(bridge).await?;
            nl.set_master(nl.index_of(name).await?, Some(br)).await
        }
        Action::SetUp { name } => nl.set_up(nl.index_of(name).await?).await,
        Action::AddAddress { name, addr } => nl.add_address(nl.index_of(name).await?, *addr).await,
        Action::DeleteAddress { name, addr, .. } => {
            nl.delete_address(nl.index_of(name).await?, *addr).await
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
