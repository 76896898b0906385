//! The real [`NetnsOpener`]: netlink handles in a container's network namespace, and reads of
//! a namespace seen from ours (whether a process has its own, its IPv4 addresses).

use std::net::Ipv4Addr;

use async_trait::async_trait;

use super::netlink::{Netlink, NetnsOpener};
use super::ns_addresses::NsAddresses;
use super::rtnl::RtNetlink;
use super::{inventory, SysError, SysResult};

/// Opens [`RtNetlink`] handles in other processes' network namespaces, and reads their
/// addresses through netlink ([`NsAddresses`]) or, where our namespace has no ID for theirs,
/// from `/proc/<pid>/net/fib_trie`.
#[derive(Clone, Default)]
pub struct RtNetnsOpener {
    addresses: Option<NsAddresses>,
}

impl RtNetnsOpener {
    /// An opener with the address connection, opened in the calling thread's namespace;
    /// without it (the socket refused), addresses are read from `/proc`.
    pub fn connect() -> Self {
        match NsAddresses::connect() {
            Ok(addresses) => Self {
                addresses: Some(addresses),
            },
            Err(e) => {
                tracing::warn!(error = %e, "addresses will be read from /proc/<pid>/net/fib_trie");
                Self::default()
            }
        }
    }
}

#[async_trait]
impl NetnsOpener for RtNetnsOpener {
    async fn open_netns_of(&self, pid: u32) -> SysResult<Box<dyn Netlink>> {
        Ok(Box::new(RtNetlink::connect_netns_of(pid).await?))
    }

    async fn has_own_netns(&self, pid: u32) -> SysResult<bool> {
        use std::os::unix::fs::MetadataExt;
        let what = format!("read the network namespace of pid {pid}");
        let theirs = match tokio::fs::metadata(format!("/proc/{pid}/ns/net")).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SysError::NotFound { what })
            }
            Err(source) => return Err(SysError::Io { what, source }),
        };
        let ours = tokio::fs::metadata("/proc/self/ns/net")
            .await
            .map_err(|source| SysError::Io { what, source })?;
        Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
    }

    async fn local_addresses(&self, pid: u32) -> SysResult<Vec<Ipv4Addr>> {
        if let Some(ns) = &self.addresses {
            match ns.of_pid(pid).await {
                Ok(Some(found)) => return Ok(found),
                Err(e) if e.is_not_found() => return Err(e),
                // No ID for their namespace, or netlink refused: the kernel's text instead.
                Ok(None) | Err(_) => {}
            }
        }
        inventory::local_addresses(pid)
    }

    /// Through netlink, one container after another: two small requests each, against
    /// ≈ 20–35 µs of kernel text per `fib_trie` read. Not concurrently: a netlink socket runs
    /// one dump at a time and can refuse a second one asked meanwhile (`EBUSY`). With 32 in
    /// flight, `tests/crash_root.rs` under load saw passes at start queue repairs of healthy
    /// containers; one at a time, it did not.
    async fn local_addresses_of(&self, pids: &[u32]) -> Vec<SysResult<Vec<Ipv4Addr>>> {
        let mut out = Vec::with_capacity(pids.len());
        for &pid in pids {
            out.push(self.local_addresses(pid).await);
        }
        out
    }
}
