//! In-memory [`Netlink`] for tests: keeps links and addresses per namespace, records every call
//! in one shared log, and fails the calls a test scripts.
//!
//! It models just enough of the kernel to make the fabric and the steps honest: names are
//! unique per namespace, deleting a veth end deletes its peer, a deleted bridge releases its
//! ports, a deleted link takes its forwarding entries along, and a missing object gives
//! [`SysError::NotFound`].

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::fake_world::{
    find, insert, log_and_play, new_link, ns_mut, remove_link, report_changed, Namespace, World,
    HOST,
};
use super::netlink::{FdbEntry, LinkKind, LinkState, Netlink, NetnsOpener, VethSpec, VxlanSpec};
use super::{SysError, SysResult};
use crate::model::Ipv4Cidr;

/// A fake network: the host namespace plus one per container pid. Clones share the world.
#[derive(Clone)]
pub struct FakeNetlink {
    world: Arc<Mutex<World>>,
    ns: u32,
}

impl FakeNetlink {
    /// The namespace this handle speaks in ([`HOST`], or a container init's PID).
    pub(super) fn ns(&self) -> u32 {
        self.ns
    }
}

impl Default for FakeNetlink {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeNetlink {
    /// An empty host namespace.
    pub fn new() -> Self {
        let mut world = World {
            next_index: 10,
            ..World::default()
        };
        world.namespaces.insert(HOST, Namespace::default());
        Self {
            world: Arc::new(Mutex::new(world)),
            ns: HOST,
        }
    }

    pub(super) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a plain device (such as the underlay `eth1`), up.
    pub fn add_device(&self, name: &str, mtu: u32) -> u32 {
        let mut w = self.world();
        let index = w.next_index;
        w.next_index += 1;
        let ns = w.namespaces.entry(self.ns).or_default();
        ns.links.push(LinkState {
            index,
            name: name.into(),
            kind: LinkKind::Other(String::new()),
            mtu,
            up: true,
            master: None,
        });
        let ns = self.ns;
        report_changed(&mut w, ns, index);
        index
    }

    /// Makes the next call whose log line starts with `prefix` fail with `errno`.
    pub fn fail_next(&self, prefix: &str, errno: i32) {
        self.world().failures.push((prefix.into(), errno));
    }

    /// Every call so far, in order, each as `"<ns>: <verb> <args>"`.
    pub fn calls(&self) -> Vec<String> {
        self.world().log.clone()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        self.world().log.clear();
    }

    /// The fake for a container's namespace (created empty on first use).
    pub fn netns_of(&self, pid: u32) -> FakeNetlink {
        self.world().namespaces.entry(pid).or_default();
        Self {
            world: self.world.clone(),
            ns: pid,
        }
    }

    /// Removes a container's namespace, as when its init exits; its veth peers die with it.
    pub fn drop_netns(&self, pid: u32) {
        let mut w = self.world();
        if let Some(ns) = w.namespaces.remove(&pid) {
            for (_, (peer_ns, peer_idx)) in ns.peers {
                remove_link(&mut w, peer_ns, peer_idx);
            }
        }
    }

    /// The default gateway set in this namespace, if any.
    pub fn default_gateway(&self) -> Option<Ipv4Addr> {
        self.world()
            .namespaces
            .get(&self.ns)
            .and_then(|n| n.default_gw)
    }

    /// Changes a link's state directly, to set up a scenario.
    pub fn edit_link(&self, name: &str, edit: impl FnOnce(&mut LinkState)) {
        let mut w = self.world();
        let ns = w.namespaces.get_mut(&self.ns).expect("namespace exists");
        let link = ns
            .links
            .iter_mut()
            .find(|l| l.name == name)
            .expect("link exists");
        edit(link);
        let (ns, index) = (self.ns, link.index);
        report_changed(&mut w, ns, index);
    }

    /// Records a call made by another fake (such as [`super::fake_lxc::FakeLxc`]) in the shared
    /// log, and plays a scripted failure if one matches.
    ///
    /// # Errors
    /// The scripted failure.
    pub fn record(&self, line: String) -> SysResult<()> {
        let mut w = self.world();
        log_and_play(&mut w, "host", line)
    }

