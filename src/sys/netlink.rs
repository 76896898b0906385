//! The netlink verbs the rest of the crate may use, as a trait, and the link facts they return.
//!
//! [`super::rtnl::RtNetlink`] implements them over rtnetlink; `sys::fake::FakeNetlink` (test-util)
//! records calls and plays scripted failures for unit tests.

use std::net::Ipv4Addr;

use async_trait::async_trait;

use super::SysResult;
use crate::model::Ipv4Cidr;

/// What kind of device a link is, with the attributes we check for VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A VXLAN device.
    Vxlan(VxlanAttrs),
    /// One end of a veth pair.
    Veth,
    /// Anything else, by its kernel kind name (`dummy`, `""` for physical devices).
    Other(String),
}

impl LinkKind {
    /// The kernel's name for the kind, for messages.
    pub fn name(&self) -> &str {
        match self {
            Self::Bridge => "bridge",
            Self::Vxlan(_) => "vxlan",
            Self::Veth => "veth",
            Self::Other(k) if k.is_empty() => "device",
            Self::Other(k) => k,
        }
    }
}

/// The VXLAN attributes that decide whether two servers can talk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanAttrs {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Multicast group used for flooding, if any.
    pub group: Option<Ipv4Addr>,
    /// Source address of the encapsulated packets, if set (unicast flooding sets it to this
    /// server's underlay address; the kernel reports it only when set).
    pub local: Option<Ipv4Addr>,
    /// UDP destination port (4789 is IANA's; the kernel default 8472 is Linux's legacy one).
    pub port: u16,
    /// Index of the underlay device, if bound to one.
    pub underlay: Option<u32>,
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device kind.
    pub kind: LinkKind,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Index of the bridge it is a port of.
    pub master: Option<u32>,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Interface name.
    pub name: String,
    /// The attributes it must have.
    pub attrs: VxlanAttrs,
    /// MTU in bytes.
    pub mtu: u32,
}

/// One entry of a VXLAN device's own forwarding table (`bridge fdb ... self`): frames for
/// `mac` are sent to `dst`. The all-zeros MAC is the flood entry: the kernel copies broadcast
/// and unknown frames to every destination listed under it (head-end replication), as it does
/// for one multicast group otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    /// The inner destination MAC.
    pub mac: [u8; 6],
    /// The underlay address the frames are sent to.
    pub dst: Ipv4Addr,
}

impl FdbEntry {
    /// The MAC of the flood entry.
    pub const FLOOD_MAC: [u8; 6] = [0; 6];

    /// The flood entry to `dst`.
    pub fn flood(dst: Ipv4Addr) -> Self {
        Self {
            mac: Self::FLOOD_MAC,
            dst,
        }
    }

    /// Whether this is a flood entry (all-zeros MAC).
    pub fn is_flood(&self) -> bool {
        self.mac == Self::FLOOD_MAC
    }
}

impl std::fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.mac;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} dst {}",
            m[0], m[1], m[2], m[3], m[4], m[5], self.dst
        )
    }
}

/// A veth pair whose peer is created directly inside another network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Name of the end that stays here.
    pub host_name: String,
    /// Name of the end created in the other namespace.
    pub peer_name: String,
    /// A process in the namespace that receives the peer (the container's init).
    pub peer_netns_pid: u32,
    /// Bridge the host end is attached to.
    pub master: u32,
    /// MTU of both ends.
    pub mtu: u32,
    /// MAC of the peer; the kernel picks a random one when `None`.
    pub peer_mac: Option<[u8; 6]>,
}

/// Netlink verbs, in one network namespace.
///
/// Errors carry the object and action, with errno mapped (see [`super::SysError`]).
#[async_trait]
pub trait Netlink: Send + Sync {
    /// The index of link `name`.
    ///
    /// # Errors
    /// [`super::SysError::NotFound`] when there is no such link; the kernel's error otherwise.
    async fn index_of(&self, name: &str) -> super::SysResult<u32> {
        self.link(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| super::SysError::NotFound {
                what: format!("link {name}"),
            })
    }

    /// Every link in the namespace.
    async fn links(&self) -> SysResult<Vec<LinkState>>;

    /// The link called `name`, or `None`.
    async fn link(&self, name: &str) -> SysResult<Option<LinkState>>;

