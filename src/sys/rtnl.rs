//! The real [`Netlink`]: one rtnetlink connection per network namespace.
//!
//! A netlink socket belongs to the network namespace it was opened in, for its whole life. To
//! reach a container's namespace we open the socket on a short-lived thread that has entered
//! that namespace with setns(2); the thread ends, the socket stays where it was born. (A pooled
//! thread must not be used: its namespace would leak into later work.)

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

use super::lean_links::LeanLinks;
use super::link_watch::LinkWatch;
use super::netlink::{FdbEntry, LinkKind, LinkState, Netlink, VethSpec, VxlanAttrs, VxlanSpec};
use super::{SysError, SysResult};
use crate::model::Ipv4Cidr;

/// Netlink in one network namespace, over rtnetlink.
#[derive(Clone)]
pub struct RtNetlink {
    handle: Handle,
    /// The lean link reads' connection, in the same namespace (the host's only: a
    /// container's namespace is never asked for its bridge ports, and `info` reads the host).
    lean: Option<LeanLinks>,
    /// `/proc/.../net` of the namespace, for what `/proc` lists cheaper than netlink.
    proc_net: String,
    /// A strict-checking connection for FDB dumps, which the kernel then filters by device
    /// (`fdb.rs`); the host's only, as for `lean`.
    fdb_dump: Option<Handle>,
    /// The view of the namespace's links kept current by its notifications, for `info`
    /// (the daemon's host handle only: [`Self::watching_links`]).
    watch: Option<LinkWatch>,
}

impl RtNetlink {
    /// Connects in the calling process's network namespace. Must run inside a tokio runtime:
    /// the connection is driven by a spawned task.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn connect() -> SysResult<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| SysError::Io {
            what: "open netlink socket".into(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            lean: Some(LeanLinks::connect()?),
            proc_net: "/proc/thread-self/net".into(),
            fdb_dump: Some(super::fdb::connect_dump()?),
            watch: None,
        })
    }

    /// The same handle, keeping a view of the namespace's links current for
    /// [`Netlink::link_watched`] ([`LinkWatch`]); a read of it after this handle's own link
    /// writes waits until the view shows them. For `serve`: a one-shot command has no use
    /// for it.
    ///
    /// # Errors
    /// When the watch's socket cannot be opened.
    pub fn watching_links(mut self) -> SysResult<Self> {
        self.watch = Some(LinkWatch::start()?);
        Ok(self)
    }

    /// Whether [`Netlink::link_watched`] answers from the view now (its dump is in), rather
    /// than from the kernel.
    pub fn links_watched(&self) -> bool {
        self.watch.as_ref().is_some_and(LinkWatch::is_synced)
    }

    /// Notes a link write that `done` says the kernel took, for the view: the next read of it
    /// waits until it shows the change, so that an `info` after a step sees what the step
    /// did. A refused write changed nothing to wait for.
    fn note_write<T>(&self, done: &Result<T, rtnetlink::Error>) {
        if let (Some(watch), Ok(_)) = (&self.watch, done) {
            watch.wrote();
        }
    }

    /// Connects inside the network namespace of process `pid`.
    ///
    /// # Errors
    /// When the process is gone, its namespace cannot be entered or the socket cannot be opened.
    pub async fn connect_netns_of(pid: u32) -> SysResult<Self> {
        let what = format!("open netlink socket in the network namespace of pid {pid}");
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = format!("/proc/{pid}/ns/net");
        std::thread::spawn(move || {
            let result = (|| {
                let ns = std::fs::File::open(&path)?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let _guard = runtime.enter();
                rtnetlink::new_connection()
            })();
            let _ = tx.send(result);
        });
        let result = rx.await.map_err(|_| SysError::Unexpected {
            what: what.clone(),
            detail: "the namespace thread ended without an answer".into(),
        })?;
        let (conn, handle, _) = result.map_err(|source| match source.raw_os_error() {
            Some(e) if e == libc::ENOENT || e == libc::ESRCH => SysError::NotFound { what },
            _ => SysError::Io { what, source },
        })?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            lean: None,
            proc_net: format!("/proc/{pid}/net"),
            fdb_dump: None,
            watch: None,
        })
    }
}

