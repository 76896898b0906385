//! creepy-meow: provisions LXC containers onto VXLAN overlay networks that span many servers.
//!
//! The parts, from the outside in:
//!
//! - [`cli`] and [`commands`]: the `creepy-meow` binary's subcommands; `main.rs` only wires them;
//! - [`fabric`]: the per-server host fabric (`vxlanV` enslaved to `brV`, host address on the
//!   bridge), planned as a diff against the kernel and applied idempotently;
//! - [`engine`]: validates a create against the limits and the host, then runs [`steps`]:
//!   create the LXC container, start it, one veth pair into its namespace, configure `eth0` —
//!   each step reversible, rolled back newest-first on failure; also destroy and inspect;
//! - [`model`]: validated values (container, VLAN and host IDs, IPv4 prefixes) and the names
//!   derived from them, within the kernel's limits;
//! - [`sys`]: the only code that talks to the kernel (rtnetlink) or runs LXC tools, behind
//!   traits with in-memory fakes for unit tests.
//!
//! Data flows one way: a command validates its input into [`model`] values, decides what to do
//! from what [`sys`] reports, then acts through [`sys`].

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fabric;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod steps;
pub mod sys;
#[cfg(test)]
mod test_support;
pub mod testhook;
pub mod worker;
