//! The IPv4 addresses of another network namespace, asked of the kernel from ours: the
//! namespace's ID as our namespace knows it (RTM_GETNSID by the PID of a process in it), then
//! an address dump of that namespace (RTM_GETADDR with `IFA_TARGET_NETNSID`, which the kernel
//! honours on a socket with `NETLINK_GET_STRICT_CHK`). Two small requests on one connection,
//! where reading `/proc/<pid>/net/fib_trie` makes the kernel print both routing tables as text
//! (≈ 20–35 µs a container here, two thirds of a 1,000-record pass's CPU: docs/PERFORMANCE.md).
//!
//! A container's namespace has an ID in ours from the moment its veth pair crossed over (the
//! kernel assigns one to report the peer's namespace); one without (`-1`) is answered `None`,
//! and the caller reads `fib_trie` instead. Nothing is cached: an ID outlives nothing it names,
//! and a PID is checked alive by the caller just before.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::Handle;

use super::{SysError, SysResult};

/// A netlink connection with strict checking, in the namespace it was opened in.
#[derive(Clone)]
pub struct NsAddresses {
    handle: Handle,
    /// One address dump at a time: a netlink socket runs one dump at a time and refuses a
    /// second one asked meanwhile (`EBUSY`); `info` requests and a pass share the socket.
    dump: Arc<tokio::sync::Mutex<()>>,
}

impl NsAddresses {
    /// Opens it in the calling thread's network namespace; must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the socket cannot be opened or set to strict checking.
    pub fn connect() -> SysResult<Self> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| SysError::Io { what, source }
        };
        let (mut conn, handle, _) =
            rtnetlink::new_connection().map_err(io("open a netlink socket for addresses"))?;
        conn.socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true)
            .map_err(io("set NETLINK_GET_STRICT_CHK"))?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            dump: Arc::default(),
        })
    }

    /// The IPv4 addresses of the network namespace of process `pid`; `None` when our namespace
    /// has no ID for it.
    ///
    /// # Errors
    /// [`SysError::NotFound`] when the process is gone; the kernel's error otherwise.
    pub async fn of_pid(&self, pid: u32) -> SysResult<Option<Vec<Ipv4Addr>>> {
        let Some(nsid) = self.nsid_of(pid).await? else {
            return Ok(None);
        };
        let _one = self.dump.lock().await;
        let mut request = self.handle.address().get();
        let msg = request.message_mut();
        msg.header.family = AddressFamily::Inet;
        msg.attributes.push(AddressAttribute::TargetNetNsId(nsid));
        let msgs: Vec<_> = request.execute().try_collect().await.map_err(|e| {
            super::rtnl::map_err(format!("list the addresses of namespace {nsid}"), e)
        })?;
        let mut out = Vec::new();
        for a in msgs.iter().flat_map(|m| &m.attributes) {
            if let AddressAttribute::Local(IpAddr::V4(v4)) = a {
                if !out.contains(v4) {
                    out.push(*v4);
                }
            }
        }
        Ok(Some(out))
    }

    /// Our namespace's ID for the namespace of `pid`, `None` if it has none.
    async fn nsid_of(&self, pid: u32) -> SysResult<Option<i32>> {
        let what = format!("get the namespace ID of pid {pid}");
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Pid(pid));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut replies = self
            .handle
            .clone()
            .request(req)
            .map_err(|e| super::rtnl::map_err(&what, e))?;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    let id = m.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(id) => Some(*id),
                        _ => None,
                    });
                    return Ok(id.filter(|id| *id >= 0));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(SysError::from_errno(what, -e.raw_code()));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}
