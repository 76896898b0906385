//! What a reconcile pass reads of the host, read once and indexed by name: the containers
//! under the LXC path and their inits (LXC's command sockets and monitor PID files), which of
//! them LXC is starting or stopping, the bridge ports (one AF_BRIDGE dump), every link name
//! (`/proc/net/dev`), the fabric's bridges by name, and the addresses local to each running
//! container's namespace. No process is started, and nothing here grows with the processes on
//! the host or costs more per veth as namespaces are added (a full link dump does: see
//! [`crate::sys::Netlink::bridge_ports`]).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::images::is_image_name;
use crate::model::VlanId;
use crate::queue::ContainerRecord;
use crate::sys::inventory::ContainerEntry;
use crate::sys::{Host, LinkState, SysResult};

use super::classify::{Observed, VethFacts};
use super::Foreign;

/// The host, as one pass (or one `info`) sees it.
#[derive(Debug, Default)]
pub struct HostView {
    /// Container directories under the LXC path, by name.
    containers: HashMap<String, ContainerEntry>,
    /// Containers LXC is starting or stopping: judged next pass.
    changing: HashSet<String>,
    /// Every `vethc_br*` link: the bridge ports, and any not on a bridge, by name.
    veths: HashMap<String, LinkState>,
    /// Every link name, for what no record accounts for.
    names: Vec<String>,
    /// The fabric's bridges, by name.
    bridges: HashMap<String, LinkState>,
    /// Addresses local to the namespace of each init read; `None` when its network view was
    /// gone (an init exiting: not reaped yet) or could not be read.
    addresses: HashMap<u32, Option<Vec<Ipv4Addr>>>,
}

impl HostView {
    /// Reads the host for `records` (their containers' addresses are read when they run).
    /// The addresses of the inits LXC already holds (`Lxc::held_inits`) are read while the
    /// inventory is, and kept for the containers whose init the inventory confirms.
    ///
    /// # Errors
    /// When the LXC path, `/proc` or netlink cannot be read.
    pub async fn read(
        host: &Host,
        vlans: &[VlanId],
        records: &[ContainerRecord],
    ) -> SysResult<Self> {
        // The blocking reads (the inventory; the addresses) run on the blocking pool while the
        // reactor reads the links.
        let held: HashMap<String, u32> = host.lxc.held_inits().into_iter().collect();
        let early: Vec<u32> = records
            .iter()
            .filter_map(|r| held.get(&r.id.container_name()).copied())
            .collect();
        let links = async {
            let names = host.net.link_names().await?;
            let ports = host.net.bridge_ports().await?;
            SysResult::Ok((names, ports))
        };
        let (survey, mut addresses, links) =
            tokio::join!(host.lxc.survey(), read_addresses(host, early), links);
        let ((entries, changing), (names, ports)) = (survey?, links?);
        let containers: HashMap<String, ContainerEntry> =
            entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        let late: Vec<u32> = records
            .iter()
            .filter_map(|r| containers.get(&r.id.container_name())?.init_pid)
            .filter(|pid| !addresses.contains_key(pid))
            .collect();
        addresses.extend(read_addresses(host, late).await);
        let mut view = Self {
            containers,
            changing: changing.into_iter().collect(),
            names,
            addresses,
            ..Self::default()
        };
        for port in ports {
            if port.name.starts_with("vethc_br") {
                view.veths.insert(port.name.clone(), port);
            }
        }
        // A veth off its bridge is not a port: read by name (only when something drifted).
        let detached: Vec<String> = view
            .names
            .iter()
            .filter(|n| n.starts_with("vethc_br") && !view.veths.contains_key(*n))
            .cloned()
            .collect();
        for name in detached {
            if let Some(link) = host.net.link_brief(&name).await? {
                view.veths.insert(name, link);
            }
        }
        for vlan in vlans {
            if let Some(br) = host.net.link_brief(&vlan.bridge_name()).await? {
                view.bridges.insert(br.name.clone(), br);
            }
        }
        Ok(view)
    }

