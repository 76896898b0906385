//! Simulated multi-server lab for root integration tests.
//!
//! Each "server" is a network namespace whose `eth1` is plugged into a bridge
//! `sw0` living in a private "switch" namespace, so VXLAN/LXC code can be
//! exercised across several hosts on one machine without touching the real
//! network. Everything is named after a per-lab tag, and torn down on drop.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};

use super::netns::{self, nsenter};
use super::ping::{ping_retrying, size_args};
use cleanup::{kill_tracked, sweep, teardown};
// Public for the lab's self-test only.
#[allow(unused_imports)]
pub use cleanup::{encode_tag, tag_pid};

mod cleanup;

const TAG_PREFIX: &str = "cm";
const DIR_PREFIX: &str = "creepy-meow-lab-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();
/// `ip netns add` makes /run/netns a shared mount on first use; two racing first
/// calls stack two mounts and hide each other's namespaces, so serialize them.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// Root tests must fail loudly (never pass vacuously) when they cannot run.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces, veth, LXC); run it as root, e.g. `sudo -E cargo test`");
    }
    for tool in ["ip", "nsenter"] {
        if which(tool).is_none() {
            panic!("required tool `{tool}` not found in PATH or /usr/sbin:/sbin (install iproute2 / util-linux)");
        }
    }
}

/// Best-effort cleanup of labs left behind by killed test processes (Drop never ran).
///
/// Only touches labs whose temp dir (`/tmp/creepy-meow-lab-<tag>`) still exists and
/// whose owner pid, encoded in the tag, is gone. Called automatically once per
/// process by the first [`Lab::new`].
pub fn sweep_stale() {
    sweep(false);
}

/// A set of simulated servers wired to one switch; dropping it removes everything.
pub struct Lab {
    tag: String,
    root: PathBuf,
    switch_ns: String,
    servers: Vec<Server>,
    created_ns: Vec<String>,
    children: Arc<Mutex<Vec<Tracked>>>,
}

/// One simulated server: a network namespace plus a scratch directory.
#[derive(Debug)]
pub struct Server {
    /// Namespace name (`/run/netns/<netns>`), for nsenter or for product code under test.
    pub netns: String,
    /// 1-based id; also the last octet of the underlay address.
    pub host_id: u8,
    /// Address of `eth1` on the shared 10.77.0.0/24 underlay.
    pub underlay_ip: Ipv4Addr,
    /// Private scratch dir (the daemon's data dir, LXC path and log: [`super::layout`]); removed
    /// on drop.
    pub dir: PathBuf,
    children: Arc<Mutex<Vec<Tracked>>>,
}

#[derive(Debug)]
struct Tracked {
    pid: i32,
    pidfd: OwnedFd,
}

impl Lab {
    /// Builds `servers` servers (1..=254) on one switch; panics if anything fails.
    pub fn new(servers: usize) -> Lab {
        require_root();
        assert!(
            (1..=254).contains(&servers),
            "Lab::new: servers must be 1..=254, got {servers}"
        );
        SWEEP.call_once(|| sweep(true));
        let (tag, root) = claim_tag();
        let mut lab = Lab {
            switch_ns: format!("{tag}-sw"),
            tag,
            root,
            servers: Vec::new(),
            created_ns: Vec::new(),
            children: Arc::default(),
        };
        // From here on a panic drops `lab`, which tears down whatever was built.
        let sw = lab.switch_ns.clone();
        lab.add_netns(&sw);
        ns_ip(
            &sw,
            "link add sw0 type bridge mcast_snooping 0 mcast_querier 0",
        );
        ns_ip(&sw, "link set sw0 up");
        for i in 1..=servers {
            let ns = format!("{}-s{i}", lab.tag);
            let port = format!("p{i}");
            lab.add_netns(&ns);
            // Both ends are created directly inside their namespaces: nothing ever
            // appears in the root namespace.
            run_checked(
                Command::new(bin("ip"))
                    .args(["link", "add", "eth1", "netns", &ns, "type", "veth"])
                    .args(["peer", "name", &port, "netns", &sw]),
            );
            ns_ip(&sw, &format!("link set {port} master sw0"));
            ns_ip(&sw, &format!("link set {port} up"));
            let ip = Ipv4Addr::new(10, 77, 0, i as u8);
            ns_ip(&ns, &format!("addr add {ip}/24 dev eth1"));
            ns_ip(&ns, "link set eth1 up");
            let dir = lab.root.join(format!("s{i}"));
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            lab.servers.push(Server {
                netns: ns,
                host_id: i as u8,
                underlay_ip: ip,
                dir,
                children: lab.children.clone(),
            });
        }
        lab
    }

    /// Server by 1-based host id, matching the underlay address's last octet.
    pub fn server(&self, host_id: usize) -> &Server {
        assert!(
            (1..=self.servers.len()).contains(&host_id),
            "lab has servers 1..={}, asked for {host_id}",
            self.servers.len()
        );
        &self.servers[host_id - 1]
    }

    /// All servers, in host-id order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Namespace holding the `sw0` bridge, for inspecting or impairing the underlay.
    pub fn switch_netns(&self) -> &str {
        &self.switch_ns
    }