    /// Records `line` and plays a scripted failure if one matches.
    fn call(&self, line: String) -> SysResult<MutexGuard<'_, World>> {
        let mut w = self.world();
        let label = if self.ns == HOST {
            "host".to_string()
        } else {
            format!("pid {}", self.ns)
        };
        log_and_play(&mut w, &label, line.clone())?;
        if !w.namespaces.contains_key(&self.ns) {
            return Err(SysError::NotFound { what: line });
        }
        Ok(w)
    }
}

#[async_trait]
impl Netlink for FakeNetlink {
    async fn links(&self) -> SysResult<Vec<LinkState>> {
        let w = self.call("links".into())?;
        Ok(w.namespaces[&self.ns].links.clone())
    }

    /// From the view when the host's links are watched and it answers: a memory read, no
    /// call logged (the kernel is not asked).
    async fn link_watched(&self, name: &str) -> SysResult<Option<LinkState>> {
        let known = match (&self.world().watch, self.ns) {
            (Some(table), HOST) => table.get(name),
            _ => None,
        };
        match known {
            Some(known) => Ok(known),
            None => self.link_brief(name).await,
        }
    }

    async fn link(&self, name: &str) -> SysResult<Option<LinkState>> {
        let w = self.call(format!("link {name}"))?;
        Ok(w.namespaces[&self.ns]
            .links
            .iter()
            .find(|l| l.name == name)
            .cloned())
    }

