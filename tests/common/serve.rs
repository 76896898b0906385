//! A real `creepy-meow serve` process, as the root tests and the benches start it: one command
//! line, one layout of data dir, LXC path and log ([`super::layout`]), one readiness wait on
//! `/healthz` and one SIGTERM-and-wait.
//!
//! The two differ only in where the process starts ([`Launch`]) and in how they send requests:
//! the root tests run curl through nsenter (their threads stay in the root namespace,
//! [`super::daemon`]); the benches use their own minimal HTTP client from inside the namespace
//! (`benches/common/daemon.rs`), since a load generator must neither fork a process per request
//! nor carry reqwest's cost. So the readiness wait takes the request as a closure.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::layout::{data_path, log_path, lxc_path};
use super::Server;

/// The daemon binary Cargo builds alongside the test or bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_creepy-meow");

/// The port every daemon listens on, on its own namespace's `127.0.0.1` (each simulated server
/// is a fresh namespace, so the port is always free).
pub const PORT: u16 = 8080;

/// The path the readiness wait asks: it answers 200 once the daemon serves.
pub const HEALTHZ: &str = "/healthz";

/// How long [`Process::sigterm`] callers give a daemon to stop: the worker first finishes or
/// undoes its current step, which may wait on an `lxc-*` tool.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a daemon's process starts.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    /// Through nsenter into the server's namespace, tracked by the lab (killed with its process
    /// group when the lab drops): the root tests, whose threads stay in the root namespace.
    OnServer(&'a Server),
    /// As a plain child inheriting the caller's namespace: the benches, whose main thread entered
    /// the server's namespace before anything else started.
    Here,
}

/// A `serve` command line: who the daemon is, where its state lives, and what else it gets.
#[derive(Debug, Clone)]
pub struct Serve {
    /// `--host-id`.
    host_id: u8,
    /// `--data-dir`; the log goes beside it ([`log_path`]).
    data: PathBuf,
    /// `--lxc-path`.
    lxc: PathBuf,
    /// `--listen` [default: `127.0.0.1:`[`PORT`]].
    listen: String,
    /// Flags after the common ones (`--paused`, `--vlans 2`, …).
    flags: Vec<String>,
    /// Environment variables set for the daemon only.
    env: Vec<(String, OsString)>,
}

impl Serve {
    /// Host `host_id`'s daemon on data dir `data` and LXC path `lxc`.
    pub fn new(host_id: u8, data: &Path, lxc: &Path) -> Self {
        Self {
            host_id,
            data: data.to_path_buf(),
            lxc: lxc.to_path_buf(),
            listen: format!("127.0.0.1:{PORT}"),
            flags: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A simulated server's own daemon: its host id, the data dir and LXC path under its dir.
    pub fn on(server: &Server) -> Self {
        Self::new(
            server.host_id,
            &data_path(&server.dir),
            &lxc_path(&server.dir),
        )
    }

    /// Listens on `addr` instead of the namespace's `127.0.0.1:`[`PORT`] (off loopback, the
    /// daemon then wants TLS and a token, or their waivers among the flags).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// Adds `flags` after the common ones.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Sets `key` to `value` in the daemon's environment.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// The arguments after the binary: `serve --host-id … --listen 127.0.0.1:PORT --data-dir …
    /// --lxc-path …` (or the address given to [`Self::listen`]) and the flags.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--host-id".into(),
            self.host_id.to_string().into(),
            "--listen".into(),
            self.listen.clone().into(),
            "--data-dir".into(),
            self.data.clone().into(),
            "--lxc-path".into(),
            self.lxc.clone().into(),
        ];
        args.extend(self.flags.iter().map(OsString::from));
        args
    }

    /// Starts the daemon at `launch`, stdout and stderr appended to its log; does not wait for
    /// it to serve ([`Process::wait_ready`]).
    pub fn spawn(&self, launch: Launch) -> Process {
        let mut cmd = match launch {
            Launch::OnServer(server) => server.cmd(BIN, self.args()),
            Launch::Here => {
                let mut cmd = Command::new(BIN);
                cmd.args(self.args());
                cmd
            }
        };
        let log = log_path(&self.data);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let log_from = out.metadata().expect("the log's length").len() as usize;
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log's fd"))
            .stderr(out);
        let spawned = Instant::now();
        let child = match launch {
            Launch::OnServer(server) => server.spawn_cmd(cmd),
            Launch::Here => cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}")),
        };
        Process {
            child: Some(child),
            log,
            log_from,
            spawned,
        }
    }
}

/// A daemon process from [`Serve::spawn`]; dropping it SIGKILLs it if it still runs.
#[derive(Debug)]
pub struct Process {
    /// The daemon; `None` once it was reaped.
    child: Option<Child>,
    /// Its log, shared with the daemons started before it on the same data dir.
    log: PathBuf,
    /// The log's length when this daemon started: what follows is its own.
    log_from: usize,
    /// When it was spawned.
    spawned: Instant,
}

impl Process {
    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Whether it is still ours to stop (not yet reaped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The whole log: this daemon's lines and those of its predecessors on the same data dir.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What this daemon itself logged.
    pub fn own_log(&self) -> String {
        self.log()
            .get(self.log_from..)
            .unwrap_or_default()
            .to_string()
    }

    /// Asks [`HEALTHZ`] with `healthy` (true when it answered 200) every `every` until it does,
    /// and returns the time since the spawn. Panics with the log after `timeout` from the spawn.
    pub async fn wait_ready<F, Fut>(
        &self,
        timeout: Duration,
        every: Duration,
        mut healthy: F,
    ) -> Duration
    where
        F: FnMut(&'static str) -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            if healthy(HEALTHZ).await {
                return self.spawned.elapsed();
            }
            assert!(
                self.spawned.elapsed() < timeout,
                "the daemon did not start within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Sends SIGTERM (a clean stop: the worker finishes or undoes its step and queues the job
    /// again) and waits up to `timeout` for the exit. `None` when it still runs then; it is left
    /// to [`Self::kill`] or the drop.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the daemon is running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM the daemon");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash, and reaps it; nothing when it was already reaped. Never panics (it
    /// runs in drops, maybe while a failed test unwinds): neither call can fail on our own child
    /// that is not yet reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