    /// Unique run tag; prefix of every namespace name of this lab.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Per-run temp dir holding the server dirs.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn add_netns(&mut self, ns: &str) {
        {
            let _serial = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
            run_checked(Command::new(bin("ip")).args(["netns", "add", ns]));
        }
        self.created_ns.push(ns.to_string());
        ns_ip(ns, "link set lo up");
    }

    /// Kills the tracked children, then removes containers, namespaces and the temp dir.
    /// Returns what could not be removed.
    fn tear_down(&mut self) -> Vec<String> {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        let mut errors: Vec<String> = children
            .iter()
            .filter_map(|c| kill_tracked(c).err())
            .collect();
        let servers: Vec<(String, PathBuf)> = self
            .servers
            .iter()
            .map(|s| (s.netns.clone(), s.dir.clone()))
            .collect();
        errors.extend(teardown(&servers, &self.created_ns, &self.root));
        errors
    }
}

/// A lab that leaks (a namespace, a container, a process) fails the test that owned it. If
/// that test is already failing, the leak is only printed: a panic in a drop during unwinding
/// would abort the whole test binary and hide the first failure.
impl Drop for Lab {
    fn drop(&mut self) {
        let errors = match catch_unwind(AssertUnwindSafe(|| self.tear_down())) {
            Ok(errors) => errors,
            Err(panic) => vec![format!("teardown panicked: {}", panic_text(&*panic))],
        };
        if errors.is_empty() {
            return;
        }
        let msg = format!(
            "lab {}: teardown failed (`ip netns list`, sweep_stale() to clean up):\n  {}",
            self.tag,
            errors.join("\n  ")
        );
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)")
}

impl Server {
    /// A command that runs in this server's network namespace only (never `ip netns
    /// exec`, whose /sys remount breaks LXC cgroups).
    pub fn cmd(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Command {
        nsenter(&netns::named(&self.netns), program, args)
    }

    /// Runs to completion and returns the output whatever the exit status.
    pub fn run(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Output {
        let mut cmd = self.cmd(program, args);
        cmd.output()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
    }

    /// Runs to completion, panicking with stdout/stderr on failure; returns stdout.
    pub fn run_ok(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> String {
        run_checked(&mut self.cmd(program, args))
    }

    /// Starts a long-running process (e.g. the daemon) that the lab kills on drop.
    pub fn spawn(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Child {
        let mut cmd = self.cmd(program, args);
        cmd.stdin(Stdio::null());
        self.spawn_cmd(cmd)
    }

    /// Like [`Server::spawn`] for a command from [`Server::cmd`] with custom stdio/env.
    ///
    /// The child gets its own process group so drop can also kill what it forked.
    /// If you reap the child yourself, its leftover descendants are no longer killed.
    pub fn spawn_cmd(&self, mut cmd: Command) -> Child {
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        let pid = child.id() as i32;
        // A pidfd lets drop signal/reap safely even if the pid got reaped and reused.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            // Untracked, it would outlive the lab: kill it and its group while it is unreaped
            // (so its pid is still ours), then fail.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            panic!("lab: pidfd_open({pid}) failed: {err}; the lab could not kill this child on drop (pidfd_open needs Linux 5.3)");
        }
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Tracked { pid, pidfd });
        child
    }

    /// Reachability check that tolerates ARP/bridge settling (up to ~5 tries).
    pub fn ping(&self, target: Ipv4Addr) -> bool {
        ping_retrying(&self.netns, target, &[], |args| self.run("ping", args))
    }

    /// Ping with a given ICMP payload size, for MTU tests; `dont_fragment` sets DF.
    /// A DF packet refused locally ("message too long") fails after one try (~1 s).
    pub fn ping_size(&self, target: Ipv4Addr, payload: usize, dont_fragment: bool) -> bool {
        let extra = size_args(payload, dont_fragment);
        ping_retrying(&self.netns, target, &extra, |args| self.run("ping", args))
    }
}

/// `ip` inside a namespace; `args` is split on whitespace (lab-made names only).
fn ns_ip(ns: &str, args: &str) {
    run_checked(&mut nsenter(
        &netns::named(ns),
        bin("ip"),
        args.split_whitespace(),
    ));
}

/// Runs `cmd`, panicking with its output when it fails; returns its stdout.
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed: {cmd:?}\nstatus: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tool` in `PATH` or the sbin directories (a sudo `PATH` may lack them).
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `tool`'s full path when [`which`] finds it, else its bare name (for the error to name).
pub fn bin(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| PathBuf::from(tool))
}

/// Picks an unused tag; creating the temp dir is the atomic claim.
fn claim_tag() -> (String, PathBuf) {
    for _ in 0..1024 {
        let tag = encode_tag(std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let root = std::env::temp_dir().join(format!("{DIR_PREFIX}{tag}"));
        // A stale namespace of a dead owner with a reused pid must not collide.
        let prefix = format!("{tag}-");
        let taken = fs::read_dir(netns::DIR).into_iter().flatten().flatten();
        if taken
            .into_iter()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        {
            continue;
        }
        match fs::create_dir(&root) {
            Ok(()) => return (tag, root),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", root.display()),
        }
    }
    panic!("could not find a free lab tag (too many stale labs? see sweep_stale)");
}