/// The interface names of a `/proc/net/dev` listing (after its two header lines).
fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_string()))
        .collect()
}

/// Maps an rtnetlink error to a [`SysError`] naming `what`.
pub(crate) fn map_err(what: impl std::fmt::Display, err: rtnetlink::Error) -> SysError {
    match err {
        rtnetlink::Error::NetlinkError(msg) => SysError::from_errno(what, -msg.raw_code()),
        other => SysError::Unexpected {
            what: what.to_string(),
            detail: other.to_string(),
        },
    }
}

fn parse_link(msg: LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: msg.header.index,
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => state.name = name,
            LinkAttribute::Mtu(mtu) => state.mtu = mtu,
            LinkAttribute::Controller(master) => state.master = Some(master),
            LinkAttribute::LinkInfo(infos) => state.kind = parse_kind(infos),
            _ => {}
        }
    }
    state
}

fn parse_kind(infos: Vec<LinkInfo>) -> LinkKind {
    let mut kind = LinkKind::Other(String::new());
    let mut vxlan = None;
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = LinkKind::Veth,
            LinkInfo::Kind(InfoKind::Vxlan) => {
                kind = LinkKind::Vxlan(VxlanAttrs {
                    vni: 0,
                    group: None,
                    local: None,
                    port: 0,
                    underlay: None,
                })
            }
            LinkInfo::Kind(other) => kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(data)) => vxlan = Some(data),
            _ => {}
        }
    }
    if let (LinkKind::Vxlan(attrs), Some(data)) = (&mut kind, vxlan) {
        for item in data {
            match item {
                InfoVxlan::Id(vni) => attrs.vni = vni,
                InfoVxlan::Group(g) => attrs.group = Some(g),
                InfoVxlan::Local(l) => attrs.local = Some(l),
                InfoVxlan::Port(p) => attrs.port = p,
                InfoVxlan::Link(l) => attrs.underlay = Some(l),
                _ => {}
            }
        }
    }
    kind
}

fn address_of(msg: &AddressMessage) -> Option<Ipv4Cidr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(addr)) | AddressAttribute::Address(IpAddr::V4(addr)) => {
            Some(Ipv4Cidr {
                addr: *addr,
                prefix: msg.header.prefix_len,
            })
        }
        _ => None,
    })
}

impl RtNetlink {
    async fn set_link(&self, what: String, msg: LinkMessage) -> SysResult<()> {
        let done = self.handle.link().set(msg).execute().await;
        self.note_write(&done);
        done.map_err(|e| map_err(what, e))
    }

    async fn add_link(&self, what: String, msg: LinkMessage) -> SysResult<()> {
        let done = self.handle.link().add(msg).execute().await;
        self.note_write(&done);
        done.map_err(|e| map_err(what, e))
    }

    async fn address_messages(&self, index: u32) -> SysResult<Vec<AddressMessage>> {
        // IPv4 only, asked of the kernel: every veth on the host has an IPv6 link-local
        // address, and an unfiltered dump (filtered here after) parsed them all.
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request.message_mut().header.family = AddressFamily::Inet;
        request
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| map_err(format!("list addresses of link {index}"), e))
            .map(|msgs| {
                msgs.into_iter()
                    .filter(|m| m.header.index == index)
                    .collect()
            })
    }
}

