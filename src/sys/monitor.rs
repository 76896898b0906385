//! LXC's monitor of a running container, and the container's init, found without starting a
//! process and without reading every process on the host.
//!
//! Every container LXC runs has a monitor process (`[lxc monitor] <lxc path> <name>`) whose
//! child is the container's init, and the monitor listens on an abstract unix socket named
//! after the container (`@<lxc path>/<name>/command`, or `@lxc/<hash>/command` when that is too
//! long: LXC's `lxc_make_abstract_socket_name`). So:
//!
//! - **which containers have a monitor** (running, starting or stopping): one read of the
//!   unix sockets of our network namespace, where LXC keeps the socket (the tools run from it,
//!   see [`super::lxc`]): `/proc/thread-self/net/unix`, since a test's thread may have entered
//!   a namespace its process has not;
//! - **the init of one**: the daemon starts every container with `lxc-start -p`, which writes
//!   the monitor's PID to [`pidfile`]; the monitor is checked by its command line (a PID in a
//!   file left by a crash or a reboot may name another process now), and init is its child.
//!
//! A container with a monitor but no usable PID file (started by hand, or by a daemon before
//! PID files) is found the old way, by reading the command line of every process
//! ([`scan_proc`]): correct, and O(processes) rather than O(containers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{SysError, SysResult};

/// The file `lxc-start -p` writes the monitor's PID to: in the container's directory, so it
/// goes with the container. LXC removes it when the container stops.
pub fn pidfile(lxc_path: &Path, name: &str) -> PathBuf {
    lxc_path.join(name).join("creepy-meow-monitor.pid")
}

/// The abstract socket name (without the leading `@`) of the command socket of container
/// `name` under `lxc_path`, as LXC 4 and 5 make it: `<path>/<name>/command`, unless that does
/// not fit `sun_path` (108 bytes, less the leading and trailing NUL), then `lxc/<FNV-1a 64 of
/// "<path>/<name>">/command`.
pub fn command_socket(lxc_path: &Path, name: &str) -> String {
    let base = format!("{}/{name}", lxc_path.display());
    let plain = format!("{base}/command");
    if plain.len() < 108 - 2 {
        return plain;
    }
    format!("lxc/{:016x}/command", fnv1a_64(base.as_bytes()))
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The abstract unix socket names in the calling thread's network namespace.
///
/// # Errors
/// When `/proc/thread-self/net/unix` cannot be read.
pub fn abstract_sockets() -> SysResult<HashSet<String>> {
    let text = read_small("/proc/thread-self/net/unix").map_err(|source| SysError::Io {
        what: "read /proc/thread-self/net/unix".into(),
        source,
    })?;
    Ok(parse_unix(&String::from_utf8_lossy(&text)))
}

/// The `@name` paths of `/proc/net/unix` (its 8th column), without the `@`.
fn parse_unix(text: &str) -> HashSet<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7)?.strip_prefix('@'))
        .map(str::to_string)
        .collect()
}

/// Name → init PID of those of `names` that LXC runs from `lxc_path` (a monitor exists);
/// `None` for one whose init is not there (not forked yet, or exited: LXC is starting or
/// stopping it). Reads the namespace's unix sockets, then, for a container with a monitor
/// that `known` does not hold yet, three small files; all of `/proc` only when one has no
/// usable PID file.
///
/// # Errors
/// When the unix sockets or `/proc` cannot be read.
pub fn find(
    lxc_path: &Path,
    names: &[String],
    known: &Known,
) -> SysResult<BTreeMap<String, Option<u32>>> {
    let listening = abstract_sockets()?;
    let running: Vec<&String> = names
        .iter()
        .filter(|n| listening.contains(&command_socket(lxc_path, n)))
        .collect();
    // The lock is held for the poll only, never for the reads of a container found anew:
    // `info` asks `Known::held` on the reactor, and a first pass reads 1,000 containers.
    let held: HashMap<String, u32> = {
        let mut inits = known.lock();
        inits.retain(|name, _| listening.contains(&command_socket(lxc_path, name)));
        let exited = exited(&inits);
        inits.retain(|name, _| !exited.contains(name));
        inits.iter().map(|(n, i)| (n.clone(), i.pid)).collect()
    };
    let mut out = BTreeMap::new();
    let (mut found, mut unknown) = (Vec::new(), Vec::new());
    for name in running {
        if let Some(pid) = held.get(name) {
            out.insert(name.clone(), Some(*pid));
            continue;
        }
        match monitor_from_pidfile(lxc_path, name) {
            Some(monitor) => {
                let (pid, held) = init_of(monitor);
                found.extend(held.map(|init| (name.clone(), init)));
                out.insert(name.clone(), pid);
            }
            None => unknown.push(name.clone()),
        }
    }
    known.lock().extend(found);
    if !unknown.is_empty() {
        let scanned = scan_proc(lxc_path)?;
        for name in unknown {
            // Gone between the two reads: it stopped.
            if let Some(init) = scanned.get(&name) {
                out.insert(name, *init);
            }
        }
    }
    Ok(out)
}

