//! Teardown half of the lab: killing tracked children, stopping LXC containers,
//! deleting namespaces, and sweeping labs left behind by killed test processes.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::super::netns::{self, nsenter};
use super::{bin, Tracked, DIR_PREFIX, TAG_PREFIX};

const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Tag = "cm" + 6 base36 digits of (pid << 9 | counter): pids are < 2^22 on Linux,
/// so 31 bits fit in 36^6, and the owner pid can be decoded by sweep_stale.
pub fn encode_tag(pid: u32, n: u32) -> String {
    let mut v = (u64::from(pid) << 9) | u64::from(n & 511);
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(v % 36) as usize];
        v /= 36;
    }
    format!("{TAG_PREFIX}{}", std::str::from_utf8(&digits).unwrap())
}

/// The owner pid [`encode_tag`] put in `tag`; `None` for a name that is not a lab tag.
pub fn tag_pid(tag: &str) -> Option<u32> {
    let digits = tag.strip_prefix(TAG_PREFIX)?;
    if digits.len() != 6
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    u64::from_str_radix(digits, 36)
        .ok()
        .map(|v| (v >> 9) as u32)
}

/// Kills a tracked child and its process group, and reaps it.
///
/// # Errors
/// When it is still there `TEARDOWN_TIMEOUT` after SIGKILL.
pub(super) fn kill_tracked(t: &Tracked) -> Result<(), String> {
    let fd = &t.pidfd;
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent != 0 {
        return Ok(()); // already reaped by the test: its pid may be reused, do not touch it
    }
    // Not reaped yet, so its pid (== pgid) cannot be reused: safe to kill the group.
    unsafe { libc::kill(-t.pid, libc::SIGKILL) };
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // With WNOHANG, si_pid stays 0 while the child is still running.
        if r != 0 || unsafe { info.si_pid() } != 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pid {} did not exit after SIGKILL", t.pid));
        }
        sleep(Duration::from_millis(20));
    }
}

/// Runs a teardown command with a timeout; never panics.
pub(super) fn try_run(mut cmd: Command) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{desc}: spawn: {e}"))?;
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    while child
        .try_wait()
        .map_err(|e| format!("{desc}: wait: {e}"))?
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{desc}: timed out"));
        }
        sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{desc}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{desc}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Tolerates parts already gone (killed runs, earlier partial teardown). Returns what it could
/// not remove; then the temp dir (the ownership marker) is kept, so a later sweep retries.
pub(super) fn teardown(
    servers: &[(String, PathBuf)],
    namespaces: &[String],
    root: &Path,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (ns, dir) in servers {
        // Any directory under a server's may be an LXC path (the daemon's `lxc`, the
        // benches' several); destroy_containers skips entries that hold no container.
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                destroy_containers(ns, &entry.path(), &mut errors);
            }
        }
    }
    for ns in namespaces {
        if let Err(e) = delete_namespace(ns) {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        errors.push(format!("kept {} for a later sweep", root.display()));
    } else if let Err(e) = fs::remove_dir_all(root) {
        if e.kind() != ErrorKind::NotFound {
            errors.push(format!("remove {}: {e}", root.display()));
        }
    }
    errors
}

/// Kills what is left inside namespace `ns`, deletes it, and checks that it is gone.
fn delete_namespace(ns: &str) -> Result<(), String> {
    if !netns::named(ns).exists() {
        return Ok(());
    }
    // Anything still inside is ours (untracked spawns, LXC monitors): kill it so
    // it cannot outlive the lab in an unnamed namespace. Never ourselves: with
    // --test-threads=1 the main thread may have been setns()'d in by the code
    // under test, and `ip netns pids` reports the whole process then.
    if let Ok(out) = try_run({
        let mut c = Command::new(bin("ip"));
        c.args(["netns", "pids", ns]);
        c
    }) {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|&p| p != std::process::id() as i32)
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut del = Command::new(bin("ip"));
    del.args(["netns", "del", ns]);
    let deleted = try_run(del);
    if netns::named(ns).exists() {
        let why = deleted
            .err()
            .unwrap_or_else(|| "ip netns del succeeded".into());
        return Err(format!("leaked namespace {ns} ({why})"));
    }
    Ok(())
}

/// LXC's command socket lives in the namespace that started the container, so stop
/// and destroy from there; elsewhere lxc-destroy would wipe a running rootfs. A container
/// still there afterwards is pushed onto `errors`. Snapshot clones go before the containers
/// they were cloned from (LXC lists those in `lxc_snapshots` and refuses to destroy them
/// first).
pub(super) fn destroy_containers(ns: &str, lxc_dir: &Path, errors: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(lxc_dir) else {
        return;
    };
    let mut entries: Vec<fs::DirEntry> = entries.flatten().collect();
    entries.sort_by_key(|e| e.path().join("lxc_snapshots").exists());
    for entry in entries {
        if !entry.path().join("config").is_file() {
            continue;
        }
        let name = entry.file_name();
        if !netns::named(ns).exists() {
            errors.push(format!(
                "leaked container {name:?} in {}: namespace {ns} gone, cannot stop it",
                lxc_dir.display()
            ));
            continue;
        }
        let lxc = |tool: &str, extra: &[&str]| {
            let mut c = nsenter(&netns::named(ns), tool, extra);
            c.arg("-P").arg(lxc_dir).arg("-n").arg(&name);
            try_run(c)
        };
        let stop = lxc("lxc-stop", &["-k"]);
        let destroyed = lxc("lxc-destroy", &[]);
        if entry.path().exists() {
            let why = destroyed
                .err()
                .unwrap_or_else(|| "lxc-destroy succeeded".into());
            let stop = stop.err().unwrap_or_else(|| "succeeded".into());
            errors.push(format!(
                "leaked container {name:?} in {} ({why}; lxc-stop: {stop})",
                lxc_dir.display()
            ));
        }
    }
}

/// The temp dir is the ownership marker: a `cm......-*` namespace without one is
/// not ours (other tools on this host use similar names), so it is never touched.
/// Teardown removes the dir last, so a killed teardown still leaves the marker.
pub(super) fn sweep(include_own: bool) {
    let me = std::process::id();
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22);
    let stale = |tag: &str| match tag_pid(tag) {
        Some(pid) if pid == me => include_own,
        Some(pid) => pid < pid_max && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    };
    let ns_names: Vec<String> = fs::read_dir(netns::DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let tmp = std::env::temp_dir();
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if !entry.path().is_dir() || !stale(tag) {
            continue;
        }
        let mine: Vec<String> = ns_names
            .iter()
            .filter(|n| {
                n.strip_prefix(tag)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|r| {
                        r == "sw" || r.strip_prefix('s').is_some_and(|d| d.parse::<u8>().is_ok())
                    })
            })
            .cloned()
            .collect();
        let servers: Vec<(String, PathBuf)> = mine
            .iter()
            .filter(|n| !n.ends_with("-sw"))
            .map(|n| (n.clone(), entry.path().join(&n[tag.len() + 1..])))
            .collect();
        eprintln!("lab: sweeping stale lab {tag} ({} namespaces)", mine.len());
        // Best effort: another run's leftovers must not fail this one; a later sweep retries.
        for e in teardown(&servers, &mine, &entry.path()) {
            eprintln!("lab: sweep of {tag}: {e}");
        }
    }
}
