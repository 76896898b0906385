//! ICMP echo over one raw socket, for benches that race to see many containers answer: it sends
//! to any number of addresses and collects the replies without blocking and without a process
//! per ping (iputils `ping` costs a fork and an exec, and waits a whole second on a miss).
//!
//! Needs root (raw sockets, raw(7)). The socket belongs to the network namespace of the thread
//! that opens it: open it after [`super::lab::Lab::enter`].

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ICMP type of an echo request (RFC 792).
const ECHO_REQUEST: u8 = 8;
/// ICMP type of an echo reply.
const ECHO_REPLY: u8 = 0;

/// A raw ICMP socket sending echo requests with one identifier and counting replies to it.
pub struct Pinger {
    /// The socket, non-blocking.
    fd: OwnedFd,
    /// The echo identifier of our requests: replies carry it back.
    ident: u16,
    /// The last sequence number sent.
    seq: u16,
}

impl Pinger {
    /// Opens the socket in the calling thread's network namespace; panics without root.
    pub fn new() -> Self {
        let flags = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, flags, libc::IPPROTO_ICMP) };
        assert!(
            fd >= 0,
            "raw ICMP socket: {} (needs root)",
            io::Error::last_os_error()
        );
        Self {
            // SAFETY: a fresh descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ident: (std::process::id() & 0xffff) as u16,
            seq: 0,
        }
    }

    /// Sends one echo request to `to`. A send the kernel refuses (no route, no buffer) is a
    /// lost probe, as on a wire: the caller sends again.
    pub fn send(&mut self, to: Ipv4Addr) {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = ECHO_REQUEST;
        pkt[4..6].copy_from_slice(&self.ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&self.seq.to_be_bytes());
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address outlive the call; their lengths are theirs.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
    }

    /// The sources of every echo reply to our requests received since the last call.
    pub fn replies(&self) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: the buffer outlives the call and its length is its own.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return out; // EAGAIN: nothing more for now
            }
            // A raw socket hands over the IP header too: its length is in the first byte.
            let pkt = &buf[..n as usize];
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let Some(icmp) = pkt.get(ihl..ihl + 8) else {
                continue;
            };
            if icmp[0] == ECHO_REPLY && icmp[4..6] == self.ident.to_be_bytes() {
                out.push(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
            }
        }
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
