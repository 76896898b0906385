//! What a reconcile pass reads of the host without starting a process: the container
//! directories under an LXC path, which of them run (LXC's monitor, then its child, the
//! container's init: [`super::monitor`]) and which LXC is starting or stopping (a monitor
//! without an init), and the IPv4 addresses local to a process's network namespace
//! (`/proc/<pid>/net/fib_trie`). Its cost grows with the containers, not with the processes.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{lxc_files, monitor, SysError, SysResult};

/// One container directory under the LXC path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEntry {
    /// The container's name (the directory's).
    pub name: String,
    /// Whether LXC knows it (a `config` file).
    pub has_config: bool,
    /// Whether its root file system is there.
    pub has_rootfs: bool,
    /// Its init's PID while it runs.
    pub init_pid: Option<u32>,
}

/// The containers under `lxc_path`, with the init PID of each running one (`known`: the
/// inits found before, see [`monitor::Known`]), and the containers LXC is starting or
/// stopping, from the same reads:
/// their monitor runs without an init (not forked yet, or exited and reaped). Judged then, a
/// container being stopped looked stopped while LXC still tore it down, and a reconcile pass
/// queued a start that raced the teardown and failed (passes run in a loop during
/// `lxc-stop -k`, beside `tests/reconcile_root.rs`). What the host shows of them is about to
/// change.
///
/// # Errors
/// When the LXC path or `/proc` cannot be read.
pub fn survey(
    lxc_path: &Path,
    known: &monitor::Known,
) -> SysResult<(Vec<ContainerEntry>, Vec<String>)> {
    let dir = match std::fs::read_dir(lxc_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => {
            return Err(SysError::Io {
                what: format!("list {}", lxc_path.display()),
                source,
            })
        }
    };
    let names: Vec<String> = dir
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut out = entries(lxc_path, names);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = out.iter().map(|e| e.name.clone()).collect();
    let monitors = monitor::find(lxc_path, &names, known)?;
    let changing = monitors
        .iter()
        .filter(|(_, init)| init.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    for entry in &mut out {
        entry.init_pid = monitors.get(&entry.name).copied().flatten();
        check_clone_base(lxc_path, entry);
    }
    Ok((out, changing))
}

/// The entries of `names` (directories under `lxc_path`), without their init: two `stat`s
/// each. (Split across threads it saved ≈ 1 ms of 8 at 1,000, for two threads started per
/// pass: not kept.)
fn entries(lxc_path: &Path, names: Vec<String>) -> Vec<ContainerEntry> {
    names
        .into_iter()
        .map(|name| dir_entry(lxc_path, name, None))
        .collect()
}

/// The entry of directory `name` under `lxc_path` with `init_pid`: two `stat`s.
fn dir_entry(lxc_path: &Path, name: String, init_pid: Option<u32>) -> ContainerEntry {
    let dir = lxc_path.join(&name);
    ContainerEntry {
        has_config: dir.join("config").exists(),
        has_rootfs: dir.join("rootfs").exists(),
        init_pid,
        name,
    }
}

/// A stopped snapshot clone whose base (its image) is gone has no root file system: its
/// `rootfs` is an empty mount point over nothing. LXC names the base in `lxc_rdepends` (LXC
/// path, then name). Read for stopped containers only: a running one has its rootfs mounted,
/// and a pass that finds nothing to do reads nothing more.
fn check_clone_base(lxc_path: &Path, entry: &mut ContainerEntry) {
    if entry.init_pid.is_some() || !entry.has_rootfs {
        return;
    }
    if lxc_files::base_of(lxc_path, &entry.name).is_some_and(|base| !base.join("rootfs").is_dir()) {
        entry.has_rootfs = false;
    }
}

/// The entry of container `name` alone, as [`survey`] would list it, or `None` when it has no
/// directory.
///
/// # Errors
/// When the unix sockets or `/proc` cannot be read.
pub fn entry(
    lxc_path: &Path,
    name: &str,
    known: &monitor::Known,
) -> SysResult<Option<ContainerEntry>> {
    if !lxc_path.join(name).is_dir() {
        return Ok(None);
    }
    let init_pid = monitor::init_pid(lxc_path, name, known)?;
    let mut entry = dir_entry(lxc_path, name.to_string(), init_pid);
    check_clone_base(lxc_path, &mut entry);
    Ok(Some(entry))
}

/// [`entry`] when it costs no more than a few `stat`s and one poll(2): the container has no
/// directory, or [`monitor::Known`] holds its init. `None` when finding its init takes more.
pub fn entry_if_cheap(
    lxc_path: &Path,
    name: &str,
    known: &monitor::Known,
) -> Option<Option<ContainerEntry>> {
    if !lxc_path.join(name).is_dir() {
        return Some(None);
    }
    let init_pid = known.held(name)?;
    Some(Some(dir_entry(lxc_path, name.to_string(), Some(init_pid))))
}

/// The IPv4 addresses local to the network namespace of process `pid`.
///
/// # Errors
/// [`SysError::NotFound`] when the process is gone.
pub fn local_addresses(pid: u32) -> SysResult<Vec<Ipv4Addr>> {
    let path = format!("/proc/{pid}/net/fib_trie");
    match monitor::read_small(&path) {
        Ok(text) => Ok(parse_fib_trie(&String::from_utf8_lossy(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SysError::NotFound {
            what: format!("read {path}"),
        }),
        Err(source) => Err(SysError::Io { what: path, source }),
    }
}

/// The addresses `fib_trie` marks `/32 host LOCAL`: each stands on a `|-- a.b.c.d` line, its
/// kind on the next.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line == "/32 host LOCAL" {
            if let Some(a) = last.filter(|a| !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_clone_whose_image_is_gone_has_no_rootfs() {
        let dir = crate::test_support::TempDir::new("clone-base");
        let p = dir.path();
        for d in [
            "image-busybox-v1/rootfs",
            "container5/rootfs",
            "container6/rootfs",
        ] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        let rdepends = format!("{}\nimage-busybox-v1\n", p.display());
        std::fs::write(p.join("container5/lxc_rdepends"), &rdepends).unwrap();
        let judged = |name: &str, init_pid| {
            let mut e = dir_entry(p, name.into(), init_pid);
            check_clone_base(p, &mut e);
            e.has_rootfs
        };
        assert!(judged("container5", None) && judged("container6", None));
        std::fs::remove_dir_all(p.join("image-busybox-v1")).unwrap();
        assert!(!judged("container5", None), "its image is gone");
        assert!(
            judged("container5", Some(42)),
            "running: its rootfs is mounted"
        );
        assert!(judged("container6", None), "not a clone");
    }

    #[test]
    fn fib_trie_yields_the_local_addresses_once() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.168.2.0\n        /24 link UNICAST\n     |-- 192.168.2.5\n        /32 host LOCAL\n     |-- 192.168.2.255\n        /32 link BROADCAST\nLocal:\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.168.2.5\n        /32 host LOCAL\n";
        let want: Vec<Ipv4Addr> =
            vec!["192.168.2.5".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        assert_eq!(parse_fib_trie(text), want);
    }

    #[test]
    fn our_own_namespace_has_loopback_local() {
        let ours = local_addresses(std::process::id()).unwrap();
        assert!(ours.contains(&Ipv4Addr::LOCALHOST), "{ours:?}");
    }
}
