//! Running an external tool so that everything it starts can be found again after the daemon
//! dies (issue 18).
//!
//! A SIGKILLed daemon takes its direct children with it (`PR_SET_PDEATHSIG`), but not their
//! children: `lxc-create`'s template, a shell script, goes on writing the rootfs for a second
//! or more. So every tool a job runs carries the job's ID in its environment
//! ([`OWNER_ENV`]), which every descendant inherits, and leads a process group of its own,
//! which every descendant joins unless it makes a session of its own (only LXC's monitor
//! does, after `lxc-start -d`: that one is the container, and must live). Recovery finds what
//! is left of a job by that tag and kills it before it undoes anything (see
//! [`super::reap`]). The job ID is on disk before any tool runs (the step's `running` record
//! is durable first), so nothing more needs recording per tool.
//!
//! The owner is ambient: [`owned_by`] scopes a job's future, and [`run`] reads it, so the
//! `Lxc` verbs need no extra argument.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use uuid::Uuid;

use super::{SysError, SysResult};

/// The environment variable that names the job a tool runs for, inherited by everything the
/// tool starts.
pub const OWNER_ENV: &str = "CREEPY_MEOW_JOB";

tokio::task_local! {
    static OWNER: Uuid;
}

/// Runs `fut` with every tool it starts tagged as job `job`'s.
pub async fn owned_by<F: Future>(job: Uuid, fut: F) -> F::Output {
    OWNER.scope(job, fut).await
}

/// The job the current task runs tools for, if any.
pub fn current_owner() -> Option<Uuid> {
    OWNER.try_with(|o| *o).ok()
}

/// The `NAME=value` entry that marks a process as job `job`'s, as it stands in
/// `/proc/<pid>/environ`.
pub fn owner_tag(job: Uuid) -> String {
    format!("{OWNER_ENV}={job}")
}

/// Runs `cmd` (described as `command` in errors) for at most `limit`, tagged with the current
/// owner, in a process group of its own; returns its stdout, or the error with its stderr.
/// On a time-out the whole group is killed, not only the tool; so it is when the caller gives
/// up first and drops this future (a step's own time limit, `steps::apply_one`).
///
/// # Errors
/// [`SysError::Command`] when it exits non-zero; [`SysError::TimedOut`] when it runs out of
/// time; [`SysError::Io`] when it cannot be started (with a hint when the program is
/// missing).
pub async fn run(
    what: String,
    program: &str,
    mut cmd: Command,
    command: String,
    limit: Duration,
) -> SysResult<String> {
    cmd.kill_on_drop(true)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(job) = current_owner() {
        cmd.env(OWNER_ENV, job.to_string());
    }
    // If the daemon dies (kill -9, OOM), the tool itself dies with it; what it started is
    // left to recovery's reap (module doc).
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|source| spawn_error(&what, program, source))?;
    // Armed until the tool has answered: a time-out, or this future dropped mid-wait, kills
    // the tool's whole group (tokio's `kill_on_drop` reaches the tool alone).
    let mut group = GroupGuard(child.id());
    crate::testhook::barrier("tool_spawned", program).await;
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(source)) => return Err(SysError::Io { what, source }),
        Err(_) => {
            return Err(SysError::TimedOut {
                what,
                command,
                after: limit,
            })
        }
    };
    // It answered: what it left in its group (rare; never the container, whose monitor has
    // a session of its own) is its business.
    group.0 = None;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(SysError::Command {
        what,
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// The process group of a tool that has not answered yet, killed (SIGKILL) when this drops
/// while it holds one.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

/// Why `program` could not be started, with a hint when it is not installed.
fn spawn_error(what: &str, program: &str, source: std::io::Error) -> SysError {
    let what = if source.kind() == std::io::ErrorKind::NotFound {
        format!("{what}: {program} is not installed (apt-get install lxc)")
    } else {
        what.to_string()
    };
    SysError::Io { what, source }
}

/// SIGKILL to every process of group `pgid`; a group already gone is fine.
fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (Command, String) {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        (cmd, format!("sh -c {script}"))
    }

    #[tokio::test]
    async fn a_tool_carries_its_owner_and_leads_its_own_group() {
        let job = Uuid::new_v4();
        let (cmd, line) = sh("echo \"$CREEPY_MEOW_JOB\" $$ $(ps -o pgid= -p $$)");
        let out = owned_by(
            job,
            run("t".into(), "sh", cmd, line, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields[0], job.to_string());
        assert_eq!(
            fields[1], fields[2],
            "the tool is its group's leader: {out}"
        );
    }

    #[tokio::test]
    async fn a_tool_outside_a_job_carries_no_owner() {
        let (cmd, line) = sh("echo \"[${CREEPY_MEOW_JOB:-none}]\"");
        let out = run("t".into(), "sh", cmd, line, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.trim(), "[none]");
    }

    /// Runs a tool that starts a child and waits, giving up after `limit`, either by its own
    /// time-out (`cancel` false) or by dropping the run (a step's time limit); returns the
    /// error when there was one, and the child's PID, which must be gone.
    async fn hang(limit: Duration, cancel: bool) -> (Option<SysError>, i32) {
        let dir = crate::test_support::TempDir::new("process");
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let (cmd, line) = sh(&script);
        let tool = run("t".into(), "sh", cmd, line, limit);
        let err = if cancel {
            // The caller's own limit, well below the tool's.
            let cut = tokio::time::timeout(Duration::from_millis(300), tool).await;
            assert!(cut.is_err(), "the tool answered: {cut:?}");
            None
        } else {
            Some(tool.await.unwrap_err())
        };
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (err, pid)
    }

    /// Waits until process `pid` is gone: once its parent (killed too) is gone, init reaps it.
    async fn assert_dies(pid: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while super::super::reap::is_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the tool's child {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_time_out_kills_the_whole_group_and_says_after_how_long() {
        let (err, pid) = hang(Duration::from_millis(300), false).await;
        let err = err.unwrap();
        assert!(matches!(err, SysError::TimedOut { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("timed out after 0.3s and was killed"),
            "{err}"
        );
        assert_dies(pid).await;
    }

    #[tokio::test]
    async fn a_run_given_up_by_its_caller_kills_the_whole_group() {
        let (_, pid) = hang(Duration::from_secs(60), true).await;
        assert_dies(pid).await;
    }

    #[tokio::test]
    async fn a_failure_keeps_stderr_and_a_missing_program_says_so() {
        let (cmd, line) = sh("echo oops >&2; exit 3");
        let err = run("t".into(), "sh", cmd, line, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
        let err = run(
            "t".into(),
            "no-such-tool",
            Command::new("no-such-tool-creepy-meow"),
            "no-such-tool".into(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("is not installed"), "{err}");
    }
}
