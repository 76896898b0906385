//! creepy-meow: provisions LXC containers onto VXLAN overlay networks that span many servers.
//!
//! # The path of a request
//!
//! A create travels down these parts, each calling only the ones below it:
//!
//! 1. [`api`] (HTTP or HTTPS, warp's filters on our own accept loop): parses and validates the
//!    request into [`model`] values, and answers `202` once [`queue`] has the job on disk;
//! 2. [`queue`]: the durable job store on sled — jobs, their step records, the ledger that
//!    reserves container IDs and addresses — with group commit (many requests, one disk sync),
//!    and a numbered event for every change, written in the change's own transaction (the API
//!    streams them at `GET /api/events` once they are on disk);
//! 3. [`worker`]: the one worker; takes queued jobs oldest first, records every step before it
//!    acts, recovers jobs a crash interrupted (stopping what their tools left running first);
//! 4. [`engine`] and [`steps`]: checks a create against the limits and the host, then runs the
//!    reversible steps (create the LXC container, start it, a veth pair into its namespace,
//!    configure `eth0`), rolling back newest first on failure; also destroy, start, stop,
//!    restart and repair;
//! 5. [`sys`]: the only code that talks to the kernel (rtnetlink) or runs `lxc-*` tools,
//!    behind traits with in-memory fakes for unit tests; it also keeps the view of the host's
//!    links that `info` reads, current by the kernel's link notifications.
//!
//! # Around it
//!
//! - [`fabric`]: the per-server host fabric (`vxlanV` enslaved to `brV`, the host address on
//!   the bridge; flooding by multicast, or by unicast to listed peers), planned as a pure diff
//!   against the kernel and applied idempotently; `setup` runs it at boot, `serve` ensures it
//!   at start;
//! - [`cluster`]: cluster mode on etcd (`serve --etcd`): membership under a lease, the VXLAN
//!   peers kept equal to the live members, and cluster-wide reservations of container IDs and
//!   addresses made while the local enqueue runs (the job waits gated until they are);
//! - [`reconcile`]: the records are the desired state; a pass at start, periodically and on
//!   demand compares them with the host and repairs drift through jobs (a start, a network
//!   repair), never recreating a lost rootfs nor touching what it did not make;
//! - [`daemon`]: `serve`'s start-up order (store, fabric, recovery, API and worker) and its
//!   life until shutdown; [`config`]: its flags over a TOML file over defaults, and who may
//!   reach the API (off loopback: TLS and a token, unless a lab says otherwise); [`tls`]: the
//!   certificate and key HTTPS is served with, checked before anything starts;
//!   [`templates`]: the templates a server offers for new containers, the first the default;
//! - [`images`]: one stopped base container per template, built once; containers are overlay
//!   snapshot clones of it (the create step `create_container` clones, `ensure_image` builds);
//! - [`cli`], [`commands`] and [`client`]: the `creepy-meow` binary's subcommands (`main.rs`
//!   only wires them) and the HTTP client with its live step display;
//! - [`model`]: validated values (container, VLAN and host IDs, IPv4 prefixes) and the names
//!   derived from them, within the kernel's limits; [`spec`]: what a job asks for and the
//!   names its steps are stored under, below both the queue and the steps;
//! - [`metrics`]: the counters behind `GET /metrics`; [`logging`]: text or JSON logs;
//! - [`testhook`]: the crash tests' named barriers, inert unless their variable is set.

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fabric;
pub mod images;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod spec;
pub mod steps;
pub mod sys;
pub mod templates;
#[cfg(test)]
mod test_support;
pub mod testhook;
pub mod tls;
pub mod worker;
