//! The fake kernel's state behind [`super::fake::FakeNetlink`]: namespaces of links, addresses
//! and forwarding tables, the call log and the scripted failures, and the rules the fake
//! keeps as the kernel does (unique names, a veth's peer deleted with it, a deleted link's
//! ports released and its forwarding table gone). Like the kernel, it reports every change of
//! a host link to the view of the links `info` reads ([`LinkTable`]), when one watches.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::link_table::{LinkEvent, LinkTable};
use super::netlink::{FdbEntry, LinkKind, LinkState};
use super::{SysError, SysResult};
use crate::model::Ipv4Cidr;

/// Namespace key of the host (containers are keyed by their init's pid).
pub(super) const HOST: u32 = 0;

/// One network namespace of the fake kernel.
#[derive(Default)]
pub(super) struct Namespace {
    /// Its links, in the order they were made.
    pub(super) links: Vec<LinkState>,
    /// link index -> its IPv4 addresses.
    pub(super) addrs: HashMap<u32, Vec<Ipv4Cidr>>,
    /// The default route's gateway, if set.
    pub(super) default_gw: Option<Ipv4Addr>,
    /// veth index -> (namespace, index) of its peer.
    pub(super) peers: HashMap<u32, (u32, u32)>,
    /// link index -> its own forwarding table, in the order entries were added.
    pub(super) fdb: HashMap<u32, Vec<FdbEntry>>,
}

/// The whole fake kernel, shared by every clone of a fake.
#[derive(Default)]
pub(super) struct World {
    /// The host's namespace ([`HOST`]) and one per container init's pid.
    pub(super) namespaces: HashMap<u32, Namespace>,
    /// The next interface index handed out (unique across namespaces, for simple logs).
    pub(super) next_index: u32,
    /// Every call, in order.
    pub(super) log: Vec<String>,
    /// (call prefix, errno) failures still to play, each once.
    pub(super) failures: Vec<(String, i32)>,
    /// The view of the host's links, fed with every change of one as the kernel's
    /// notifications feed the real one (`super::link_watch`); `None` until a test watches.
    pub(super) watch: Option<LinkTable>,
    /// Changes are not reported (a full socket queue drops notifications) until an overrun.
    pub(super) muted: bool,
}

/// Reports host link `index` as it is now (made or changed) to the watching view.
pub(super) fn report_changed(w: &mut World, ns: u32, index: u32) {
    if ns != HOST || w.muted {
        return;
    }
    let link = w.namespaces[&HOST]
        .links
        .iter()
        .find(|l| l.index == index)
        .cloned();
    if let (Some(watch), Some(link)) = (&mut w.watch, link) {
        watch.apply(LinkEvent::New(link));
    }
}

/// Reports host link `index` gone to the watching view.
fn report_gone(w: &mut World, ns: u32, index: u32) {
    if ns != HOST || w.muted {
        return;
    }
    if let Some(watch) = &mut w.watch {
        watch.apply(LinkEvent::Gone(index));
    }
}

/// Logs `line` under `label` and plays the first scripted failure whose prefix it starts with.
pub(super) fn log_and_play(w: &mut World, label: &str, line: String) -> SysResult<()> {
    w.log.push(format!("{label}: {line}"));
    if let Some(pos) = w
        .failures
        .iter()
        .position(|(p, _)| line.starts_with(p.as_str()))
    {
        let (_, errno) = w.failures.remove(pos);
        return Err(SysError::from_errno(line, errno));
    }
    Ok(())
}

pub(super) fn ns_mut(w: &mut World, ns: u32) -> &mut Namespace {
    w.namespaces
        .get_mut(&ns)
        .expect("namespace checked by call()")
}

pub(super) fn find(w: &World, ns: u32, index: u32, what: &str) -> SysResult<usize> {
    w.namespaces[&ns]
        .links
        .iter()
        .position(|l| l.index == index)
        .ok_or_else(|| SysError::NotFound { what: what.into() })
}

pub(super) fn insert(w: &mut World, ns: u32, mut link: LinkState, what: &str) -> SysResult<u32> {
    if ns_mut(w, ns).links.iter().any(|l| l.name == link.name) {
        return Err(SysError::AlreadyExists { what: what.into() });
    }
    link.index = w.next_index;
    w.next_index += 1;
    let index = link.index;
    ns_mut(w, ns).links.push(link);
    report_changed(w, ns, index);
    Ok(index)
}

pub(super) fn remove_link(w: &mut World, ns: u32, index: u32) {
    let Some(n) = w.namespaces.get_mut(&ns) else {
        return;
    };
    let before = n.links.len();
    n.links.retain(|l| l.index != index);
    let removed = n.links.len() != before;
    let addrs = n.addrs.remove(&index).unwrap_or_default();
    // As the kernel: a link takes the routes through it along, and the default route goes
    // through the link whose prefix holds its gateway.
    if n.default_gw
        .is_some_and(|gw| addrs.iter().any(|a| a.contains(gw)))
    {
        n.default_gw = None;
    }
    n.fdb.remove(&index);
    let mut released = Vec::new();
    for l in &mut n.links {
        if l.master == Some(index) {
            l.master = None;
            released.push(l.index);
        }
    }
    let peer = n.peers.remove(&index);
    if removed {
        report_gone(w, ns, index);
    }
    for port in released {
        report_changed(w, ns, port);
    }
    if let Some((peer_ns, peer_idx)) = peer {
        if let Some(p) = w.namespaces.get_mut(&peer_ns) {
            p.peers.remove(&peer_idx);
        }
        remove_link(w, peer_ns, peer_idx);
    }
}

pub(super) fn new_link(name: &str, kind: LinkKind, mtu: u32) -> LinkState {
    LinkState {
        index: 0,
        name: name.into(),
        kind,
        mtu,
        up: false,
        master: None,
    }
}
