//! Command-line arguments: one subcommand per thing an operator does.

use clap::{Args, Parser, Subcommand};

use crate::fabric::FabricConfig;
use crate::model::{parse_vlan_list, HostId, VlanId};

/// Provisions LXC containers onto VXLAN overlay networks that span many servers.
#[derive(Debug, Parser)]
#[command(name = "creepy-meow", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build (or repair) this server's host fabric: vxlanV + brV per VLAN. Run once per boot;
    /// running it again on a correct fabric changes nothing.
    Setup(SetupArgs),
}

/// The fabric options, shared by `setup` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct FabricArgs {
    /// This server's unique ID, 1..=254: the last byte of its addresses (192.168.V.<ID>).
    #[arg(long, value_name = "N")]
    pub host_id: Option<HostId>,

    /// The underlay interface VXLAN traffic leaves by.
    #[arg(long, value_name = "IFACE", default_value = "eth1")]
    pub underlay: String,

    /// The VLANs this server serves, comma-separated; each gets vxlanV and brV.
    #[arg(long, value_name = "LIST", default_value = "2,3,4", value_parser = parse_vlans)]
    pub vlans: VlanList,

    /// Overlay MTU [default: the underlay's MTU minus 50, the VXLAN-over-IPv4 overhead].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u32>,
}

/// A validated VLAN list (a newtype, so clap treats it as one value rather than many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanList(pub Vec<VlanId>);

fn parse_vlans(s: &str) -> Result<VlanList, String> {
    parse_vlan_list(s).map(VlanList).map_err(|e| e.to_string())
}

impl FabricArgs {
    /// The fabric configuration, once a host ID is known.
    ///
    /// # Errors
    /// When `--host-id` was not given.
    pub fn config(&self) -> Result<FabricConfig, String> {
        let host_id = self
            .host_id
            .ok_or("--host-id is required: give this server's unique ID, 1 to 254")?;
        Ok(FabricConfig {
            host_id,
            underlay: self.underlay.clone(),
            vlans: self.vlans.0.clone(),
            mtu: self.mtu,
        })
    }
}

/// Arguments of `setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The fabric to build.
    #[command(flatten)]
    pub fabric: FabricArgs,

    /// Take the fabric of --vlans down instead of building it.
    #[arg(long)]
    pub remove: bool,

    /// With --remove: delete bridges even while containers are still attached to them.
    #[arg(long, requires = "remove")]
    pub force: bool,
}
