//! Everything the engine touches on one server, bundled so it can be real or fake as a whole.

use std::sync::Arc;

use super::fake::FakeNetlink;
use super::fake_lxc::FakeLxc;
use super::lxc::Lxc;
use super::netlink::{Netlink, NetnsOpener};

/// The host's kernel and LXC, behind their traits.
#[derive(Clone)]
pub struct Host {
    /// Netlink in the host's (the daemon's) network namespace.
    pub net: Arc<dyn Netlink>,
    /// Opens netlink in containers' namespaces.
    pub netns: Arc<dyn NetnsOpener>,
    /// The LXC tools.
    pub lxc: Arc<dyn Lxc>,
}

impl Host {
    /// A host made of fakes, with an `eth1` underlay of MTU 1500; returns the fakes too, so the
    /// test can script failures and read the call log.
    pub fn fake() -> (Self, FakeNetlink, FakeLxc) {
        let net = FakeNetlink::new();
        net.add_device("eth1", 1500);
        let lxc = FakeLxc::new(&net);
        let host = Self {
            net: Arc::new(net.clone()),
            netns: Arc::new(net.clone()),
            lxc: Arc::new(lxc.clone()),
        };
        (host, net, lxc)
    }
}
