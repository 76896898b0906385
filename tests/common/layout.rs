//! Where things live in a scratch directory (a simulated server's, or the API tests' temp dir):
//! the daemon's data dir, its LXC path, its log, and the LXC config of the containers the tests
//! and benches create themselves. The daemon, the engine under test and the tests' own `lxc-*`
//! calls must agree on the LXC path, so it is named here once.

use std::path::{Path, PathBuf};

/// The daemon's data directory (`--data-dir`) under scratch dir `dir`.
pub fn data_path(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// The LXC path (`--lxc-path`, `lxc-* -P`) under scratch dir `dir`: where a server's daemon,
/// an engine on that server and the tests' own `lxc-ls`/`lxc-attach` find its containers.
pub fn lxc_path(dir: &Path) -> PathBuf {
    dir.join("lxc")
}

/// A daemon's log (stdout and stderr) for data directory `data`: beside it, named after it
/// (`data.log`), so that a bench's daemons on several data dirs keep one log each.
pub fn log_path(data: &Path) -> PathBuf {
    data.with_extension("log")
}

/// The LXC config of the containers made with `lxc-create -f` outside the daemon: the
/// daemon's own (no network from LXC).
pub const EMPTY_NET_CONFIG: &str = creepy_meow::sys::lxc::NET_CONFIG;

/// Writes [`EMPTY_NET_CONFIG`] to `dir/empty-net.conf` and returns that path.
pub fn write_empty_net_config(dir: &Path) -> PathBuf {
    let path = dir.join("empty-net.conf");
    std::fs::write(&path, EMPTY_NET_CONFIG)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
