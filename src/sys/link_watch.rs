//! The host's links as `info` reads them: a [`LinkTable`] kept current by the kernel's link
//! notifications, read by a task of its own on a netlink socket that joined RTNLGRP_LINK
//! (rtnetlink(7)), and rebuilt from a link dump at start and after an overrun.
//!
//! One socket carries all three, in the order the kernel queued them: the notifications, the
//! dump's parts (asked on the same socket, so they fall in line with the notifications), and
//! the answers to fences. A fence is a request for `lo` sent on that socket; once its answer
//! is read, every notification the kernel queued before it has been applied. The daemon's own
//! link writes are counted ([`LinkWatch::wrote`], from [`super::rtnl`]), and a read of the
//! view waits for one fence while a write is not covered yet ([`LinkWatch::catch_up`]); the
//! kernel queues a change's notification before it answers the change, so what a step did
//! shows in every read of the view after it.
//!
//! Notifications of family AF_BRIDGE (a bridge reporting a port: `RTM_DELLINK` when the port
//! leaves it, with the link still there) are not about the link itself and are skipped; the
//! link's own message (family AF_UNSPEC) follows every change of its master, flags or MTU
//! (seen with `ip monitor link` on this kernel: `set down`, `nomaster`, `mtu`, `del`).
//!
//! Should the socket fail, the view stops answering and every read goes to the kernel again.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

use super::lean_links::{self, IFINFOMSG_LEN};
use super::link_table::{LinkEvent, LinkTable};
use super::netlink::LinkState;
use super::{SysError, SysResult};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSGHDR_LEN: usize = 16;
const AF_BRIDGE: u8 = 7;
/// rtnetlink(7)'s group of link notifications.
const RTNLGRP_LINK: u32 = 1;
/// `lo`'s index in every namespace (`LOOPBACK_IFINDEX`): what a fence asks for.
const LOOPBACK_INDEX: u32 = 1;
/// The receive queue asked for: a restore of 100 containers changes ≈ 300 links at once, each
/// notification ≈ 1–2 KiB. Past it, an overrun and a dump, which are correct, only slower.
const RECEIVE_QUEUE: libc::c_int = 4 << 20;
/// Room for one datagram: a dump's part is at most 32 KiB (the kernel's cap on a dump skb).
const DATAGRAM: usize = 64 << 10;
/// How long a fence may wait before the view is given up (every read goes to the kernel).
const FENCE_LIMIT: Duration = Duration::from_secs(5);

/// The view and its feed. Clones share both.
#[derive(Clone)]
pub struct LinkWatch {
    /// The view, fed by the task.
    table: Arc<Mutex<LinkTable>>,
    /// Fences for the task to send; it answers each once its reply is read.
    fences: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// Writes made through this handle ([`Self::wrote`]) and, of them, how many a fence has
    /// since covered: a read waits for a fence only when a write is not covered yet.
    writes: Arc<WriteCount>,
}

/// [`LinkWatch`]'s count of writes and of those a fence covered.
#[derive(Default)]
struct WriteCount {
    made: AtomicU64,
    covered: AtomicU64,
}

impl LinkWatch {
    /// Opens the socket in the calling thread's network namespace and starts the task that
    /// reads it, with a dump; the view answers once that dump is in. Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// When the socket cannot be opened, bound or made to join the link group.
    pub fn start() -> SysResult<Self> {
        let (socket, port) = open()?;
        // SAFETY: the socket owns its descriptor, open until the socket drops, and the
        // AsyncFd owns the socket; `as_raw_fd` always returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| io("register the link watch socket")(e.into()))?;
        let table = Arc::new(Mutex::new(LinkTable::default()));
        let (fences, rx) = mpsc::unbounded_channel();
        let feed = Feed {
            table: Arc::clone(&table),
            port,
            seq: 0,
            dump: None,
            waiting: VecDeque::new(),
        };
        tokio::spawn(feed.run(fd, rx));
        Ok(Self {
            table,
            fences,
            writes: Arc::default(),
        })
    }

