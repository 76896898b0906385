//! The root tests' daemon: the shared `serve` process ([`super::serve`]) on a simulated server,
//! driven with curl from inside the server's namespace (the daemon listens on 127.0.0.1 there),
//! with the crash tests' barriers (`creepy_meow::testhook`).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::serve::{Launch, Process, Serve, STOP_TIMEOUT};
use super::Server;

/// The daemon's base URL for curl: [`super::serve::PORT`] on the server's `127.0.0.1`.
pub const API: &str = "http://127.0.0.1:8080";

/// How long a daemon may take to serve, from its spawn.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often curl asks `/healthz` meanwhile (each ask forks nsenter and curl).
const READY_EVERY: Duration = Duration::from_millis(20);

/// The test barrier's environment variable, naming the point to stop at
/// (`creepy_meow::testhook`).
const BARRIER_ENV: &str = creepy_meow::testhook::BARRIER_ENV;
/// The line the daemon prints on reaching its barrier, before the point's name.
const BARRIER_REACHED: &str = creepy_meow::testhook::REACHED;
/// The environment variable naming the file whose creation releases the barrier.
const RELEASE_ENV: &str = creepy_meow::testhook::RELEASE_ENV;

/// An answer, as [`Daemon::ask`] read it.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub headers: String,
    /// The body as JSON (`null` if it is not).
    pub body: Value,
}

/// A daemon on a simulated server, with its data and LXC paths under the server's dir.
pub struct Daemon<'a> {
    /// Where it runs, for curl.
    server: &'a Server,
    /// The process; dropping it SIGKILLs the daemon.
    process: Process,
}

/// The file whose creation lets a daemon held at its barrier go on.
fn release_file(server: &Server) -> PathBuf {
    server.dir.join("barrier-release")
}

impl<'a> Daemon<'a> {
    /// Starts a daemon without waiting for it to serve; with `barrier` (`phase:name`, see
    /// `creepy_meow::testhook`) it holds the job there, for [`Self::kill_at_barrier`].
    pub fn spawn(server: &'a Server, barrier: Option<&str>, paused: bool) -> Self {
        let flags: &[&str] = if paused { &["--paused"] } else { &[] };
        Self::spawn_with(server, barrier, flags)
    }

    /// [`Self::spawn`] with `flags` after the common ones (`--reconcile-interval 1`, ...);
    /// VLAN 2 unless `flags` name `--vlans`.
    pub fn spawn_with(server: &'a Server, barrier: Option<&str>, flags: &[&str]) -> Self {
        Self::spawn_env(server, barrier, flags, &[])
    }

    /// [`Self::spawn_with`], with `env` added to the daemon's environment (a `PATH` with fake
    /// tools first).
    pub fn spawn_env(
        server: &'a Server,
        barrier: Option<&str>,
        flags: &[&str],
        env: &[(&str, std::ffi::OsString)],
    ) -> Self {
        let mut serve = serve_on(server, flags);
        for (key, value) in env {
            serve = serve.env(key, value.clone());
        }
        let release = release_file(server);
        let _ = std::fs::remove_file(&release);
        if let Some(point) = barrier {
            serve = serve.env(BARRIER_ENV, point).env(RELEASE_ENV, release);
        }
        Self {
            server,
            process: serve.spawn(Launch::OnServer(server)),
        }
    }

    /// Starts a daemon (see [`Self::spawn`]) and waits until it serves. Not from inside a tokio
    /// runtime: the wait runs on a runtime of its own.
    pub fn start(server: &'a Server, barrier: Option<&str>, paused: bool) -> Self {
        let flags: &[&str] = if paused { &["--paused"] } else { &[] };
        Self::start_with(server, barrier, flags)
    }

    /// [`Self::start`] with `flags` after the common ones (see [`Self::spawn_with`]).
    pub fn start_with(server: &'a Server, barrier: Option<&str>, flags: &[&str]) -> Self {
        Self::start_env(server, barrier, flags, &[])
    }

    /// [`Self::start_with`], with `env` added to the daemon's environment.
    pub fn start_env(
        server: &'a Server,
        barrier: Option<&str>,
        flags: &[&str],
        env: &[(&str, std::ffi::OsString)],
    ) -> Self {
        let d = Self::spawn_env(server, barrier, flags, env);
        let ready = d
            .process
            .wait_ready(READY_TIMEOUT, READY_EVERY, |path| d.answers(path));
        super::runtime().block_on(ready);
        d
    }

    /// Whether `GET path` answers 2xx (`curl -sf`), curl running as a tokio child process.
    async fn answers(&self, path: &str) -> bool {
        let curl = self.server.cmd("curl", ["-sf", &format!("{API}{path}")]);
        let out = tokio::process::Command::from(curl)
            .output()
            .await
            .expect("run curl");
        out.status.success()
    }

    /// This daemon's log (stdout and stderr), and its predecessors' on the same server.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// What this daemon itself logged.
    pub fn own_log(&self) -> String {
        self.process.own_log()
    }

    /// Runs curl with `args` in the server's namespace.
    pub fn curl(&self, args: &[&str]) -> Output {
        self.server.run("curl", args)
    }

