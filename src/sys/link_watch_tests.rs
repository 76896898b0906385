//! The link watch's requests, and how it reads what the kernel sends: notifications change
//! the view, a bridge's word on a port does not, and only an answer to us ends a fence.

use super::*;
use crate::sys::LinkKind;

const OURS: u32 = 4000;

/// A link message of `family` for link `index` (called `v<index>`), `up` or not, answering
/// `(seq, port)`.
fn link_msg(kind: u16, family: u8, (seq, port): (u32, u32), index: u32, up: bool) -> Vec<u8> {
    let name = lean_links::nla(3, format!("v{index}\0").as_bytes());
    let len = NLMSGHDR_LEN + IFINFOMSG_LEN + name.len();
    let mut out = Vec::new();
    out.extend(u32::try_from(len).unwrap().to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(0u16.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(port.to_ne_bytes());
    out.extend([family, 0, 0, 0]);
    out.extend(index.to_ne_bytes());
    out.extend(u32::from(up).to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend(name);
    out
}

fn link(index: u32, up: bool) -> LinkState {
    LinkState {
        index,
        name: format!("v{index}"),
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        up,
        master: None,
    }
}

/// A feed whose view is synced with links 5 and 6 up, waiting on fence 7.
fn feed() -> (Feed, oneshot::Receiver<()>) {
    let mut table = LinkTable::default();
    table.begin_dump();
    table.dumped(link(5, true));
    table.dumped(link(6, true));
    table.end_dump();
    let (tx, rx) = oneshot::channel();
    let feed = Feed {
        table: Arc::new(Mutex::new(table)),
        port: OURS,
        seq: 7,
        dump: None,
        waiting: VecDeque::from([(7, tx)]),
    };
    (feed, rx)
}

#[test]
fn notifications_change_the_view_and_only_our_answers_end_a_fence() {
    let (mut feed, mut fence) = feed();
    let socket = Socket::new(NETLINK_ROUTE).unwrap();
    let datagram = [
        // Caused by another socket's request whose sequence number is our fence's.
        link_msg(RTM_NEWLINK, 0, (7, 1234), 5, false),
        // The bridge saying port 6 left it: link 6 is still there.
        link_msg(RTM_DELLINK, AF_BRIDGE, (0, 0), 6, true),
    ]
    .concat();
    assert!(feed.datagram(&socket, &datagram));
    assert_eq!(fence.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    let table = Arc::clone(&feed.table);
    assert_eq!(lock(&table).get("v5"), Some(Some(link(5, false))));
    assert_eq!(lock(&table).get("v6"), Some(Some(link(6, true))));
    let answer = link_msg(RTM_NEWLINK, 0, (7, OURS), 1, true);
    let removal = link_msg(RTM_DELLINK, 0, (0, 0), 6, true);
    assert!(feed.datagram(&socket, &[answer, removal].concat()));
    assert_eq!(fence.try_recv(), Ok(()));
    assert_eq!(lock(&table).get("v6"), Some(None));
    assert_eq!(
        lock(&table).get("v1"),
        Some(None),
        "a fence's answer is not a change"
    );
}

#[test]
fn a_dump_request_asks_every_link_without_statistics() {
    let msg = get_link(7, Ask::Dump);
    let u16_at = |i: usize| u16::from_ne_bytes([msg[i], msg[i + 1]]);
    assert_eq!(msg.len(), NLMSGHDR_LEN + IFINFOMSG_LEN + 8);
    assert_eq!(
        u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize,
        msg.len()
    );
    assert_eq!(u16_at(4), RTM_GETLINK);
    assert_eq!(u16_at(6), NLM_F_REQUEST | NLM_F_DUMP);
    assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
    assert_eq!(
        &msg[NLMSGHDR_LEN + IFINFOMSG_LEN..],
        lean_links::skip_stats_attr()
    );
}

#[test]
fn a_fence_asks_for_loopback_alone() {
    let msg = get_link(9, Ask::Index(LOOPBACK_INDEX));
    assert_eq!(u16::from_ne_bytes([msg[6], msg[7]]), NLM_F_REQUEST);
    let index = &msg[NLMSGHDR_LEN + 4..NLMSGHDR_LEN + 8];
    assert_eq!(u32::from_ne_bytes(index.try_into().unwrap()), 1);
}