    /// Notes a link write the kernel took: the next read of the view first waits until the
    /// view shows it ([`Self::catch_up`]). The write itself waits for nothing, so a create's
    /// steps pay no round trip for the view; an `info` after a step pays one, once.
    pub fn wrote(&self) {
        self.writes.made.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until the view shows every write noted before now (one fence, when any is not
    /// covered yet; none otherwise).
    pub async fn catch_up(&self) {
        let made = self.writes.made.load(Ordering::Acquire);
        if self.writes.covered.load(Ordering::Acquire) >= made {
            return;
        }
        // The kernel queued each write's notification before it acknowledged the write, so
        // a fence sent now is answered after all of them are in.
        self.fence().await;
        self.writes.covered.fetch_max(made, Ordering::AcqRel);
    }

    /// Link `name` from the view: `None` when the view cannot answer (not synced: at start,
    /// after an overrun until a new dump is in, or for good once the socket failed).
    pub fn link(&self, name: &str) -> Option<Option<LinkState>> {
        lock(&self.table).get(name)
    }

    /// Whether the view answers (see [`Self::link`]).
    pub fn is_synced(&self) -> bool {
        lock(&self.table).is_synced()
    }

    /// Waits until every notification the kernel queued before now is in the view. A fence
    /// that is not answered within 5 s ends the view: reads go to the kernel.
    async fn fence(&self) {
        // A view that ended answers nothing: no write need wait for it.
        if lock(&self.table).is_ended() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.fences.send(tx).is_err() {
            return;
        }
        if tokio::time::timeout(FENCE_LIMIT, rx).await.is_err() {
            tracing::warn!("the link watch answered no fence in 5 s; links are read from the kernel from now on");
            lock(&self.table).end();
        }
    }
}

fn lock(table: &Mutex<LinkTable>) -> MutexGuard<'_, LinkTable> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> SysError {
    move |source| SysError::Io {
        what: what.into(),
        source,
    }
}

/// A non-blocking NETLINK_ROUTE socket in RTNLGRP_LINK, with a large receive queue, and its
/// port ID.
fn open() -> SysResult<(Socket, u32)> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("open the link watch socket"))?;
    let port = socket
        .bind_auto()
        .map_err(io("bind the link watch socket"))?
        .port_number();
    socket
        .add_membership(RTNLGRP_LINK)
        .map_err(io("join RTNLGRP_LINK"))?;
    socket
        .set_non_blocking(true)
        .map_err(io("make the link watch socket non-blocking"))?;
    // SO_RCVBUFFORCE passes net.core.rmem_max (CAP_NET_ADMIN, which `serve` has); else the
    // capped SO_RCVBUF, and overruns come sooner.
    let size = RECEIVE_QUEUE;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket, and an int we own of the size given.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            len,
        )
    };
    if forced != 0 {
        let _ = socket.set_rx_buf_sz(RECEIVE_QUEUE as usize);
    }
    Ok((socket, port))
}

/// What an RTM_GETLINK request asks.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Every link.
    Dump,
    /// The link of this index.
    Index(u32),
}