    async fn create_bridge(&self, name: &str, mtu: u32) -> SysResult<()> {
        let line = format!("create_bridge {name} mtu={mtu}");
        let mut w = self.call(line.clone())?;
        insert(
            &mut w,
            self.ns,
            new_link(name, LinkKind::Bridge, mtu),
            &line,
        )
        .map(drop)
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> SysResult<()> {
        let a = &spec.attrs;
        let line = format!(
            "create_vxlan {} vni={} group={:?} local={:?} port={} underlay={:?} mtu={}",
            spec.name, a.vni, a.group, a.local, a.port, a.underlay, spec.mtu
        );
        let mut w = self.call(line.clone())?;
        let link = new_link(&spec.name, LinkKind::Vxlan(a.clone()), spec.mtu);
        insert(&mut w, self.ns, link, &line).map(drop)
    }

    async fn create_veth(&self, spec: &VethSpec) -> SysResult<()> {
        let line = format!(
            "create_veth {} peer={} pid={} master={} mtu={}",
            spec.host_name, spec.peer_name, spec.peer_netns_pid, spec.master, spec.mtu
        );
        let mut w = self.call(line.clone())?;
        if !w.namespaces.contains_key(&spec.peer_netns_pid) {
            return Err(SysError::NotFound { what: line });
        }
        find(&w, self.ns, spec.master, &line)?;
        let mut host = new_link(&spec.host_name, LinkKind::Veth, spec.mtu);
        host.up = true;
        host.master = Some(spec.master);
        let peer = new_link(&spec.peer_name, LinkKind::Veth, spec.mtu);
        if ns_mut(&mut w, spec.peer_netns_pid)
            .links
            .iter()
            .any(|l| l.name == spec.peer_name)
        {
            return Err(SysError::AlreadyExists { what: line });
        }
        let host_idx = insert(&mut w, self.ns, host, &line)?;
        let peer_idx = insert(&mut w, spec.peer_netns_pid, peer, &line)?;
        ns_mut(&mut w, self.ns)
            .peers
            .insert(host_idx, (spec.peer_netns_pid, peer_idx));
        ns_mut(&mut w, spec.peer_netns_pid)
            .peers
            .insert(peer_idx, (self.ns, host_idx));
        Ok(())
    }

    async fn delete_link(&self, index: u32) -> SysResult<()> {
        let line = format!("delete_link {index}");
        let mut w = self.call(line.clone())?;
        find(&w, self.ns, index, &line)?;
        remove_link(&mut w, self.ns, index);
        Ok(())
    }

    async fn set_up(&self, index: u32) -> SysResult<()> {
        let line = format!("set_up {index}");
        let mut w = self.call(line.clone())?;
        let i = find(&w, self.ns, index, &line)?;
        ns_mut(&mut w, self.ns).links[i].up = true;
        report_changed(&mut w, self.ns, index);
        Ok(())
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> SysResult<()> {
        let line = format!("set_mtu {index} {mtu}");
        let mut w = self.call(line.clone())?;
        let i = find(&w, self.ns, index, &line)?;
        ns_mut(&mut w, self.ns).links[i].mtu = mtu;
        report_changed(&mut w, self.ns, index);
        Ok(())
    }

    async fn set_master(&self, index: u32, master: Option<u32>) -> SysResult<()> {
        let line = format!("set_master {index} {master:?}");
        let mut w = self.call(line.clone())?;
        let i = find(&w, self.ns, index, &line)?;
        if let Some(m) = master {
            find(&w, self.ns, m, &line)?;
        }
        ns_mut(&mut w, self.ns).links[i].master = master;
        report_changed(&mut w, self.ns, index);
        Ok(())
    }

    async fn addresses(&self, index: u32) -> SysResult<Vec<Ipv4Cidr>> {
        let w = self.call(format!("addresses {index}"))?;
        Ok(w.namespaces[&self.ns]
            .addrs
            .get(&index)
            .cloned()
            .unwrap_or_default())
    }

    async fn add_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()> {
        let line = format!("add_address {index} {addr}");
        let mut w = self.call(line.clone())?;
        find(&w, self.ns, index, &line)?;
        let list = ns_mut(&mut w, self.ns).addrs.entry(index).or_default();
        if list.contains(&addr) {
            return Err(SysError::AlreadyExists { what: line });
        }
        list.push(addr);
        Ok(())
    }

    async fn delete_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()> {
        let line = format!("delete_address {index} {addr}");
        let mut w = self.call(line.clone())?;
        let list = ns_mut(&mut w, self.ns).addrs.entry(index).or_default();
        let before = list.len();
        list.retain(|a| *a != addr);
        if list.len() == before {
            return Err(SysError::NotFound { what: line });
        }
        Ok(())
    }

    async fn fdb_entries(&self, index: u32) -> SysResult<Vec<FdbEntry>> {
        let line = format!("fdb_entries {index}");
        let w = self.call(line.clone())?;
        find(&w, self.ns, index, &line)?;
        let fdb = &w.namespaces[&self.ns].fdb;
        Ok(fdb.get(&index).cloned().unwrap_or_default())
    }

    async fn append_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()> {
        let line = format!("append_fdb_entry {index} {entry}");
        let mut w = self.call(line.clone())?;
        find(&w, self.ns, index, &line)?;
        let list = ns_mut(&mut w, self.ns).fdb.entry(index).or_default();
        // As the kernel: appending an entry that is there already changes nothing.
        if !list.contains(entry) {
            list.push(*entry);
        }
        Ok(())
    }

    async fn delete_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()> {
        let line = format!("delete_fdb_entry {index} {entry}");
        let mut w = self.call(line.clone())?;
        find(&w, self.ns, index, &line)?;
        let list = ns_mut(&mut w, self.ns).fdb.get_mut(&index);
        let Some(list) = list.filter(|l| l.contains(entry)) else {
            return Err(SysError::NotFound { what: line });
        };
        list.retain(|e| e != entry);
        Ok(())
    }

    async fn add_default_route(&self, gateway: Ipv4Addr) -> SysResult<()> {
        let line = format!("add_default_route {gateway}");
        let mut w = self.call(line.clone())?;
        let ns = ns_mut(&mut w, self.ns);
        if ns.default_gw.is_some() {
            return Err(SysError::AlreadyExists { what: line });
        }
        ns.default_gw = Some(gateway);
        Ok(())
    }
}

#[async_trait]
impl NetnsOpener for FakeNetlink {
    async fn open_netns_of(&self, pid: u32) -> SysResult<Box<dyn Netlink>> {
        let w = self.world();
        if !w.namespaces.contains_key(&pid) {
            return Err(SysError::NotFound {
                what: format!("open the network namespace of pid {pid}"),
            });
        }
        drop(w);
        Ok(Box::new(self.netns_of(pid)))
    }

    async fn has_own_netns(&self, pid: u32) -> SysResult<bool> {
        Ok(self.world().namespaces.contains_key(&pid))
    }

    async fn local_addresses(&self, pid: u32) -> SysResult<Vec<std::net::Ipv4Addr>> {
        let ns = self.open_netns_of(pid).await?;
        let mut out = Vec::new();
        for link in ns.links().await? {
            out.extend(ns.addresses(link.index).await?.iter().map(|a| a.addr));
        }
        Ok(out)
    }
}
