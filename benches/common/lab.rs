//! One simulated server for a benchmark: a network namespace `<tag>-s1` whose underlay `eth1`
//! is one end of a veth pair kept inside it (nothing is ever created in the root namespace),
//! and a scratch directory `/tmp/<tag>` for data and LXC paths.
//!
//! The tag is `$CMBENCH_TAG` (the driver script's `cmbench<pid>`, so its trap can sweep what a
//! killed bench left) or `cmbench<our pid>`, plus the bench's name. [`Lab::enter`] moves the
//! calling thread (call it from `main` before any other thread exists) into the namespace, so
//! every thread, socket and child process made afterwards lives there: the daemon's
//! `127.0.0.1` is ours, and the `lxc-*` tools run from the namespace that starts the
//! containers. Dropping the lab stops and destroys every container under its directory (from
//! the namespace), kills whatever else is left inside, deletes the namespace and the directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The simulated server.
pub struct Lab {
    /// Namespace name, `/run/netns/<netns>`.
    pub netns: String,
    /// Scratch directory, removed on drop.
    pub dir: PathBuf,
}

impl Lab {
    /// Builds the server for bench `name`; panics (after tearing down) if anything fails.
    pub fn new(name: &str) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the benchmarks need root (network namespaces, LXC): run scripts/bench.sh as root"
        );
        let base = std::env::var("CMBENCH_TAG")
            .unwrap_or_else(|_| format!("cmbench{}", std::process::id()));
        assert!(
            base.starts_with("cmbench"),
            "CMBENCH_TAG must start with cmbench"
        );
        let tag = format!("{base}-{name}");
        let dir = PathBuf::from(format!("/tmp/{tag}"));
        let lab = Lab {
            netns: format!("{tag}-s1"),
            dir,
        };
        // From here a panic drops `lab`, which removes whatever was made.
        fs::create_dir_all(&lab.dir).expect("create the lab directory");
        run_ok(Command::new("ip").args(["netns", "add", &lab.netns]));
        let ns = lab.netns.as_str();
        for args in [
            "link set lo up",
            "link add eth1 type veth peer name uplink0",
            "addr add 10.77.0.1/24 dev eth1",
            "link set eth1 up",
            "link set uplink0 up",
        ] {
            run_ok(Command::new("ip").args(["-n", ns]).args(args.split(' ')));
        }
        lab
    }

    /// Moves the calling thread into the server's namespace (see the module doc).
    pub fn enter(&self) {
        let path = format!("/run/netns/{}", self.netns);
        let f = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
    }

    /// A directory under the lab's, created.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// The LXC config every bench container gets: no network from LXC, as the daemon's.
    pub fn empty_net_conf(&self) -> PathBuf {
        let p = self.dir.join("empty-net.conf");
        fs::write(&p, "lxc.net.0.type = empty\n").expect("write the LXC net config");
        p
    }
}

/// Runs `cmd` (in the caller's namespace), panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every `(lxc path, name)` with a container config, one or two levels under `dir`.
fn containers_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for lxc in fs::read_dir(dir).into_iter().flatten().flatten() {
        for c in fs::read_dir(lxc.path()).into_iter().flatten().flatten() {
            if c.path().join("config").is_file() {
                found.push((lxc.path(), c.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    found
}

/// `lxc-stop -k` then `lxc-destroy` of every container under `dir`, from namespace `ns`, four
/// at a time (≈50 ms each here: 500 containers take ≈10 s).
fn destroy_containers(ns: &str, dir: &Path) {
    let all = containers_under(dir);
    let nsenter = |tool: &str, path: &Path, name: &str, extra: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", tool, "-P"])
            .arg(path)
            .args(["-n", name])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    std::thread::scope(|s| {
        for chunk in all.chunks(all.len().div_ceil(4).max(1)) {
            let nsenter = &nsenter;
            s.spawn(move || {
                for (path, name) in chunk {
                    let _ = nsenter("lxc-stop", path, name, &["-k"]);
                    match nsenter("lxc-destroy", path, name, &[]) {
                        Ok(o) if o.status.success() => {}
                        Ok(o) => eprintln!(
                            "lab: lxc-destroy {name}: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                        Err(e) => eprintln!("lab: lxc-destroy {name}: {e}"),
                    }
                }
            });
        }
    });
}

impl Drop for Lab {
    fn drop(&mut self) {
        if Path::new(&format!("/run/netns/{}", self.netns)).exists() {
            destroy_containers(&self.netns, &self.dir);
            // Anything else still inside (LXC monitors of a failed start) is ours; never
            // ourselves: our main thread entered the namespace, so `ip netns pids` lists us.
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &self.netns])
                .output()
            {
                let me = std::process::id().to_string();
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if pid != me {
                        if let Ok(p) = pid.parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(p),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
            let del = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .output();
            if !del.is_ok_and(|o| o.status.success()) {
                eprintln!("lab: could not delete namespace {}", self.netns);
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lab: remove {}: {e}", self.dir.display());
            }
        }
    }
}
