//! One simulated server for a benchmark: the root tests' lab (`tests/common/lab.rs`, so setup,
//! teardown and the sweep of what a killed run left are the same code) with one server, whose
//! `eth1` underlay sits on the lab's switch. Data directories and LXC paths go under the
//! server's scratch directory; the lab's teardown stops and destroys every container in every
//! LXC path there, from the server's namespace, then removes the namespaces and the directory.
//!
//! [`Lab::enter`] moves the calling thread (call it from `main` before any other thread
//! exists) into the server's namespace, so every thread, socket and child process made
//! afterwards lives there: the daemon's `127.0.0.1` is ours, and the `lxc-*` tools run from the
//! namespace that starts the containers.

use std::fs;
use std::path::PathBuf;

use super::harness::{self, layout, netns};

/// The simulated server.
pub struct Lab {
    /// The lab holding the one server; dropping it tears everything down.
    lab: harness::Lab,
    /// The server's scratch directory.
    pub dir: PathBuf,
}

impl Lab {
    /// Builds the server; panics (after tearing down) if anything fails.
    pub fn new() -> Lab {
        Self::with_servers(1)
    }

    /// Builds `n` servers on one switch; the bench runs on the first ([`Self::enter`]), the
    /// others are reached through [`Self::server`] (the cluster bench's joining member).
    pub fn with_servers(n: usize) -> Lab {
        let lab = harness::Lab::new(n);
        let dir = lab.server(1).dir.clone();
        Lab { lab, dir }
    }

    /// Server `host_id` (1-based).
    pub fn server(&self, host_id: usize) -> &harness::Server {
        self.lab.server(host_id)
    }

    /// Moves the calling thread into the server's namespace (see the module doc).
    pub fn enter(&self) {
        netns::enter(&netns::named(&self.lab.server(1).netns));
    }

    /// A directory under the server's, created.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// A directory beside the server's (under the lab's own, not the server's), created: for
    /// what must outlive the server's containers in the teardown, such as the base of overlay
    /// clones ([`super::clones`]), which LXC refuses to destroy while clones depend on it. The
    /// teardown destroys the containers under the server's directory, then removes the lab's
    /// directory with this one in it.
    pub fn beside(&self, name: &str) -> PathBuf {
        let p = self.lab.dir().join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// The LXC config every bench container made outside the daemon gets: no network from LXC,
    /// as the daemon's ([`layout::EMPTY_NET_CONFIG`]).
    pub fn empty_net_conf(&self) -> PathBuf {
        layout::write_empty_net_config(&self.dir)
    }
}
