//! Helpers shared by the root integration tests. Each test binary uses only a
//! subset, hence the blanket `dead_code`/`unused_imports` allowances.
#![allow(dead_code)]

pub mod containers;
pub mod daemon;
pub mod lab;
pub mod on_server;

#[allow(unused_imports)]
pub use lab::{require_root, sweep_stale, Lab, Server};