    /// Reads the host for `rec` alone (for `info`): its directory and init (a few `stat`s and
    /// a poll of its held init), its veth and bridge from the view of the host's links kept
    /// current by the kernel's notifications ([`crate::sys::Netlink::link_watched`]: no
    /// request while that view answers), its addresses (two short netlink exchanges).
    ///
    /// # Errors
    /// When the LXC path, `/proc` or netlink cannot be read.
    pub async fn read_one(host: &Host, rec: &ContainerRecord) -> SysResult<Self> {
        let mut view = Self::default();
        if let Some(entry) = host.lxc.entry(&rec.id.container_name()).await? {
            view.containers.insert(entry.name.clone(), entry);
        }
        if let Some(veth) = host.net.link_watched(&rec.id.host_veth()).await? {
            view.veths.insert(veth.name.clone(), veth);
            // The bridge matters only against a veth.
            if let Some(br) = host.net.link_watched(&rec.vlan.bridge_name()).await? {
                view.bridges.insert(br.name.clone(), br);
            }
        }
        let pids = view
            .containers
            .values()
            .filter_map(|e| e.init_pid)
            .collect();
        view.addresses = read_addresses(host, pids).await;
        Ok(view)
    }

    /// What the host shows of `rec`, and whether that is settled: not while LXC starts or
    /// stops it, nor when its init has exited (an `lxc-stop` under way: not reaped yet), which
    /// shows as its network view gone (`/proc/<pid>/net` of an exiting process). Judged as
    /// running with `eth0` lacking its address, it got a network repair bound to fail (seen
    /// once in `tests/reconcile_root.rs`'s periodic test; passes run in a loop during
    /// `lxc-stop -k` queued one 5 times in 15). It shows as stopped, and a pass leaves it to
    /// the next.
    pub fn observe(&self, rec: &ContainerRecord) -> (Observed, bool) {
        let name = rec.id.container_name();
        let entry = self.containers.get(&name);
        let mut pid = entry.and_then(|e| e.init_pid);
        let (mut address, mut settled) = (false, !self.changing.contains(&name));
        if let Some(init) = pid {
            match self.addresses.get(&init) {
                Some(Some(local)) => address = local.contains(&rec.ip.addr),
                Some(None) => (pid, settled) = (None, false),
                None => {}
            }
        }
        let obs = Observed {
            config: entry.is_some_and(|e| e.has_config),
            rootfs: entry.is_some_and(|e| e.has_rootfs),
            pid,
            veth: self.veth_facts(rec),
            address,
        };
        (obs, settled)
    }

    /// The host veth of `rec`, if it exists.
    pub fn veth(&self, rec: &ContainerRecord) -> Option<&LinkState> {
        self.veths.get(&rec.id.host_veth())
    }

    /// The host veth of `rec`, against its bridge.
    fn veth_facts(&self, rec: &ContainerRecord) -> Option<VethFacts> {
        let veth = self.veth(rec)?;
        let bridge = self.bridges.get(&rec.vlan.bridge_name());
        Some(VethFacts {
            on_bridge: bridge.is_some_and(|b| veth.master == Some(b.index)),
            up: veth.up,
            mtu_ok: bridge.is_some_and(|b| b.mtu == veth.mtu),
        })
    }

    /// Containers and `vethc_*` links on the host that no record accounts for.
    pub fn foreign(&self, records: &[ContainerRecord]) -> Foreign {
        let ours: HashSet<u64> = records.iter().map(|r| u64::from(r.id.get())).collect();
        let is_ours = |n: Option<&str>| {
            n.and_then(|n| n.parse().ok())
                .is_some_and(|id| ours.contains(&id))
        };
        let mut containers: Vec<String> = self
            .containers
            .keys()
            .filter(|n| !is_ours(n.strip_prefix("container")) && !is_image_name(n))
            .cloned()
            .collect();
        containers.sort();
        let mut links: Vec<String> = self
            .names
            .iter()
            .filter(|n| n.starts_with("vethc_br") && !is_ours(n.strip_prefix("vethc_br")))
            .cloned()
            .collect();
        links.sort();
        Foreign { containers, links }
    }
}

/// The local addresses of each of `pids`' network namespaces, off the reactor when many.
async fn read_addresses(host: &Host, pids: Vec<u32>) -> HashMap<u32, Option<Vec<Ipv4Addr>>> {
    let results = match pids.as_slice() {
        [] => Vec::new(),
        // One (`info`'s): read inline, without two trips through the blocking pool.
        [pid] => vec![host.netns.local_addresses(*pid).await],
        _ => host.netns.local_addresses_of(&pids).await,
    };
    let mut out = HashMap::with_capacity(pids.len());
    for (pid, result) in pids.iter().zip(results) {
        match result {
            Ok(local) => out.insert(*pid, Some(local)),
            Err(e) if e.is_not_found() => out.insert(*pid, None),
            // Not judged this pass: taken for an address lacking, it would get a network
            // repair, which remakes its veth pair (a short outage) for a failed read.
            Err(e) => {
                tracing::warn!(pid, error = %e, "reconcile: cannot read a container's addresses; judged next pass");
                out.insert(*pid, None)
            }
        };
    }
    out
}
