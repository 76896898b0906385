//! A VXLAN device's own forwarding table over rtnetlink: RTM_GETNEIGH / RTM_NEWNEIGH /
//! RTM_DELNEIGH of family AF_BRIDGE with NTF_SELF, what `bridge fdb show|append|del ... self`
//! sends.
//!
//! rtnetlink's neighbour requests cannot append (its add sends NLM_F_EXCL or NLM_F_REPLACE,
//! and either leaves one destination per MAC, where the flood entry needs one per peer), so
//! the append is sent as a raw request with NLM_F_CREATE | NLM_F_APPEND. The dump goes on a
//! connection with NETLINK_GET_STRICT_CHK when there is one: only then does the kernel honour
//! the header's interface index and dump that device alone (`valid_fdb_dump_strict` in
//! net/core/rtnetlink.c); without it every device's table comes back, filtered here.

use std::net::Ipv4Addr;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use super::netlink::FdbEntry;
use super::rtnl::map_err;
use super::{SysError, SysResult};

/// The entries of device `index`'s own table that send to an IPv4 address, dumped on `dump`
/// (a strict-checking connection filters in the kernel; any other dumps every device).
pub(super) async fn entries(dump: &Handle, index: u32) -> SysResult<Vec<FdbEntry>> {
    let mut request = dump
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge);
    request.message_mut().header.ifindex = index;
    let msgs: Vec<NeighbourMessage> = request
        .execute()
        .try_collect()
        .await
        .map_err(|e| map_err(format!("list fdb entries of link {index}"), e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.ifindex == index && m.header.flags.contains(NeighbourFlags::Own))
        .filter_map(entry_of)
        .collect())
}

/// The entry a message describes, when it has a MAC and an IPv4 destination (the bridge's
/// own entries for a port have no destination; IPv6 and nexthop ones are not ours).
fn entry_of(msg: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
            // Family AF_BRIDGE: the parser leaves the destination as bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            _ => {}
        }
    }
    Some(FdbEntry {
        mac: mac?,
        dst: dst?,
    })
}

/// The message naming `entry` on device `index`: static (NUD_PERMANENT, as `bridge fdb`
/// makes it) in the device's own table (NTF_SELF).
fn message(index: u32, entry: &FdbEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)),
    ];
    msg
}

/// Appends `entry` to device `index`'s own table.
pub(super) async fn append(handle: &Handle, index: u32, entry: &FdbEntry) -> SysResult<()> {
    let what = format!("append fdb entry {entry} to link {index}");
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(message(index, entry)));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    acknowledged(handle, what, req).await
}

/// Removes `entry` (that destination only) from device `index`'s own table.
pub(super) async fn delete(handle: &Handle, index: u32, entry: &FdbEntry) -> SysResult<()> {
    let what = format!("delete fdb entry {entry} from link {index}");
    handle
        .neighbours()
        .del(message(index, entry))
        .execute()
        .await
        .map_err(|e| map_err(what, e))
}

/// Sends `req` and waits for the kernel's acknowledgement.
async fn acknowledged(
    handle: &Handle,
    what: String,
    req: NetlinkMessage<RouteNetlinkMessage>,
) -> SysResult<()> {
    let mut responses = handle
        .clone()
        .request(req)
        .map_err(|e| map_err(what.clone(), e))?;
    while let Some(msg) = responses.next().await {
        if let NetlinkPayload::Error(err) = msg.payload {
            if err.code.is_some() {
                return Err(map_err(what, rtnetlink::Error::NetlinkError(err)));
            }
        }
    }
    Ok(())
}

/// Opens the strict-checking connection the dumps go on, in the calling thread's namespace.
///
/// # Errors
/// When the socket cannot be opened.
pub(super) fn connect_dump() -> SysResult<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection_with_strict_check().map_err(|source| SysError::Io {
            what: "open netlink socket for fdb dumps".into(),
            source,
        })?;
    tokio::spawn(conn);
    Ok(handle)
}
