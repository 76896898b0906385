//! The IPv4 addresses of another network namespace, asked of the kernel from ours: the
//! namespace's ID as our namespace knows it (RTM_GETNSID by the PID of a process in it), then
//! an address dump of that namespace (RTM_GETADDR with `IFA_TARGET_NETNSID`, which the kernel
//! honours on a socket with `NETLINK_GET_STRICT_CHK`). Reading `/proc/<pid>/net/fib_trie`
//! instead makes the kernel print both routing tables as text, ≈ 20–35 µs a container here.
//!
//! The requests go over plain blocking sockets, one exchange after another, from the blocking
//! pool: through an async netlink connection each exchange cost as much as the text (two
//! hops through its task per request). A socket runs one dump at a time (it refuses a second
//! one meanwhile with `EBUSY`), so each socket serves one caller at a time; a pass splits its
//! containers across the sockets, one per CPU.
//!
//! A container's namespace has an ID in ours from the moment its veth pair crossed over (the
//! kernel assigns one to report the peer's namespace); one without (`-1`) is answered `None`,
//! and the caller reads `fib_trie` instead. Nothing is cached: an ID outlives nothing it
//! names, and a PID is checked alive by the caller just before.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};

use super::{SysError, SysResult};

/// How long a receive may wait for the kernel's answer.
const RECEIVE_TIMEOUT_SECS: libc::time_t = 2;

/// What one container's read gives: its addresses, or `None` when our namespace has no ID
/// for its namespace.
pub type Found = SysResult<Option<Vec<Ipv4Addr>>>;

/// Blocking netlink sockets with strict checking, opened in the caller's namespace.
#[derive(Clone)]
pub struct NsAddresses {
    sockets: Arc<Vec<Mutex<Exchange>>>,
}

/// One socket and its request counter.
struct Exchange {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NsAddresses {
    /// Opens one socket per CPU (at most four) in the calling thread's network namespace.
    ///
    /// # Errors
    /// When a socket cannot be opened, bound or set to strict checking.
    pub fn connect() -> SysResult<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let sockets = (0..n)
            .map(|_| Exchange::open().map(Mutex::new))
            .collect::<SysResult<Vec<_>>>()?;
        Ok(Self {
            sockets: Arc::new(sockets),
        })
    }

    /// The addresses of the namespace of each of `pids`, in order, read on the blocking pool
    /// with the sockets side by side.
    pub async fn of_pids(&self, pids: &[u32]) -> Vec<Found> {
        let chunk = pids.len().div_ceil(self.sockets.len()).max(1);
        let tasks: Vec<_> = pids
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let (sockets, part) = (Arc::clone(&self.sockets), part.to_vec());
                tokio::task::spawn_blocking(move || {
                    let mut ex = lock(&sockets[i]);
                    part.into_iter()
                        .map(|pid| ex.of_pid(pid))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(pids.len());
        for (task, part) in tasks.into_iter().zip(pids.chunks(chunk)) {
            match task.await {
                Ok(found) => out.extend(found),
                Err(e) => out.extend(part.iter().map(|pid| {
                    Err(SysError::Unexpected {
                        what: format!("read the addresses of pid {pid}"),
                        detail: e.to_string(),
                    })
                })),
            }
        }
        out
    }

    /// The addresses of the namespace of `pid`, inline (two short exchanges), on a socket no
    /// one else holds; `None` as well when all are busy (a pass is reading), so that a request
    /// never waits on a pass.
    pub fn of_pid_now(&self, pid: u32) -> Found {
        for socket in self.sockets.iter() {
            if let Ok(mut ex) = socket.try_lock() {
                return ex.of_pid(pid);
            }
        }
        Ok(None)
    }
}

fn lock(m: &Mutex<Exchange>) -> std::sync::MutexGuard<'_, Exchange> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Exchange {
    fn open() -> SysResult<Self> {
        let io = |what: &'static str| {
            move |source| SysError::Io {
                what: what.into(),
                source,
            }
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("open a netlink socket"))?;
        socket.bind_auto().map_err(io("bind a netlink socket"))?;
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(io("set NETLINK_GET_STRICT_CHK"))?;
        // The kernel answers at once; a receive that waits longer fails (and the caller reads
        // fib_trie) rather than holding a blocking thread and the socket for good.
        let timeout = libc::timeval {
            tv_sec: RECEIVE_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval we own, of the size given.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io("set SO_RCVTIMEO")(std::io::Error::last_os_error()));
        }
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(32 * 1024),
        })
    }

    fn of_pid(&mut self, pid: u32) -> Found {
        let Some(nsid) = self.nsid_of(pid)? else {
            return Ok(None);
        };
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.attributes.push(AddressAttribute::TargetNetNsId(nsid));
        let what = format!("list the addresses of namespace {nsid} (pid {pid})");
        let mut out = Vec::new();
        self.exchange(RouteNetlinkMessage::GetAddress(msg), true, &what, |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                for attr in &a.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(v4)) = attr {
                        if !out.contains(v4) {
                            out.push(*v4);
                        }
                    }
                }
            }
        })?;
        Ok(Some(out))
    }

    /// Our namespace's ID for the namespace of `pid`, `None` if it has none.
    fn nsid_of(&mut self, pid: u32) -> SysResult<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Pid(pid));
        let what = format!("get the namespace ID of pid {pid}");
        let mut id = None;
        self.exchange(RouteNetlinkMessage::GetNsId(msg), false, &what, |m| {
            if let RouteNetlinkMessage::NewNsId(n) = m {
                id = n.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                });
            }
        })?;
        Ok(id.filter(|id| *id >= 0))
    }

    /// Sends `request` (a dump with `dump`) and hands every answer to `each` until the
    /// exchange ends: the one answer, or the dump's `NLMSG_DONE`.
    fn exchange(
        &mut self,
        request: RouteNetlinkMessage,
        dump: bool,
        what: &str,
        mut each: impl FnMut(&RouteNetlinkMessage),
    ) -> SysResult<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(request);
        req.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        let io = |source| SysError::Io {
            what: what.to_string(),
            source,
        };
        self.socket.send(&bytes, 0).map_err(io)?;
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(io)?;
            let mut rest = &self.buf[..n.min(self.buf.len())];
            while !rest.is_empty() {
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                        SysError::Unexpected {
                            what: what.to_string(),
                            detail: e.to_string(),
                        }
                    })?;
                let len = (msg.header.length as usize + 3) & !3;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::InnerMessage(ref m) => each(m),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            return Err(SysError::from_errno(what, -e.raw_code()));
                        }
                        NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => return Ok(()),
                        _ => {}
                    }
                    let multipart = msg.header.flags & NLM_F_MULTIPART != 0;
                    if !multipart && msg.header.message_type != NLMSG_DONE {
                        return Ok(());
                    }
                }
                rest = rest.get(len..).unwrap_or_default();
            }
        }
    }
}
