//! The network steps: the veth pair across the namespace boundary, and the container side.

use async_trait::async_trait;

use super::{Step, StepCtx, StepError};
use crate::model::container_mac;
use crate::sys::{IdempotentResult, VethSpec};

/// Name of the container's interface.
pub const CONTAINER_IFACE: &str = "eth0";

/// One RTM_NEWLINK: host end `vethc_br<ID>` on `brV` and up, peer born in the container's
/// namespace as `eth0`, both with the bridge's MTU (so the container never sends frames the
/// overlay would drop), `eth0` with the MAC its address gives ([`container_mac`]).
pub struct CreateVeth;

#[async_trait]
impl Step for CreateVeth {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let bridge = ctx.spec()?.vlan.bridge_name();
        let br = ctx.host.net.link_brief(&bridge).await?.ok_or_else(|| {
            StepError::Other(format!(
                "bridge {bridge} not found; run `creepy-meow setup`"
            ))
        })?;
        let pid = ctx
            .running_pid()
            .await?
            .ok_or_else(|| StepError::Other("the container is not running".into()))?;
        ctx.mtu = Some(br.mtu);
        let spec = VethSpec {
            host_name: ctx.id()?.host_veth(),
            peer_name: CONTAINER_IFACE.into(),
            peer_netns_pid: pid,
            master: br.index,
            mtu: br.mtu,
            peer_mac: Some(container_mac(ctx.spec()?.ip.addr)),
        };
        Ok(ctx.host.net.create_veth(&spec).await?)
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let name = ctx.id()?.host_veth();
        if let Some(link) = ctx.host.net.link(&name).await? {
            ctx.host.net.delete_link(link.index).await.missing_ok()?;
        }
        Ok(())
    }
}

/// Inside the container: `lo` up, the address on `eth0`, its MTU, `eth0` up, and the default
/// route when a gateway was asked for.
pub struct ConfigureNetwork;

#[async_trait]
impl Step for ConfigureNetwork {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let pid = ctx
            .running_pid()
            .await?
            .ok_or_else(|| StepError::Other("the container is not running".into()))?;
        let nl = ctx.host.netns.open_netns_of(pid).await?;
        nl.set_up(nl.index_of("lo").await?).await?;
        let eth0 = nl
            .link(CONTAINER_IFACE)
            .await?
            .ok_or_else(|| StepError::Other("eth0 not found in the container".into()))?;
        let spec = ctx.spec()?;
        nl.add_address(eth0.index, spec.ip).await.existing_ok()?;
        if let Some(mtu) = ctx.mtu.filter(|m| *m != eth0.mtu) {
            nl.set_mtu(eth0.index, mtu).await?;
        }
        nl.set_up(eth0.index).await?;
        if let Some(gw) = spec.gateway {
            nl.add_default_route(gw).await.existing_ok()?;
        }
        Ok(())
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        // The address and route die with eth0 when the veth goes; removing the address here
        // keeps this step reversible on its own.
        let Some(pid) = ctx.running_pid().await? else {
            return Ok(());
        };
        let nl = match ctx.host.netns.open_netns_of(pid).await {
            Err(e) if e.is_not_found() => return Ok(()),
            other => other?,
        };
        if let Some(eth0) = nl.link(CONTAINER_IFACE).await? {
            nl.delete_address(eth0.index, ctx.spec()?.ip)
                .await
                .missing_ok()?;
        }
        Ok(())
    }
}
