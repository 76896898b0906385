//! The real `creepy-meow serve` (the release binary `cargo bench` builds) on the lab's server.
//!
//! The bench's main thread is already in the server's namespace ([`super::lab::Lab::enter`]),
//! so the daemon is spawned directly and inherits it: it builds the fabric on the lab's `eth1`
//! and listens on the namespace's own `127.0.0.1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{once, Req};

/// The daemon binary built alongside the bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_creepy-meow");
/// Where every bench daemon listens (each lab is a fresh namespace, so it is always free).
pub const PORT: u16 = 8080;

/// A running daemon; dropping it stops it (SIGTERM, then SIGKILL after 30 s).
pub struct Daemon {
    child: Option<Child>,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// When it was spawned.
    pub spawned: Instant,
}

impl Daemon {
    /// Spawns `serve` on `data` and `lxc` with `extra` flags; does not wait for it.
    pub fn spawn(data: &Path, lxc: &Path, extra: &[&str]) -> Self {
        let log = data.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--host-id", "1", "--listen"])
            .arg(format!("127.0.0.1:{PORT}"))
            .arg("--data-dir")
            .arg(data)
            .arg("--lxc-path")
            .arg(lxc)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out);
        let spawned = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        Self {
            child: Some(child),
            log,
            spawned,
        }
    }

    /// Spawns and waits until `/healthz` answers.
    pub async fn start(data: &Path, lxc: &Path, extra: &[&str]) -> Self {
        let d = Self::spawn(data, lxc, extra);
        d.wait_ready(Duration::from_secs(60)).await;
        d
    }

    /// Polls `/healthz` every millisecond until it answers 200; returns the time since spawn.
    pub async fn wait_ready(&self, timeout: Duration) -> Duration {
        let health = Req::get("/healthz");
        loop {
            if matches!(once(PORT, &health).await, Ok((200, _))) {
                return self.spawned.elapsed();
            }
            assert!(
                self.spawned.elapsed() < timeout,
                "the daemon did not start within {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (the worker finishes or undoes its step and queues the job again), then waits;
    /// SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("daemon: no exit 30 s after SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
