//! What every benchmark shares: the tests' harness (`tests/common`: the lab, the daemon's command
//! line, layout, readiness wait and stop), a one-server lab on it, the daemon started there, the
//! whole daemon on the fake host in a child process (the memory bench), a small HTTP/1.1 client
//! with a load loop, latency summaries, and a job store filled through the library; for the restore bench, the server's host side (a simulated reboot), overlay clones
//! of one container, an ICMP prober and syscall counts through perf.
//!
//! Each bench binary uses a subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

pub mod clones;
pub mod daemon;
pub mod etcd;
pub mod fake_daemon;
pub mod host;
pub mod http;
pub mod icmp;
pub mod lab;
pub mod perf;
pub mod reach;
pub mod reconcile;
pub mod stats;
pub mod store;

/// The harness the tests and benches share (`tests/common`).
#[path = "../../tests/common/mod.rs"]
pub mod harness;

pub use harness::runtime;

/// The bench's answer to "how big": an env var, or the default.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The `10.a.b.c/8` address of container `id`: unique for every ID up to 16,777,214, never a
/// network or broadcast address, so any number of containers and jobs get distinct addresses.
pub fn addr_of(id: u32) -> String {
    format!("10.{}.{}.{}/8", (id >> 16) & 255, (id >> 8) & 255, id & 255)
}

/// The form body of a create of `id` on `vlan`, as the original tool sent it.
pub fn create_form(id: u32, vlan: u8) -> String {
    format!("id={id}&vlan={vlan}&ip={}", addr_of(id))
}

/// Prints `text` and appends it to `$CMBENCH_OUT/<bench>.md` when that is set (the driver
/// collects the files into one report).
pub fn emit(bench: &str, text: &str) {
    println!("{text}");
    if let Ok(dir) = std::env::var("CMBENCH_OUT") {
        use std::io::Write;
        let path = std::path::Path::new(&dir).join(format!("{bench}.md"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        writeln!(f, "{text}").expect("write the report");
    }
}
