//! Everything the engine touches on one server, bundled so it can be real or fake as a whole.

use std::sync::Arc;

#[cfg(any(test, feature = "test-util"))]
use super::fake::FakeNetlink;
#[cfg(any(test, feature = "test-util"))]
use super::fake_lxc::{FakeLxc, FakeReaper};
use super::lxc::{Lxc, LxcTools};
use super::netlink::{Netlink, NetnsOpener};
use super::netns::RtNetnsOpener;
use super::reap::{ProcReaper, Reaper};
use super::rtnl::RtNetlink;
use super::SysResult;

/// The host's kernel and LXC, behind their traits.
#[derive(Clone)]
pub struct Host {
    /// Netlink in the host's (the daemon's) network namespace.
    pub net: Arc<dyn Netlink>,
    /// Opens netlink in containers' namespaces.
    pub netns: Arc<dyn NetnsOpener>,
    /// The LXC tools.
    pub lxc: Arc<dyn Lxc>,
    /// Stops what a crashed run of a job left running.
    pub reaper: Arc<dyn Reaper>,
}

impl Host {
    /// The real host: rtnetlink in the calling thread's network namespace, with the view of
    /// its links `info` reads (`sys::link_watch`), the LXC tools `lxc`, `/proc` for reaping.
    ///
    /// # Errors
    /// When a netlink socket cannot be opened.
    pub fn real(lxc: LxcTools) -> SysResult<Self> {
        Ok(Self {
            net: Arc::new(RtNetlink::connect()?.watching_links()?),
            netns: Arc::new(RtNetnsOpener::connect()),
            lxc: Arc::new(lxc),
            reaper: Arc::new(ProcReaper::default()),
        })
    }

    #[cfg(any(test, feature = "test-util"))]
    /// A host made of fakes (test-util), with an `eth1` underlay of MTU 1500 and the view of
    /// its links watched, as `serve`'s; returns the fakes too, so the test can script failures
    /// and read the call log.
    pub fn fake() -> (Self, FakeNetlink, FakeLxc) {
        let net = FakeNetlink::new();
        net.add_device("eth1", 1500);
        net.watch_links();
        let lxc = FakeLxc::new(&net);
        let host = Self {
            net: Arc::new(net.clone()),
            netns: Arc::new(net.clone()),
            lxc: Arc::new(lxc.clone()),
            reaper: Arc::new(FakeReaper::new(&net)),
        };
        (host, net, lxc)
    }
}