    /// Every port of every bridge in the namespace: index, name, master, up and MTU (the kind
    /// is not reported). Much cheaper than [`Self::links`] with many veths: the kernel fills
    /// a full link message of a veth with its peer's namespace ID, found by a walk of every
    /// namespace ID (`peernet2id`), so a full dump grows with veths × namespaces.
    async fn bridge_ports(&self) -> SysResult<Vec<LinkState>> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .filter(|l| l.master.is_some())
            .collect())
    }

    /// Link `name` with its index, name, master, up and MTU only (the kind is not reported),
    /// read cheaper than [`Self::link`]: for `info`, per request.
    async fn link_brief(&self, name: &str) -> SysResult<Option<LinkState>> {
        self.link(name).await
    }

    /// Link `name` as [`Self::link_brief`] reads it, from the view of the namespace's links
    /// the implementation keeps current by the kernel's notifications when it keeps one (the
    /// daemon's host handle: [`super::link_watch`]), a memory read for `info`; from the kernel
    /// when it keeps none, or while its view cannot answer.
    ///
    /// # Errors
    /// As [`Self::link_brief`], when the kernel is asked.
    async fn link_watched(&self, name: &str) -> SysResult<Option<LinkState>> {
        self.link_brief(name).await
    }

    /// The name of every link in the namespace, read cheaply (see [`Self::bridge_ports`]).
    async fn link_names(&self) -> SysResult<Vec<String>> {
        Ok(self.links().await?.into_iter().map(|l| l.name).collect())
    }

    /// Creates a bridge with this MTU, down, with multicast snooping off (VXLAN floods unknown
    /// destinations by multicast and snooping would starve ports that never sent an IGMP report).
    async fn create_bridge(&self, name: &str, mtu: u32) -> SysResult<()>;

    /// Creates a VXLAN device, down.
    async fn create_vxlan(&self, spec: &VxlanSpec) -> SysResult<()>;

    /// Creates a veth pair in one request: the host end attached to its bridge and up, the peer
    /// born inside the other namespace (no move afterwards).
    async fn create_veth(&self, spec: &VethSpec) -> SysResult<()>;

    /// Deletes a link (and, for a veth, its peer).
    async fn delete_link(&self, index: u32) -> SysResult<()>;

    /// Sets IFF_UP.
    async fn set_up(&self, index: u32) -> SysResult<()>;

    /// Sets the MTU.
    async fn set_mtu(&self, index: u32, mtu: u32) -> SysResult<()>;

    /// Makes the link a port of `master`, or detaches it with `None`.
    async fn set_master(&self, index: u32, master: Option<u32>) -> SysResult<()>;

    /// IPv4 addresses on a link.
    async fn addresses(&self, index: u32) -> SysResult<Vec<Ipv4Cidr>>;

    /// Adds an IPv4 address.
    async fn add_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()>;

    /// Removes an IPv4 address.
    async fn delete_address(&self, index: u32, addr: Ipv4Cidr) -> SysResult<()>;

    /// The entries of VXLAN device `index`'s own forwarding table that send to an IPv4
    /// address (`bridge fdb show dev <name> self`): static and learned ones alike. The
    /// bridge's entries for the port are not among them.
    ///
    /// # Errors
    /// The kernel's error (a link that is gone may answer an empty table rather than
    /// [`super::SysError::NotFound`]: a dump filtered by index finds nothing).
    async fn fdb_entries(&self, index: u32) -> SysResult<Vec<FdbEntry>>;

    /// Adds `entry` to VXLAN device `index`'s own table, beside any entries of the same MAC
    /// to other destinations (`bridge fdb append`: NLM_F_APPEND, so several flood entries
    /// coexist). Adding an entry that is there already succeeds.
    ///
    /// # Errors
    /// [`super::SysError::NotFound`] when there is no such link; the kernel's error otherwise.
    async fn append_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()>;

    /// Removes `entry` (that MAC to that destination only) from VXLAN device `index`'s own
    /// table.
    ///
    /// # Errors
    /// [`super::SysError::NotFound`] when the entry or the link is not there.
    async fn delete_fdb_entry(&self, index: u32, entry: &FdbEntry) -> SysResult<()>;

    /// Adds the IPv4 default route via `gateway`.
    async fn add_default_route(&self, gateway: Ipv4Addr) -> SysResult<()>;
}

/// Opens netlink handles in other network namespaces, such as a container's.
#[async_trait]
pub trait NetnsOpener: Send + Sync {
    /// A netlink handle inside the network namespace of process `pid`.
    async fn open_netns_of(&self, pid: u32) -> SysResult<Box<dyn Netlink>>;

    /// Whether process `pid` already lives in a network namespace of its own. A container's
    /// init PID is visible before LXC has finished moving it into its namespace.
    async fn has_own_netns(&self, pid: u32) -> SysResult<bool>;

    /// The IPv4 addresses local to the network namespace of process `pid`, read without
    /// entering it.
    async fn local_addresses(&self, pid: u32) -> SysResult<Vec<std::net::Ipv4Addr>>;

    /// [`Self::local_addresses`] of each of `pids`, in order: one call for a reconcile pass.
    async fn local_addresses_of(&self, pids: &[u32]) -> Vec<SysResult<Vec<std::net::Ipv4Addr>>> {
        let mut out = Vec::with_capacity(pids.len());
        for &pid in pids {
            out.push(self.local_addresses(pid).await);
        }
        out
    }
}
