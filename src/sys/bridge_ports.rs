//! The bridge-port dump of a reconcile pass, parsed lean: an RTM_GETLINK dump of family
//! AF_BRIDGE on a netlink connection of its own, whose messages are read for the five facts a
//! pass needs (index, name, master, up, MTU) and nothing else. The bridge driver fills each
//! port with some thirty `IFLA_PROTINFO` attributes (STP state, costs, timers, flags), which
//! rtnetlink's full parse turned into typed values at ≈ 8 µs a port, the bulk of the dump's
//! cost at 1,000 ports (docs/PERFORMANCE.md).

use futures::StreamExt;
use rtnetlink::packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, SocketAddr};

use super::netlink::{LinkKind, LinkState};
use super::{SysError, SysResult};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const AF_BRIDGE: u8 = 7;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 1;

/// A message of the lean connection: the dump request out, a port (or anything else) in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMessage {
    /// RTM_GETLINK, family AF_BRIDGE.
    Request,
    /// An RTM_NEWLINK of the dump, as far as a pass reads it.
    Port(LinkState),
    /// Any other message.
    Other,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed bridge port message: {0}")]
pub struct PortParseError(&'static str);

impl NetlinkSerializable for PortMessage {
    fn message_type(&self) -> u16 {
        RTM_GETLINK
    }

    fn buffer_len(&self) -> usize {
        IFINFOMSG_LEN
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..IFINFOMSG_LEN].fill(0);
        buffer[0] = AF_BRIDGE;
    }
}

impl NetlinkDeserializable for PortMessage {
    type Error = PortParseError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        if header.message_type != RTM_NEWLINK {
            return Ok(Self::Other);
        }
        parse_port(payload).map(Self::Port)
    }
}

impl From<PortMessage> for rtnetlink::packet_core::NetlinkPayload<PortMessage> {
    fn from(m: PortMessage) -> Self {
        NetlinkPayload::InnerMessage(m)
    }
}

/// An ifinfomsg and its top-level attributes; nested ones are skipped whole.
fn parse_port(payload: &[u8]) -> Result<LinkState, PortParseError> {
    let head = payload
        .get(..IFINFOMSG_LEN)
        .ok_or(PortParseError("short ifinfomsg"))?;
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut port = LinkState {
        index: u32_at(head, 4),
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        up: u32_at(head, 8) & IFF_UP != 0,
        master: None,
    };
    let mut rest = &payload[IFINFOMSG_LEN..];
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < 4 {
            return Err(PortParseError("attribute shorter than its header"));
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = rest
            .get(4..len)
            .ok_or(PortParseError("attribute overruns"))?;
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                port.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_MTU if value.len() >= 4 => port.mtu = u32_at(value, 0),
            IFLA_MASTER if value.len() >= 4 => port.master = Some(u32_at(value, 0)),
            _ => {}
        }
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or_default();
    }
    Ok(port)
}

/// A netlink connection for the bridge-port dump, in the namespace it was opened in.
#[derive(Clone)]
pub struct PortDumper {
    handle: ConnectionHandle<PortMessage>,
}

impl PortDumper {
    /// Opens it in the calling thread's network namespace; must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn connect() -> SysResult<Self> {
        let (conn, handle, _) =
            rtnetlink::proto::new_connection(NETLINK_ROUTE).map_err(|source| SysError::Io {
                what: "open netlink socket for the bridge-port dump".into(),
                source,
            })?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Every port of every bridge: index, name, master, up, MTU.
    ///
    /// # Errors
    /// When the kernel refuses the dump or a message cannot be read.
    pub async fn ports(&self) -> SysResult<Vec<LinkState>> {
        let what = "list bridge ports";
        let mut req = NetlinkMessage::from(PortMessage::Request);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.finalize();
        let mut replies = self
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|e| SysError::Unexpected {
                what: what.into(),
                detail: e.to_string(),
            })?;
        let mut out = Vec::new();
        while let Some(msg) = replies.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(PortMessage::Port(p)) => out.push(p),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(SysError::from_errno(what, -e.raw_code()))
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut out = Vec::new();
        out.extend((len as u16).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(value);
        out.resize((len + 3) & !3, 0);
        out
    }

    fn port_message(index: u32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![AF_BRIDGE, 0, 1, 0];
        out.extend(index.to_ne_bytes());
        out.extend(flags.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        attrs.iter().for_each(|a| out.extend(a));
        out
    }

    #[test]
    fn a_port_is_read_and_nested_attributes_skipped() {
        let protinfo = [nla(1, &[3]), nla(2, &7u16.to_ne_bytes())].concat();
        let msg = port_message(
            9,
            IFF_UP | 0x1000,
            &[
                nla(IFLA_IFNAME, b"vethc_br5\0"),
                nla(IFLA_MASTER, &4u32.to_ne_bytes()),
                nla(12 | 0x8000, &protinfo),
                nla(IFLA_MTU, &1450u32.to_ne_bytes()),
            ],
        );
        let port = parse_port(&msg).unwrap();
        assert_eq!(
            (
                port.index,
                port.name.as_str(),
                port.master,
                port.up,
                port.mtu
            ),
            (9, "vethc_br5", Some(4), true, 1450)
        );
    }

    #[test]
    fn a_down_port_without_master_says_so() {
        let msg = port_message(3, 0, &[nla(IFLA_IFNAME, b"x\0")]);
        let port = parse_port(&msg).unwrap();
        assert_eq!((port.up, port.master), (false, None));
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        assert!(parse_port(&[0; 8]).is_err());
        let mut msg = port_message(3, 0, &[nla(IFLA_IFNAME, b"abc\0")]);
        msg.truncate(msg.len() - 2);
        assert!(parse_port(&msg).is_err());
        let msg = port_message(3, 0, &[vec![2, 0, 3, 0]]);
        assert!(parse_port(&msg).is_err());
    }
}
