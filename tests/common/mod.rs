//! The one harness of the tests and the benches: the benches include this tree too (through
//! `#[path]`, as `harness` in `benches/common/mod.rs`), so a simulated server, a daemon's
//! command line and layout, its readiness wait and its stop are each written once.
//!
//! - [`certs`]: a lab CA and server certificates for the HTTPS tests and bench, made by
//!   `scripts/make-lab-certs.sh`;
//! - [`lab`] (and `lab/cleanup.rs`): simulated servers, each a network namespace on one switch,
//!   torn down on drop, with a sweep of what killed runs left;
//! - [`netns`]: where namespaces are, and entering one (a command through nsenter, a thread
//!   through setns);
//! - [`ping`]: ping arguments and retries;
//! - [`layout`]: a daemon's data dir, LXC path and log under a scratch dir, and the empty-network
//!   LXC config;
//! - [`serve`]: a real `creepy-meow serve` process: command line, log, readiness wait, SIGTERM;
//! - [`daemon`]: the root tests' daemon on a server, driven with curl;
//! - [`disk`]: a small tmpfs over a data directory, and filling it (storage faults);
//! - [`in_process`]: the API tests' daemon in a tokio task on a fake host (no root);
//! - [`events`]: reading `GET /api/events` (a stream, and a client that reads nothing);
//! - [`openapi`]: checks answers against docs/openapi.json;
//! - [`on_server`]: library code run inside a server's namespace;
//! - [`containers`]: reaching into a server's containers;
//! - [`switch`]: the lab switch impaired (multicast dropped, a port cut) and the flood entries
//!   of a server's VXLAN devices;
//! - [`etcd`]: a real etcd on a simulated server, for the cluster tests.
//!
//! The benches keep their own HTTP client (`benches/common/http.rs`); what they share ends at how
//! a request is sent. Each test or bench binary uses a subset, hence the blanket `dead_code`
//! allowance.
#![allow(dead_code)]

pub mod certs;
pub mod containers;
pub mod daemon;
pub mod disk;
pub mod etcd;
pub mod events;
pub mod in_process;
pub mod lab;
pub mod layout;
pub mod netns;
pub mod on_server;
pub mod openapi;
pub mod ping;
pub mod serve;
pub mod switch;

#[allow(unused_imports)]
pub use lab::{require_root, sweep_stale, Lab, Server};

/// The client's arguments for a create of container 5 on VLAN 2 at 192.168.2.5/24.
pub const CREATE_5: [&str; 7] = [
    "create",
    "--id",
    "5",
    "--vlan",
    "2",
    "--ip",
    "192.168.2.5/24",
];

/// Asks `ok` every 200 ms until it says yes; panics naming `what` after `timeout`. A bound on
/// a wait for something that happens in the background (a lease expiring, a watch firing, a
/// sync pass), never a timing assert: `timeout` is far above what it normally takes.
pub fn eventually(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A current-thread tokio runtime: for code run on a server ([`on_server`]), for a root test's
/// readiness wait, and for a bench, whose load generator then uses one core at most, leaving the
/// other to the daemon on a 2-core machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
