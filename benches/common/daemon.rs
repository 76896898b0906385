//! The benches' daemon: the shared `serve` process (`tests/common/serve.rs`) started as a plain
//! child, since the bench's main thread is already in the server's namespace
//! ([`super::lab::Lab::enter`]): it inherits it, builds the fabric on the lab's `eth1` and listens
//! on the namespace's own `127.0.0.1`, in plain HTTP or (accept bench) HTTPS with a lab
//! certificate. Driven with the benches' own HTTP client ([`super::http`]).

use std::path::Path;
use std::time::Duration;

use super::harness::certs::LabCerts;
use super::harness::serve::{Launch, Process, Serve, STOP_TIMEOUT};
use super::http::{once_over, Req, TlsClient, Transport};

pub use super::harness::serve::PORT;

/// A running daemon; dropping it stops it (SIGTERM, then SIGKILL after 30 s).
pub struct Daemon {
    /// The process, with its log beside the data dir.
    process: Process,
    /// How it is reached: plain HTTP, or HTTPS with the lab's certificate.
    transport: Transport,
}

impl Daemon {
    /// Spawns `serve` on `data` and `lxc` with `extra` flags, logging warnings only (or
    /// `CMBENCH_DAEMON_LOG`, a `RUST_LOG` filter: the log is then appended to
    /// `target/bench/daemon.log` when the daemon stops); does not wait for it.
    pub fn spawn(data: &Path, lxc: &Path, extra: &[&str]) -> Self {
        Self::spawn_over(data, lxc, extra, Transport::Plain(PORT))
    }

    /// [`Self::spawn`] of a daemon reached over `transport` (whose TLS flags are in `extra`).
    fn spawn_over(data: &Path, lxc: &Path, extra: &[&str], transport: Transport) -> Self {
        let filter = std::env::var("CMBENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into());
        let serve = Serve::new(1, data, lxc)
            .flags(extra)
            .env("RUST_LOG", &filter);
        Self {
            process: serve.spawn(Launch::Here),
            transport,
        }
    }

    /// Spawns and waits until `/healthz` answers.
    pub async fn start(data: &Path, lxc: &Path, extra: &[&str]) -> Self {
        let d = Self::spawn(data, lxc, extra);
        d.wait_ready(Duration::from_secs(60)).await;
        d
    }

    /// [`Self::start`] serving HTTPS with `certs`' pair (on loopback, so no token is needed).
    pub async fn start_https(data: &Path, lxc: &Path, extra: &[&str], certs: &LabCerts) -> Self {
        let tls = certs.serve_flags();
        let mut flags: Vec<&str> = extra.to_vec();
        flags.extend(tls.iter().map(String::as_str));
        let transport = Transport::Tls(PORT, TlsClient::trusting(&certs.ca));
        let d = Self::spawn_over(data, lxc, &flags, transport);
        d.wait_ready(Duration::from_secs(60)).await;
        d
    }

    /// How this daemon is reached.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Polls `/healthz` every millisecond until it answers 200; returns the time since spawn.
    pub async fn wait_ready(&self, timeout: Duration) -> Duration {
        let transport = &self.transport;
        let healthy = |path| async move {
            matches!(once_over(transport, &Req::get(path)).await, Ok((200, _)))
        };
        self.process
            .wait_ready(timeout, Duration::from_millis(1), healthy)
            .await
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        self.process.log()
    }

    /// SIGKILL, as a crash or a power cut would stop it, and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM (the worker finishes or undoes its step and queues the job again), then waits;
    /// SIGKILL after 30 s.
    pub fn stop(&mut self) {
        if self.process.is_running() && self.process.sigterm(STOP_TIMEOUT).is_none() {
            eprintln!("daemon: no exit 30 s after SIGTERM; killing it");
            self.process.kill();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("CMBENCH_DAEMON_LOG").is_some() {
            let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/daemon.log");
            let log = self.log_text();
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&kept)
                .and_then(|mut f| std::io::Write::write_all(&mut f, log.as_bytes()));
            if let Err(e) = appended {
                eprintln!("daemon: cannot keep its log in {}: {e}", kept.display());
            }
        }
    }
}