    /// Runs curl with `args` and parses its output as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.curl(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    }

    /// `curl -i` with `args` against `path`: the status, headers and body, whatever they are.
    pub fn ask(&self, path: &str, args: &[&str]) -> Answer {
        let url = format!("{API}{path}");
        let mut all = vec!["-s", "-i"];
        all.extend_from_slice(args);
        all.push(&url);
        let out = self.curl(&all);
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (head, body) = text
            .split_once("\n\n")
            .unwrap_or_else(|| panic!("no answer to {path}: {out:?}"));
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        Answer {
            status,
            headers: head.to_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    /// Asks for container `id` on VLAN 2 at `192.168.2.<id>/24` (`id` 2 to 254), whatever the
    /// answer.
    pub fn ask_create(&self, id: u32) -> Answer {
        let body = format!("id={id}&vlan=2&ip=192.168.2.{id}/24");
        self.ask("/api/container/create", &["--data", &body])
    }

    /// Asks for container `id` on VLAN 2 at `192.168.2.<id>/24`; returns the job's ID.
    pub fn create(&self, id: u32) -> String {
        let body = format!("id={id}&vlan=2&ip=192.168.2.{id}/24");
        let v = self.json(&[
            "-s",
            "--data",
            &body,
            &format!("{API}/api/container/create"),
        ]);
        job_id(&v)
    }

    /// Asks for container `id`'s destruction; returns the job's ID.
    pub fn destroy(&self, id: u32) -> String {
        let v = self.json(&["-s", "-X", "DELETE", &format!("{API}/api/container/{id}")]);
        job_id(&v)
    }

    /// Asks for `op` (`start`, `stop` or `restart`) of container `id`; returns the job's ID.
    pub fn lifecycle(&self, id: u32, op: &str) -> String {
        let v = self.json(&[
            "-s",
            "-X",
            "POST",
            &format!("{API}/api/container/{id}/{op}"),
        ]);
        job_id(&v)
    }

    /// Queues a build of a new version of `template`'s image; returns the job ID.
    pub fn build_image(&self, template: &str) -> String {
        let url = format!("{API}/api/images/{template}/build");
        job_id(&self.json(&["-s", "-X", "POST", &url]))
    }

    /// `GET /api/images`.
    pub fn images(&self) -> Value {
        self.json(&["-s", &format!("{API}/api/images")])
    }

    /// Container `id`'s info: its record, what the host shows, its health.
    pub fn info(&self, id: u32) -> Value {
        self.json(&["-s", &format!("{API}/api/container/info/{id}")])
    }

    /// Runs a reconcile pass now (`POST /api/reconcile`) and returns its report.
    pub fn reconcile(&self) -> Value {
        self.json(&["-s", "-X", "POST", &format!("{API}/api/reconcile")])
    }

    /// The last reconcile pass's report (`GET /api/reconcile`).
    pub fn last_reconcile(&self) -> Value {
        self.json(&["-s", &format!("{API}/api/reconcile")])
    }

    /// Every job the daemon lists (`GET /api/jobs`, up to 1000), newest first.
    pub fn jobs(&self) -> Vec<Value> {
        let v = self.json(&["-s", &format!("{API}/api/jobs?limit=1000")]);
        v["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("not a job list: {v}"))
            .clone()
    }

    /// Job `id` as it is now.
    pub fn job(&self, id: &str) -> Value {
        self.json(&["-s", &format!("{API}/api/jobs/{id}")])
    }

    /// Waits (60 s at most) until job `id` is finished, and returns it.
    pub fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = self.json(&["-s", &format!("{API}/api/jobs/{id}/wait?timeout=10")]);
            if ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never finished: {j}\n{}",
                self.log()
            );
        }
    }

    /// Waits (30 s at most) until the daemon says it reached its test barrier `point`.
    pub fn wait_barrier(&self, point: &str) {
        let line = format!("{BARRIER_REACHED}{point}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.own_log().lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "barrier {point} never reached:\n{}",
                self.own_log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets the daemon go on from its barrier.
    pub fn release_barrier(&self) {
        std::fs::write(release_file(self.server), "").unwrap();
    }

    /// Waits for the barrier `point`, then SIGKILLs the daemon there.
    pub fn kill_at_barrier(mut self, point: &str) {
        self.wait_barrier(point);
        self.kill();
    }

    /// Sends SIGTERM and waits (30 s at most) for a clean exit; returns the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        self.process
            .sigterm(STOP_TIMEOUT)
            .expect("the daemon did not stop on SIGTERM")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// A `serve` command line for `server` with `flags` after the common ones; VLAN 2 unless
/// `flags` name `--vlans`.
pub fn serve_on(server: &Server, flags: &[&str]) -> Serve {
    let vlans: &[&str] = if flags.contains(&"--vlans") {
        &[]
    } else {
        &["--vlans", "2"]
    };
    Serve::on(server).flags(vlans).flags(flags)
}

/// The `job_id` of an accepted request's answer.
fn job_id(accepted: &Value) -> String {
    accepted["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not accepted: {accepted}"))
        .to_string()
}