#[async_trait]
impl Netlink for RtNetlink {
    async fn links(&self) -> SysResult<Vec<LinkState>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| map_err("list links", e))?;
        Ok(msgs.into_iter().map(parse_link).collect())
    }

    async fn bridge_ports(&self) -> SysResult<Vec<LinkState>> {
        match &self.lean {
            Some(lean) => lean.bridge_ports().await,
            // A container's namespace (no lean connection) is never asked: a full dump.
            None => Ok(self
                .links()
                .await?
                .into_iter()
                .filter(|l| l.master.is_some())
                .collect()),
        }
    }

    async fn link_brief(&self, name: &str) -> SysResult<Option<LinkState>> {
        match &self.lean {
            Some(lean) => lean.link(name).await,
            None => self.link(name).await,
        }
    }

    async fn link_watched(&self, name: &str) -> SysResult<Option<LinkState>> {
        if let Some(watch) = &self.watch {
            watch.catch_up().await;
        }
        match self.watch.as_ref().and_then(|w| w.link(name)) {
            Some(known) => Ok(known),
            None => self.link_brief(name).await,
        }
    }

    async fn link_names(&self) -> SysResult<Vec<String>> {
        let path = format!("{}/dev", self.proc_net);
        let text = super::monitor::read_small(&path).map_err(|source| SysError::Io {
            what: format!("read {path}"),
            source,
        })?;
        Ok(parse_net_dev(&String::from_utf8_lossy(&text)))
    }

    async fn link(&self, name: &str) -> SysResult<Option<LinkState>> {
        let result: Result<Vec<LinkMessage>, _> = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_collect()
            .await;
        match result.map_err(|e| map_err(format!("get link {name}"), e)) {
            Ok(msgs) => Ok(msgs.into_iter().next().map(parse_link)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_bridge(&self, name: &str, mtu: u32) -> SysResult<()> {
        let msg = LinkBridge::new(name).mtu(mtu).mcast_snooping(false).build();
        self.add_link(format!("create bridge {name}"), msg).await
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> SysResult<()> {
        let mut b = LinkVxlan::new(&spec.name, spec.attrs.vni)
            .port(spec.attrs.port)
            .learning(true)
            .mtu(spec.mtu);
        if let Some(group) = spec.attrs.group {
            b = b.group(group);
        }
        if let Some(local) = spec.attrs.local {
            b = b.local(local);
        }
        if let Some(dev) = spec.attrs.underlay {
            b = b.dev(dev);
        }
        self.add_link(format!("create vxlan {}", spec.name), b.build())
            .await
    }

    async fn create_veth(&self, spec: &VethSpec) -> SysResult<()> {
        let mut peer = LinkUnspec::new_with_name(&spec.peer_name)
            .mtu(spec.mtu)
            .setns_by_pid(spec.peer_netns_pid);
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let peer = peer.build();
        let msg = LinkVeth::new(&spec.host_name, &spec.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(spec.mtu)
            .controller(spec.master)
            .up()
            .build();
        let what = format!(
            "create veth {} with peer {} in the namespace of pid {}",
            spec.host_name, spec.peer_name, spec.peer_netns_pid
        );
        self.add_link(what, msg).await
    }

    async fn delete_link(&self, index: u32) -> SysResult<()> {
        let done = self.handle.link().del(index).execute().await;
        self.note_write(&done);
        done.map_err(|e| map_err(format!("delete link {index}"), e))
    }

    async fn set_up(&self, index: u32) -> SysResult<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(format!("set link {index} up"), msg).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> SysResult<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(format!("set mtu {mtu} on link {index}"), msg)
            .await
    }

    async fn set_master(&self, index: u32, master: Option<u32>) -> SysResult<()> {
        let b = LinkUnspec::new_with_index(index);
        let (what, msg) = match master {
            Some(m) => (
                format!("attach link {index} to bridge {m}"),
                b.controller(m).build(),
            ),
            None => (
                format!("detach link {index} from its bridge"),
                b.nocontroller().build(),
            ),
        };
        self.set_link(what, msg).await
    }

    async fn addresses(&self, index: u32) -> SysResult<Vec<Ipv4Cidr>> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs.iter().filter_map(address_of).collect())
    }

    async fn add_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr), addr.prefix)
            .execute()
            .await
            .map_err(|e| map_err(format!("add address {addr} to link {index}"), e))
    }

    async fn delete_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()> {
        let what = format!("delete address {addr} from link {index}");
        let msgs = self.address_messages(index).await?;
        let Some(msg) = msgs.into_iter().find(|m| address_of(m) == Some(addr)) else {
            return Err(SysError::NotFound { what });
        };
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| map_err(what, e))
    }

    async fn fdb_entries(&self, index: u32) -> SysResult<Vec<FdbEntry>> {
        super::fdb::entries(self.fdb_dump.as_ref().unwrap_or(&self.handle), index).await
    }

    async fn append_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()> {
        super::fdb::append(&self.handle, index, entry).await
    }

    async fn delete_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()> {
        super::fdb::delete(&self.handle, index, entry).await
    }

    async fn add_default_route(&self, gateway: Ipv4Addr) -> SysResult<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| map_err(format!("add default route via {gateway}"), e))
    }
}