/// An RTM_GETLINK request, statistics skipped (`RTEXT_FILTER_SKIP_STATS`, as
/// [`lean_links`]'s by-name read).
fn get_link(seq: u32, ask: Ask) -> Vec<u8> {
    let attrs = lean_links::skip_stats_attr();
    let len = NLMSGHDR_LEN + IFINFOMSG_LEN + attrs.len();
    let (flags, index) = match ask {
        Ask::Dump => (NLM_F_REQUEST | NLM_F_DUMP, 0),
        Ask::Index(index) => (NLM_F_REQUEST, index),
    };
    let mut out = Vec::with_capacity(len);
    out.extend(u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend(RTM_GETLINK.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change.
    out.extend([0u8; 4]);
    out.extend(index.to_ne_bytes());
    out.extend([0u8; 8]);
    out.extend(attrs);
    out
}

/// The task's state.
struct Feed {
    /// The view it feeds.
    table: Arc<Mutex<LinkTable>>,
    /// The socket's port ID: the kernel's answers to our requests carry it. A notification
    /// carries 0, or the port and sequence number of the request that caused it (another
    /// socket's, whose numbers may equal ours).
    port: u32,
    /// The last sequence number sent.
    seq: u32,
    /// The sequence number of the dump under way.
    dump: Option<u32>,
    /// Fences sent and not answered yet, oldest first, by sequence number.
    waiting: VecDeque<(u32, oneshot::Sender<()>)>,
}

impl Feed {
    /// Reads the socket until it fails or every [`LinkWatch`] is dropped.
    async fn run(
        mut self,
        fd: AsyncFd<Socket>,
        mut fences: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(DATAGRAM);
        let mut alive = self.send_dump(fd.get_ref());
        while alive {
            tokio::select! {
                fence = fences.recv() => match fence {
                    Some(tx) => alive = self.send_fence(fd.get_ref(), tx),
                    None => break,
                },
                ready = fd.readable() => {
                    let Ok(mut guard) = ready else { break };
                    buf.clear();
                    match guard.try_io(|fd| fd.get_ref().recv(&mut buf, 0)) {
                        Ok(Ok(_)) => alive = self.datagram(fd.get_ref(), &buf),
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            tracing::debug!("link notifications were lost; dumping the links again");
                            alive = self.lost(fd.get_ref());
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "the link watch socket failed; links are read from the kernel from now on");
                            alive = false;
                        }
                        Err(_would_block) => {}
                    }
                }
            }
        }
        lock(&self.table).end();
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends a dump of every link; false when the socket refused it.
    fn send_dump(&mut self, socket: &Socket) -> bool {
        let seq = self.next_seq();
        lock(&self.table).begin_dump();
        self.dump = Some(seq);
        self.send(socket, &get_link(seq, Ask::Dump))
    }

    /// Sends a fence; false when the socket refused it (the waiter is answered: the view
    /// ends with the task).
    fn send_fence(&mut self, socket: &Socket, tx: oneshot::Sender<()>) -> bool {
        let seq = self.next_seq();
        self.waiting.push_back((seq, tx));
        self.send(socket, &get_link(seq, Ask::Index(LOOPBACK_INDEX)))
    }

    fn send(&self, socket: &Socket, bytes: &[u8]) -> bool {
        match socket.send(bytes, 0) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the link watch socket refused a request; links are read from the kernel from now on");
                false
            }
        }
    }

    /// Applies every message of one datagram, in order; false when the feed must end.
    fn datagram(&mut self, socket: &Socket, mut rest: &[u8]) -> bool {
        let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        while rest.len() >= NLMSGHDR_LEN {
            let len = u32_at(rest, 0) as usize;
            if len < NLMSGHDR_LEN || len > rest.len() {
                tracing::warn!(
                    len,
                    "a malformed netlink message in the link watch; dumping again"
                );
                return self.lost(socket);
            }
            let (kind, flags) = (u16_at(rest, 4), u16_at(rest, 6));
            // Only an answer to us is told by its sequence number; 0 is never one we send.
            let seq = if u32_at(rest, 12) == self.port {
                u32_at(rest, 8)
            } else {
                0
            };
            if !self.message(socket, kind, flags, seq, &rest[NLMSGHDR_LEN..len]) {
                return false;
            }
            rest = rest.get((len + 3) & !3..).unwrap_or_default();
        }
        true
    }

    /// Applies one message (`seq`: its sequence number if it answers one of our requests, 0
    /// for a notification); false when the feed must end.
    fn message(
        &mut self,
        socket: &Socket,
        kind: u16,
        flags: u16,
        seq: u32,
        payload: &[u8],
    ) -> bool {
        if seq != 0 {
            if let Some(at) = self.waiting.iter().position(|(s, _)| *s == seq) {
                // Every fence sent before this one was answered before it, in order.
                for (_, tx) in self.waiting.drain(..=at) {
                    let _ = tx.send(());
                }
                return true;
            }
        }
        let in_dump = seq != 0 && self.dump == Some(seq);
        if in_dump && flags & NLM_F_DUMP_INTR != 0 {
            // The link list changed under the dump, which may have skipped a link: another
            // dump follows this one.
            lock(&self.table).overrun();
        }
        match kind {
            RTM_NEWLINK | RTM_DELLINK if payload.first() == Some(&AF_BRIDGE) => true,
            RTM_NEWLINK | RTM_DELLINK => match lean_links::parse_link(payload) {
                Ok(link) => {
                    let mut table = lock(&self.table);
                    match (kind, in_dump) {
                        (RTM_NEWLINK, true) => table.dumped(link),
                        (RTM_NEWLINK, false) => table.apply(LinkEvent::New(link)),
                        _ => table.apply(LinkEvent::Gone(link.index)),
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dumping the links again");
                    self.lost(socket)
                }
            },
            NLMSG_DONE if in_dump => {
                self.dump = None;
                let again = lock(&self.table).end_dump();
                !again || self.send_dump(socket)
            }
            NLMSG_ERROR if in_dump => {
                tracing::warn!(
                    "the kernel refused the link dump; links are read from the kernel from now on"
                );
                false
            }
            _ => true,
        }
    }

    /// A message could not be read, or notifications were lost: the view stops answering
    /// until a dump sent now is in. A fence's own answer may have been among the lost, so
    /// every waiting fence is answered now: nothing can read the view before that dump, which
    /// is newer than the writes they wait for.
    fn lost(&mut self, socket: &Socket) -> bool {
        let dump = lock(&self.table).overrun();
        for (_, tx) in self.waiting.drain(..) {
            let _ = tx.send(());
        }
        !dump || self.send_dump(socket)
    }
}

#[cfg(test)]
#[path = "link_watch_tests.rs"]
mod tests;