/// The init PID of container `name` while LXC runs it, `None` otherwise: one poll(2) when
/// `known` holds it; else its monitor from the PID file and the monitor's child, a few small
/// reads whatever the number of containers (`start_container` asks this right after
/// `lxc-start`; [`find`]'s read of every command socket and poll of every held init cost
/// ≈ 3 ms per start at 500 containers); [`find`] when there is no valid PID file (a container
/// started by hand).
///
/// # Errors
/// As [`find`].
pub fn init_pid(lxc_path: &Path, name: &str, known: &Known) -> SysResult<Option<u32>> {
    // Held and not exited: it runs, and nothing needs reading.
    if let Some(pid) = known.held(name) {
        return Ok(Some(pid));
    }
    if let Some(monitor) = monitor_from_pidfile(lxc_path, name) {
        let (pid, held) = init_of(monitor);
        if let Some(init) = held {
            known.lock().insert(name.to_string(), init);
        }
        return Ok(pid);
    }
    Ok(find(lxc_path, &[name.to_string()], known)?
        .remove(name)
        .flatten())
}

/// The init of the container whose monitor is `monitor` (its first child), and the init held
/// by a pidfd when one could be had. `None` while the monitor has no running child: LXC is
/// starting or stopping the container.
fn init_of(monitor: u32) -> (Option<u32>, Option<Init>) {
    match first_child(monitor).map(|pid| (pid, Init::open(pid))) {
        Some((pid, Opened::Held(init))) => (Some(pid), Some(init)),
        Some((pid, Opened::Unheld)) => (Some(pid), None),
        Some((_, Opened::Exited)) | None => (None, None),
    }
}

/// The inits found so far, each held by a pidfd (pidfd_open(2)): while it does not poll
/// readable the process has not exited, so its PID still names it and nothing needs reading
/// again. A container's entry goes when its init exits or its monitor's socket does.
#[derive(Debug, Default)]
pub struct Known(Mutex<HashMap<String, Init>>);

impl Known {
    /// The init of `name` if it is held and has not exited.
    pub fn held(&self, name: &str) -> Option<u32> {
        self.lock().get(name).filter(|i| i.alive()).map(|i| i.pid)
    }

    /// Name → PID of every init held, as last found (not polled: a caller that reads through
    /// one checks it after).
    pub fn held_all(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|(n, i)| (n.clone(), i.pid))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Init>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The names of `inits` whose process has exited: one poll(2) over all their pidfds.
fn exited(inits: &HashMap<String, Init>) -> HashSet<String> {
    let (names, mut fds): (Vec<&String>, Vec<libc::pollfd>) = inits
        .iter()
        .map(|(name, init)| {
            let fd = libc::pollfd {
                fd: init.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            (name, fd)
        })
        .unzip();
    let Ok(n) = libc::nfds_t::try_from(fds.len()) else {
        return inits.keys().cloned().collect();
    };
    // SAFETY: `fds` is a valid array of `n` pollfds that we own; no wait.
    if n == 0 || unsafe { libc::poll(fds.as_mut_ptr(), n, 0) } < 0 {
        return HashSet::new();
    }
    names
        .into_iter()
        .zip(&fds)
        .filter(|(_, fd)| fd.revents != 0)
        .map(|(name, _)| name.clone())
        .collect()
}

/// What opening a pidfd on an init gave.
enum Opened {
    /// Held: it runs.
    Held(Init),
    /// It has exited (or the PID names nothing).
    Exited,
    /// It runs, but no pidfd could be had.
    Unheld,
}

/// A container's init, held by a pidfd.
#[derive(Debug)]
struct Init {
    pid: u32,
    fd: OwnedFd,
}

impl Init {
    /// Holds `pid` if it runs; an init that exited (not reaped yet) is not held: it is
    /// stopping. When no pidfd can be had (the limit of open files reached, a kernel without
    /// pidfd_open), the init still counts as running, only unheld: found again next time.
    fn open(pid: u32) -> Opened {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Opened::Exited;
        };
        // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        let Some(fd) = i32::try_from(fd).ok().filter(|fd| *fd >= 0) else {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => Opened::Exited,
                _ => Opened::Unheld,
            };
        };
        let init = Self {
            pid,
            // SAFETY: the descriptor was just returned to us and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        if init.alive() {
            Opened::Held(init)
        } else {
            Opened::Exited
        }
    }

    /// Whether it has not exited: its pidfd does not poll readable.
    fn alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
    }
}

