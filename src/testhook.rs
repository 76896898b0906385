//! Test barriers: named points in a job's life where the crash tests stop the daemon.
//!
//! `CREEPY_MEOW_TEST_BARRIER=<phase>:<name>` makes the daemon, on reaching that point, print
//! `creepy-meow test barrier reached: <phase>:<name>` on stderr and hold the task there until
//! shutdown begins or the file named by `CREEPY_MEOW_TEST_BARRIER_RELEASE` appears (forever,
//! for a test that SIGKILLs it). A test waits for the line, then kills (or changes the host
//! and releases): so a SIGKILL lands exactly where it is meant to, without sleeps. The points:
//!
//! | phase | name | where |
//! |---|---|---|
//! | `before_action` | step | the step's `running` record is on disk (committed only, for a step with nothing of its own to undo), nothing done yet |
//! | `tool_spawned` | program (`lxc-create`...) | the tool runs; the daemon has not waited on it |
//! | `before_done` | step | the step's action is complete, its `done` not recorded |
//! | `before_finish` | job kind (`create`, `destroy`) | every step done, the job's end not recorded |
//! | `recovery_undo` | step | recovery is about to undo this step of an interrupted job |
//! | `claim` | `create` | cluster mode: the create is being queued locally (gated), its etcd claim not sent |
//! | `reserved` | `create` | cluster mode: the claim and the local enqueue have both answered (made: the job queued gated, its gate not opened) |
//!
//! One more fault for the API tests (issue 17), a disk that stops taking writes: while the file
//! `FAIL_SYNC_FILE` exists in a store's data directory, the `fdatasync` of its log fails with
//! `ENOSPC` (see `sync_fails`).
//!
//! Only built with the `test-util` feature (the tests and benches turn it on): in a release
//! build [`install`] and [`barrier`] do nothing and the variable is ignored. With the feature,
//! the daemon warns at start when it is set.

use tokio_util::sync::CancellationToken;

/// The environment variable naming the barrier.
pub const BARRIER_ENV: &str = "CREEPY_MEOW_TEST_BARRIER";

/// The environment variable naming the file whose creation releases the barrier.
pub const RELEASE_ENV: &str = "CREEPY_MEOW_TEST_BARRIER_RELEASE";

/// The line printed on stderr when the barrier is reached, before the point's name.
pub const REACHED: &str = "creepy-meow test barrier reached: ";

/// The file in a data directory whose presence makes the store's log syncs fail.
#[cfg(feature = "test-util")]
pub const FAIL_SYNC_FILE: &str = "test-fail-sync";

/// Whether the store in `data_dir` must fail its log sync now: [`FAIL_SYNC_FILE`] is there.
#[cfg(feature = "test-util")]
pub fn sync_fails(data_dir: &std::path::Path) -> bool {
    data_dir.join(FAIL_SYNC_FILE).exists()
}

/// Reads [`BARRIER_ENV`] once; a barrier reached later is released when `shutdown` fires.
pub fn install(shutdown: &CancellationToken) {
    #[cfg(feature = "test-util")]
    armed::install(shutdown);
    #[cfg(not(feature = "test-util"))]
    let _ = shutdown;
}

/// Holds the task at point `phase:name` if it is the installed barrier; returns at once
/// otherwise (one load and a string compare; nothing at all without `test-util`).
pub async fn barrier(phase: &str, name: &str) {
    #[cfg(feature = "test-util")]
    armed::barrier(phase, name).await;
    #[cfg(not(feature = "test-util"))]
    let _ = (phase, name);
}

#[cfg(feature = "test-util")]
mod armed {
    use std::sync::OnceLock;

    use tokio_util::sync::CancellationToken;

    use super::{BARRIER_ENV, REACHED, RELEASE_ENV};

    struct Barrier {
        point: String,
        shutdown: CancellationToken,
        release_file: Option<std::path::PathBuf>,
    }

    static BARRIER: OnceLock<Option<Barrier>> = OnceLock::new();

    /// Reads [`BARRIER_ENV`] once; a barrier reached later is released when `shutdown` fires.
    pub(super) fn install(shutdown: &CancellationToken) {
        BARRIER.get_or_init(|| {
            let point = std::env::var(BARRIER_ENV).ok()?;
            tracing::warn!(%point, "{BARRIER_ENV} is set: the daemon will stop at this point (test hook)");
            Some(Barrier {
                point,
                shutdown: shutdown.clone(),
                release_file: std::env::var_os(RELEASE_ENV).map(Into::into),
            })
        });
    }

    /// Holds the task at point `phase:name` if it is the installed barrier; returns at once
    /// otherwise (one load and a string compare).
    pub(super) async fn barrier(phase: &str, name: &str) {
        let Some(Some(b)) = BARRIER.get() else {
            return;
        };
        if b.point.split_once(':') != Some((phase, name)) {
            return;
        }
        eprintln!("{REACHED}{}", b.point);
        while !b.release_file.as_ref().is_some_and(|f| f.exists()) {
            tokio::select! {
                _ = b.shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
            }
        }
    }
}
