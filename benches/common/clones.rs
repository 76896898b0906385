//! Many real containers quickly, for a bench that needs a thousand: one busybox base, made the
//! way the daemon makes its containers (`LxcTools::create`: no network from LXC, busybox's DHCP
//! client off), then overlay snapshot clones of it (`lxc-copy -s -B overlay`: a config and an
//! empty upper directory, 15–60 ms each here against `lxc-create`'s ≈ 450 ms).
//!
//! The base keeps one tty (`lxc.tty.max = 1`, for the getty busybox's inittab runs on tty1) where
//! the busybox template gives five: each tty and the console is a pty of the container's own
//! devpts, and those share the host's `kernel.pty.max` less `kernel.pty.reserve` (4096 − 1024
//! here), so with five ttys `lxc-start` fails ("Failed to create tty") from ≈ 510 containers on.
//!
//! The base goes beside the server's directory ([`super::lab::Lab::beside`]), not under it: LXC
//! refuses to destroy a base while clones depend on it, and the lab's teardown destroys the
//! containers under the server's directory first, then removes its own directory, base and all.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use creepy_meow::sys::lxc::{Lxc, LxcTools};

use super::harness::lab::run_checked;

/// The base container's name.
pub const BASE: &str = "base";

/// Makes the base in LXC path `base_path`, then a clone of it for every name in LXC path `lxc`
/// (stopped); returns the time the clones took.
pub async fn make(base_path: &Path, lxc: &Path, names: &[String]) -> Duration {
    let base = LxcTools::new(base_path, "busybox", Vec::new()).expect("the base's LXC path");
    base.create(BASE, None)
        .await
        .expect("create the base container");
    one_tty(&base_path.join(BASE).join("config"));
    let started = Instant::now();
    for name in names {
        run_checked(
            Command::new("lxc-copy")
                .arg("-P")
                .arg(base_path)
                .args(["-n", BASE, "-p"])
                .arg(lxc)
                .args(["-N", name, "-s", "-B", "overlay"]),
        );
    }
    started.elapsed()
}

/// Sets `lxc.tty.max = 1` in the container config at `path` (see the module doc).
fn one_tty(path: &Path) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut kept: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("lxc.tty.max"))
        .flat_map(|l| [l, "\n"])
        .collect();
    kept.push_str("lxc.tty.max = 1\n");
    std::fs::write(path, kept).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