/// The PID in `name`'s PID file, if that process is its monitor.
fn monitor_from_pidfile(lxc_path: &Path, name: &str) -> Option<u32> {
    let text = read_small(pidfile(lxc_path, name)).ok()?;
    let pid: u32 = String::from_utf8_lossy(&text).trim().parse().ok()?;
    let cmdline = read_small(format!("/proc/{pid}/cmdline")).ok()?;
    let want = monitor_cmdline(lxc_path, name);
    (cmdline.strip_suffix(b"\0").unwrap_or(&cmdline) == want.as_bytes()).then_some(pid)
}

/// The command line LXC gives the monitor of `name`.
fn monitor_cmdline(lxc_path: &Path, name: &str) -> String {
    format!("[lxc monitor] {} {name}", lxc_path.display())
}

/// Name → init PID of every container LXC runs from `lxc_path`, from the command line of every
/// process in `/proc` (see the module doc for when).
///
/// # Errors
/// When `/proc` cannot be listed.
pub fn scan_proc(lxc_path: &Path) -> SysResult<BTreeMap<String, Option<u32>>> {
    let proc_dir = std::fs::read_dir("/proc").map_err(|source| SysError::Io {
        what: "list processes in /proc".into(),
        source,
    })?;
    let prefix = monitor_cmdline(lxc_path, "");
    let mut out = BTreeMap::new();
    for entry in proc_dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = read_small(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if let Some(name) = cmdline.trim_end_matches('\0').strip_prefix(&prefix) {
            out.insert(name.to_string(), first_child(pid));
        }
    }
    Ok(out)
}

/// The first child of `pid` (a monitor has one: the container's init).
fn first_child(pid: u32) -> Option<u32> {
    let children = read_small(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    String::from_utf8_lossy(&children)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads a small file (a `/proc` entry) whole: open, read into an 8 KiB buffer until the end,
/// close; without the size probe and the 32-byte first read `std::fs::read` makes, which a
/// `seq_file` answers by generating its text again for each read.
///
/// # Errors
/// As `open` and `read`.
pub fn read_small(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(8192);
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_path_names_the_socket_plainly() {
        assert_eq!(
            command_socket(Path::new("/var/lib/creepy-meow/lxc"), "container5"),
            "/var/lib/creepy-meow/lxc/container5/command"
        );
    }

    /// The value LXC 5.0.2 used on this machine for `/tmp/lxtry/a…a` (90 `a`) and `c2`, read
    /// from `/proc/net/unix` while it ran.
    #[test]
    fn a_long_path_is_hashed_as_lxc_does() {
        let path = format!("/tmp/lxtry/{}", "a".repeat(90));
        assert_eq!(
            command_socket(Path::new(&path), "c2"),
            "lxc/96fcdfb60711b510/command"
        );
    }

    #[test]
    fn unix_listing_yields_abstract_names_only() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000061b9fab7: 00000002 00000000 00010000 0001 01 5031427 @/tmp/x/c1/command\n\
            0000000061b9fab8: 00000002 00000000 00010000 0001 01 5031428 /run/sock\n\
            0000000061b9fab9: 00000003 00000000 00000000 0001 03 5031429\n";
        let got = parse_unix(text);
        assert_eq!(got, HashSet::from(["/tmp/x/c1/command".to_string()]));
    }

    #[test]
    fn no_monitor_means_not_running() {
        let dir = std::env::temp_dir().join(format!("cm-monitor-{}", std::process::id()));
        let got = find(&dir, &["container1".to_string()], &Known::default()).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_pid_file_naming_another_process_is_not_a_monitor() {
        let dir = std::env::temp_dir().join(format!("cm-monitor-pf-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("c1")).unwrap();
        std::fs::write(pidfile(&dir, "c1"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(monitor_from_pidfile(&dir, "c1"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_process_is_alive_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let Opened::Held(init) = Init::open(child.id()) else {
            panic!("no pidfd of a running child");
        };
        assert!(init.alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!init.alive(), "an exited process still polls alive");
        assert!(
            matches!(Init::open(child.id()), Opened::Exited),
            "a reaped PID was taken for running"
        );
    }

    #[test]
    fn small_reads_read_it_all() {
        let ours = read_small("/proc/self/status").unwrap();
        assert!(String::from_utf8_lossy(&ours).contains("Pid:"));
    }
}
