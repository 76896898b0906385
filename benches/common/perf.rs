//! Counting a running process's system calls with `perf stat` on the `syscalls:sys_enter_*`
//! tracepoints, attached by PID. perf's counters are inherited, so threads and child processes
//! the process starts while counting are counted too (an `execve` is counted in the child that
//! makes it). Everything is `None` when perf is missing or cannot attach: a bench then says
//! "not measured" rather than zero.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Everything that makes a thread or a process (`clone`, `clone3`, `fork`, `vfork`), and
/// everything that runs a program (`execve`, `execveat`).
pub const FORK_EXEC: &[&str] = &[
    "syscalls:sys_enter_clone",
    "syscalls:sys_enter_clone3",
    "syscalls:sys_enter_fork",
    "syscalls:sys_enter_vfork",
    "syscalls:sys_enter_execve",
    "syscalls:sys_enter_execveat",
];

/// `perf stat` counting `events` of one process until [`PerfStat::finish`].
pub struct PerfStat {
    /// The perf process.
    child: Child,
    /// Where it writes its counts (`-x ,` CSV).
    out: PathBuf,
}

impl PerfStat {
    /// Starts counting `events` of process `pid`, writing to `out`; `None` without perf.
    pub fn attach(pid: u32, events: &[&str], out: &Path) -> Option<Self> {
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(out)
            .args(["-e", &events.join(","), "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        std::thread::sleep(Duration::from_millis(300)); // let it attach
        Some(Self {
            child,
            out: out.to_path_buf(),
        })
    }

    /// Stops counting; returns each event's count (named without its `syscalls:sys_enter_`
    /// prefix), or `None` when perf counted nothing.
    pub fn finish(mut self) -> Option<BTreeMap<String, u64>> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).ok()?;
        self.child.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok()?;
        let counts: BTreeMap<String, u64> = text
            .lines()
            .filter_map(|line| {
                let mut cols = line.split(',');
                let n = cols.next()?.trim().parse().ok()?;
                let event = cols.nth(1)?;
                let short = event.rsplit(":sys_enter_").next().unwrap_or(event);
                Some((short.to_string(), n))
            })
            .collect();
        (!counts.is_empty()).then_some(counts)
    }
}

/// [`FORK_EXEC`]'s counts in three groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkExec {
    /// Threads or processes made (`clone`, `clone3`: tokio's blocking pool makes threads so).
    pub clones: u64,
    /// Processes forked the old way (`fork`, `vfork`).
    pub forks: u64,
    /// Programs run (`execve`, `execveat`).
    pub execs: u64,
}

impl ForkExec {
    /// Groups the counts [`PerfStat::finish`] returned for [`FORK_EXEC`].
    pub fn of(counts: &BTreeMap<String, u64>) -> Self {
        let sum = |names: &[&str]| names.iter().filter_map(|n| counts.get(*n)).sum();
        Self {
            clones: sum(&["clone", "clone3"]),
            forks: sum(&["fork", "vfork"]),
            execs: sum(&["execve", "execveat"]),
        }
    }

    /// `clones / forks / execs`, for a table cell.
    pub fn cell(&self) -> String {
        format!("{} / {} / {}", self.clones, self.forks, self.execs)
    }
}
