//! Network namespaces: where they are, and the two ways in. A command enters one through
//! nsenter(1) ([`nsenter`]: the lab's servers, a container's namespace by its init PID); a thread
//! enters one through setns(2) ([`enter`]: library code run "on" a server, a bench's main thread).
//! Only the network namespace is ever entered: the mount namespace stays the host's, so LXC's
//! paths and cgroups are the ones the daemon sees.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::lab::bin;

/// Where `ip netns add` pins a named namespace (ip-netns(8)).
pub const DIR: &str = "/run/netns";

/// The file of the named namespace `name`: `/run/netns/<name>`.
pub fn named(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

/// The network namespace of process `pid` (a container's, by its init PID): `/proc/<pid>/ns/net`.
pub fn of_pid(pid: impl std::fmt::Display) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// A command that runs `program` in the network namespace `ns` only. Never `ip netns exec`,
/// whose remount of /sys breaks LXC's cgroups.
pub fn nsenter(
    ns: &Path,
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Command {
    let mut cmd = Command::new(bin("nsenter"));
    cmd.arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg(program)
        .args(args);
    cmd
}

/// Moves the calling thread into the network namespace `ns` (setns(2), `CLONE_NEWNET`). What the
/// thread opens or spawns afterwards (sockets, netlink, the `lxc-*` tools, threads it starts)
/// belongs to that namespace; other threads of the process stay where they were.
pub fn enter(ns: &Path) {
    let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", ns.display()));
}
