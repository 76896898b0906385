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

use super::testlab;

/// The simulated server.
pub struct Lab {
    lab: testlab::Lab,
    /// The server's scratch directory.
    pub dir: PathBuf,
}

impl Lab {
    /// Builds the server; panics (after tearing down) if anything fails.
    pub fn new() -> Lab {
        let lab = testlab::Lab::new(1);
        let dir = lab.server(1).dir.clone();
        Lab { lab, dir }
    }

    /// Moves the calling thread into the server's namespace (see the module doc).
    pub fn enter(&self) {
        let path = format!("/run/netns/{}", self.lab.server(1).netns);
        let f = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
    }

    /// A directory under the server's, created.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// The LXC config every bench container gets: no network from LXC, as the daemon's.
    pub fn empty_net_conf(&self) -> PathBuf {
        let p = self.dir.join("empty-net.conf");
        fs::write(&p, "lxc.net.0.type = empty\n").expect("write the LXC net config");
        p
    }
}
