//! The one gateway to the kernel and to LXC. Nothing outside `sys` imports rtnetlink or runs a
//! process; everything else speaks the small verbs of the traits here, which have a real
//! implementation and a fake for unit tests.
//!
//! - [`netlink`]: the [`Netlink`] and [`NetnsOpener`] traits and the link facts they return;
//! - [`rtnl`]: the real [`Netlink`] over rtnetlink, with [`fdb`] for a VXLAN device's own
//!   forwarding table (the unicast peers' flood entries); [`netns`]: the real [`NetnsOpener`],
//!   which reads another namespace's addresses through [`ns_addresses`];
//! - [`lean_links`]: the bridge-port dump of a reconcile pass and `info`'s link reads, on a
//!   netlink connection whose messages are parsed lean;
//! - [`link_watch`]: the host's links as `info` reads them, a [`link_table::LinkTable`] kept
//!   current by the kernel's link notifications (the fake kernel feeds the same table);
//! - [`kv`]: the [`Kv`] trait, the cluster's key-value store (cluster mode), with its real
//!   implementation over etcd in [`etcd`] and a fake in `fake_kv`;
//! - [`lxc`]: the [`Lxc`] trait and its real implementation over the `lxc-*` tools;
//!   [`lxc_files`]: what those tools leave on disk that is read without one (an image's
//!   clones, a directory's size);
//! - `fake` and `fake_lxc`: in-memory implementations that record calls in one log and play
//!   scripted failures (only with the `test-util` feature, or in unit tests), over the fake
//!   kernel's state in `fake_world`;
//! - [`process`]: how every tool runs: tagged with the job it serves, in a process group of its
//!   own, killed with its group on a time-out;
//! - [`reap`]: the [`Reaper`] trait, which finds and kills what a crashed run of a job left
//!   running, and its real implementation over `/proc`;
//! - [`inventory`]: what a reconcile pass reads without a process: container directories,
//!   which run, the addresses local to a container's namespace;
//! - [`monitor`]: which containers LXC runs, and their init, from LXC's command sockets and
//!   the monitor PID files `lxc-start -p` writes;
//! - [`host`]: the bundle of them all that the engine is given;
//! - [`privilege`]: the CAP_NET_ADMIN check made before touching anything; [`preflight`]:
//!   the `lxc-*` tools and kernel features `serve` needs, checked before it too;
//! - [`memory`]: the allocator's arena cap, set first thing in `main`, and the trims that hand
//!   free heap back to the kernel (after start-up, then every 10 s);
//! - [`limits`]: the open-files limit raised to its hard limit, also first thing in `main`.

pub mod error;
pub mod etcd;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
#[cfg(any(test, feature = "test-util"))]
pub mod fake_kv;
#[cfg(any(test, feature = "test-util"))]
mod fake_links;
#[cfg(any(test, feature = "test-util"))]
pub mod fake_lxc;
#[cfg(any(test, feature = "test-util"))]
mod fake_world;
pub mod fdb;
pub mod host;
pub mod inventory;
pub mod kv;
pub mod lean_links;
pub mod limits;
pub mod link_table;
pub mod link_watch;
pub mod lxc;
pub mod lxc_files;
pub mod memory;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod ns_addresses;
pub mod preflight;
pub mod privilege;
pub mod process;
pub mod reap;
pub mod rtnl;

pub use error::{IdempotentResult, SysError, SysResult};
pub use host::Host;
pub use kv::{Kv, KvCond, KvEntry, KvError, KvListing, KvOp, KvResult, KvTxn};
pub use lxc::{ContainerStatus, Lxc};
pub use netlink::{
    FdbEntry, LinkKind, LinkState, Netlink, NetnsOpener, VethSpec, VxlanAttrs, VxlanSpec,
};
pub use reap::Reaper;
