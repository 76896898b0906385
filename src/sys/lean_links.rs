//! Link reads parsed lean, on a netlink connection of their own: the messages are read for the
//! five facts a reconcile pass or `info` needs (index, name, master, up, MTU) and nothing
//! else.
//!
//! - the bridge-port dump of a pass, RTM_GETLINK of family AF_BRIDGE: the bridge driver fills
//!   each port with some thirty `IFLA_PROTINFO` attributes (STP state, costs, timers, flags),
//!   which rtnetlink's full parse turned into typed values at ≈ 8 µs a port, the bulk of the
//!   dump's cost at 1,000 ports (docs/PERFORMANCE.md);
//! - one link by name for `info`, without its statistics (`RTEXT_FILTER_SKIP_STATS`): a full
//!   link message also carries IPv6 settings and statistics, a few hundred attributes parsed
//!   per request.

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
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
pub(super) const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 1;

/// A message of the lean connection: a request out, a link (or anything else) in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMessage {
    /// RTM_GETLINK dump, family AF_BRIDGE: every bridge port.
    BridgePorts,
    /// RTM_GETLINK of one link by name, without statistics.
    ByName(String),
    /// An RTM_NEWLINK answer, as far as it is read.
    Link(LinkState),
    /// Any other message.
    Other,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed link message: {0}")]
pub struct LinkParseError(&'static str);

/// The attributes of a by-name request: the name (NUL-terminated) and the extension mask.
fn by_name_attrs(name: &str) -> Vec<u8> {
    let mut out = nla(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
    out.extend(skip_stats_attr());
    out
}

/// The extension mask that leaves a link message's statistics out (`RTEXT_FILTER_SKIP_STATS`).
pub(super) fn skip_stats_attr() -> Vec<u8> {
    nla(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())
}

/// One netlink attribute, padded to 4 bytes.
pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len + 3);
    out.extend(u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize((len + 3) & !3, 0);
    out
}

impl NetlinkSerializable for LinkMessage {
    fn message_type(&self) -> u16 {
        RTM_GETLINK
    }

    fn buffer_len(&self) -> usize {
        match self {
            Self::ByName(name) => IFINFOMSG_LEN + by_name_attrs(name).len(),
            _ => IFINFOMSG_LEN,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..IFINFOMSG_LEN].fill(0);
        match self {
            Self::BridgePorts => buffer[0] = AF_BRIDGE,
            Self::ByName(name) => {
                let attrs = by_name_attrs(name);
                buffer[IFINFOMSG_LEN..IFINFOMSG_LEN + attrs.len()].copy_from_slice(&attrs);
            }
            Self::Link(_) | Self::Other => {}
        }
    }
}

impl NetlinkDeserializable for LinkMessage {
    type Error = LinkParseError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        if header.message_type != RTM_NEWLINK {
            return Ok(Self::Other);
        }
        parse_link(payload).map(Self::Link)
    }
}

impl From<LinkMessage> for NetlinkPayload<LinkMessage> {
    fn from(m: LinkMessage) -> Self {
        NetlinkPayload::InnerMessage(m)
    }
}

/// An ifinfomsg and its top-level attributes; nested ones are skipped whole.
///
/// # Errors
/// When the message is shorter than its header or an attribute overruns it.
pub(super) fn parse_link(payload: &[u8]) -> Result<LinkState, LinkParseError> {
    let head = payload
        .get(..IFINFOMSG_LEN)
        .ok_or(LinkParseError("short ifinfomsg"))?;
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
            return Err(LinkParseError("attribute shorter than its header"));
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = rest
            .get(4..len)
            .ok_or(LinkParseError("attribute overruns"))?;
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

/// The lean connection, in the namespace it was opened in.
#[derive(Clone)]
pub struct LeanLinks {
    handle: ConnectionHandle<LinkMessage>,
}

impl LeanLinks {
    /// Opens it in the calling thread's network namespace; must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn connect() -> SysResult<Self> {
        let (conn, handle, _) =
            rtnetlink::proto::new_connection(NETLINK_ROUTE).map_err(|source| SysError::Io {
                what: "open a netlink socket for lean link reads".into(),
                source,
            })?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Every port of every bridge: index, name, master, up, MTU.
    ///
    /// # Errors
    /// When the kernel refuses the dump or a message cannot be read.
    pub async fn bridge_ports(&self) -> SysResult<Vec<LinkState>> {
        // The bridge driver fills each port's message itself, without the peer namespace ID
        // of a full link message (`Netlink::bridge_ports`); a bridge reporting itself is its
        // own master, and not a port.
        let all = self
            .request(
                LinkMessage::BridgePorts,
                NLM_F_REQUEST | NLM_F_DUMP,
                "list bridge ports",
            )
            .await?;
        Ok(all
            .into_iter()
            .filter(|l| l.master.is_some_and(|m| m != l.index))
            .collect())
    }

    /// Link `name` (index, name, master, up, MTU), or `None`.
    ///
    /// # Errors
    /// When the kernel refuses the request for another reason than a missing link.
    pub async fn link(&self, name: &str) -> SysResult<Option<LinkState>> {
        let what = format!("get link {name}");
        match self
            .request(LinkMessage::ByName(name.to_string()), NLM_F_REQUEST, &what)
            .await
        {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn request(&self, msg: LinkMessage, flags: u16, what: &str) -> SysResult<Vec<LinkState>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
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
                NetlinkPayload::InnerMessage(LinkMessage::Link(l)) => out.push(l),
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
        let port = parse_link(&msg).unwrap();
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
        let port = parse_link(&msg).unwrap();
        assert_eq!((port.up, port.master), (false, None));
    }

    #[test]
    fn a_by_name_request_carries_the_name_and_skips_statistics() {
        let msg = LinkMessage::ByName("vethc_br5".into());
        let mut buf = vec![0xff; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(&buf[..IFINFOMSG_LEN], &[0; IFINFOMSG_LEN]);
        let attrs = &buf[IFINFOMSG_LEN..];
        assert_eq!(attrs, by_name_attrs("vethc_br5").as_slice());
        // 4 + "vethc_br5\0" = 14, padded to 16; then the 8-byte mask.
        assert_eq!(attrs.len(), 16 + 8);
        assert_eq!(&attrs[4..14], b"vethc_br5\0");
        assert_eq!(u16::from_ne_bytes([attrs[18], attrs[19]]), IFLA_EXT_MASK);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        assert!(parse_link(&[0; 8]).is_err());
        let mut msg = port_message(3, 0, &[nla(IFLA_IFNAME, b"abc\0")]);
        msg.truncate(msg.len() - 2);
        assert!(parse_link(&msg).is_err());
        let msg = port_message(3, 0, &[vec![2, 0, 3, 0]]);
        assert!(parse_link(&msg).is_err());
    }
}
