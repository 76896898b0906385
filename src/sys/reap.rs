//! Finding and stopping what a dead daemon's tools left running, as the [`Reaper`] trait.
//!
//! A job's processes are those whose environment carries its tag ([`super::process`]), and
//! the members of their process groups (which covers a descendant that cleared its
//! environment but stayed in the group). Session leaders are never taken: the only tool
//! descendant that makes its own session is LXC's monitor after `lxc-start -d`, i.e. a running
//! container, which the step's undo stops through LXC rather than by a signal. Zombies are
//! already dead and are passed over.
//!
//! Why not a cgroup per job: LXC places a container's monitor and init by the cgroup of the
//! `lxc-start` that made them, so a job cgroup would hold every container it ever started.
//! Why not only the process group: a process can leave it (`setsid`, `setpgid`), and after a
//! crash a bare PGID may have been reused; the tag is checked on every process we signal.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::process::owner_tag;
use super::{SysError, SysResult};

/// Stops the processes a job's tools left behind.
#[async_trait]
pub trait Reaper: Send + Sync {
    /// Kills every process still running for job `job` (see the module doc) and returns once
    /// none is left; returns how many were killed.
    ///
    /// # Errors
    /// [`SysError::Unexpected`] when some are still alive at the deadline (a process stuck in
    /// the kernel); [`SysError::Io`] when `/proc` cannot be read.
    async fn reap(&self, job: Uuid) -> SysResult<usize>;
}

/// The real [`Reaper`], over `/proc`.
#[derive(Debug, Clone)]
pub struct ProcReaper {
    /// How long killed processes may take to be gone.
    pub deadline: Duration,
}

impl Default for ProcReaper {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
        }
    }
}

#[async_trait]
impl Reaper for ProcReaper {
    async fn reap(&self, job: Uuid) -> SysResult<usize> {
        let deadline = self.deadline;
        tokio::task::spawn_blocking(move || reap_blocking(job, deadline))
            .await
            .map_err(|e| SysError::Unexpected {
                what: format!("stop the tools of job {job}"),
                detail: e.to_string(),
            })?
    }
}

/// What `/proc/<pid>/stat` says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    pid: i32,
    pgrp: i32,
    session: i32,
    zombie: bool,
}

/// Parses `/proc/<pid>/stat`: the fields after the command name (which may hold spaces and
/// parentheses, so it is skipped up to its last `)`) are state, ppid, pgrp, session (proc(5)).
fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    let _ppid = f.next()?;
    Some(ProcStat {
        pid,
        pgrp: f.next()?.parse().ok()?,
        session: f.next()?.parse().ok()?,
        zombie: matches!(state, "Z" | "X"),
    })
}

fn stat_of(pid: i32) -> Option<ProcStat> {
    parse_stat(
        pid,
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
    )
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat_of(pid).is_some_and(|s| !s.zombie)
}

fn carries(pid: i32, tag: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|e| e == tag))
        .unwrap_or(false)
}

fn processes() -> SysResult<Vec<ProcStat>> {
    let dir = std::fs::read_dir("/proc").map_err(|source| SysError::Io {
        what: "list processes in /proc".into(),
        source,
    })?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_of)
        .collect())
}

/// The live processes of the job tagged `tag`, among `all` (module doc).
fn victims(all: &[ProcStat], tag: &[u8], carries: impl Fn(i32, &[u8]) -> bool) -> Vec<i32> {
    let candidates: Vec<&ProcStat> = all
        .iter()
        .filter(|p| !p.zombie && p.pid != p.session && p.pid != std::process::id() as i32)
        .collect();
    let tagged: Vec<&ProcStat> = candidates
        .iter()
        .copied()
        .filter(|p| carries(p.pid, tag))
        .collect();
    candidates
        .iter()
        .filter(|p| tagged.iter().any(|t| t.pid == p.pid || t.pgrp == p.pgrp))
        .map(|p| p.pid)
        .collect()
}

fn reap_blocking(job: Uuid, deadline: Duration) -> SysResult<usize> {
    let tag = owner_tag(job).into_bytes();
    let until = Instant::now() + deadline;
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let left = victims(&processes()?, &tag, carries);
        if left.is_empty() {
            if !killed.is_empty() {
                tracing::warn!(job_id = %job, killed = killed.len(), "stopped processes a crashed run of the job left behind");
            }
            return Ok(killed.len());
        }
        if Instant::now() >= until {
            return Err(SysError::Unexpected {
                what: format!("stop the tools of job {job}"),
                detail: format!(
                    "processes {left:?} are still alive {}s after SIGKILL",
                    deadline.as_secs()
                ),
            });
        }
        for pid in left {
            // Gone already (ESRCH) is what we want.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, pgrp: i32, session: i32) -> ProcStat {
        ProcStat {
            pid,
            pgrp,
            session,
            zombie: false,
        }
    }

    #[test]
    fn stat_is_parsed_past_a_command_name_with_spaces_and_parentheses() {
        let s = parse_stat(42, "42 (lxc (monitor) x) S 1 40 30 0 -1 4194560 0").unwrap();
        assert_eq!(s, p(42, 40, 30));
        assert!(parse_stat(43, "43 (sh) Z 1 43 43 0").unwrap().zombie);
        assert_eq!(parse_stat(44, "garbage"), None);
    }

    #[test]
    fn victims_are_the_tagged_and_their_groups_but_never_a_session_leader() {
        let all = [
            p(100, 100, 1),   // tagged tool, its group's leader
            p(101, 100, 1),   // its child, environment cleared: same group
            p(200, 200, 200), // tagged LXC monitor: its own session
            p(201, 200, 200), // the container's init under it, untagged
            p(300, 300, 1),   // someone else's, untagged
            p(301, 301, 1),   // someone else's, tagged for another job
        ];
        let tagged = |pid: i32, tag: &[u8]| match pid {
            100 | 200 => tag == b"T",
            301 => tag == b"OTHER",
            _ => false,
        };
        assert_eq!(victims(&all, b"T", tagged), [100, 101]);
        let mut zombie = p(102, 100, 1);
        zombie.zombie = true;
        assert_eq!(victims(&[zombie], b"T", |_, _| true), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn reap_kills_a_jobs_processes_and_their_children_and_spares_others() {
        let job = Uuid::new_v4();
        let spawn = |tag: Option<Uuid>| {
            let mut cmd = std::process::Command::new("sh");
            // A child that outlives nothing: both sleep until killed.
            cmd.args(["-c", "sleep 60 & wait"]);
            if let Some(t) = tag {
                cmd.env(super::super::process::OWNER_ENV, t.to_string());
            }
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.spawn().unwrap()
        };
        let mut mine = spawn(Some(job));
        let mut other = spawn(Some(Uuid::new_v4()));
        let reaper = ProcReaper::default();
        // Give the shells time to fork their sleeps.
        std::thread::sleep(Duration::from_millis(100));
        let killed = reaper.reap(job).await.unwrap();
        assert_eq!(killed, 2, "the shell and its sleep");
        assert!(mine.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another job's tool was killed"
        );
        assert_eq!(reaper.reap(job).await.unwrap(), 0, "nothing left to reap");
        let group = nix::unistd::Pid::from_raw(other.id() as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        other.wait().unwrap();
    }
}
