//! A real `creepy-meow serve` on a simulated server, driven with curl from inside the server's
//! namespace (the daemon listens on 127.0.0.1 there).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

pub const BIN: &str = env!("CARGO_BIN_EXE_creepy-meow");
pub const API: &str = "http://127.0.0.1:8080";

/// A daemon on a simulated server, with its data and LXC paths under the server's dir.
pub struct Daemon<'a> {
    server: &'a Server,
    child: Option<Child>,
    /// Length of the server's daemon.log when this daemon started: what follows is its own.
    log_from: usize,
}

/// The test barrier's environment variable and the line the daemon prints on reaching it
/// (`creepy_meow::testhook`).
const BARRIER_ENV: &str = creepy_meow::testhook::BARRIER_ENV;
const BARRIER_REACHED: &str = creepy_meow::testhook::REACHED;
const RELEASE_ENV: &str = creepy_meow::testhook::RELEASE_ENV;

pub fn lxc_path(s: &Server) -> PathBuf {
    s.dir.join("lxc")
}

impl<'a> Daemon<'a> {
    /// Starts a daemon without waiting for it to serve; with `barrier` (`phase:name`, see
    /// `creepy_meow::testhook`) it holds the job there, for [`Self::kill_at_barrier`].
    pub fn spawn(server: &'a Server, barrier: Option<&str>, paused: bool) -> Self {
        let (data, lxc) = (server.dir.join("data"), lxc_path(server));
        let mut args = vec![
            "serve".to_string(),
            "--host-id".into(),
            server.host_id.to_string(),
            "--vlans".into(),
            "2".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--lxc-path".into(),
            lxc.display().to_string(),
        ];
        if paused {
            args.push("--paused".into());
        }
        let mut cmd = server.cmd(BIN, &args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(server.dir.join("daemon.log"))
            .unwrap();
        let log_from = log.metadata().unwrap().len() as usize;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let release = server.dir.join("barrier-release");
        let _ = std::fs::remove_file(&release);
        if let Some(point) = barrier {
            cmd.env(BARRIER_ENV, point).env(RELEASE_ENV, &release);
        }
        let child = server.spawn_cmd(cmd);
        Self {
            server,
            child: Some(child),
            log_from,
        }
    }

    /// Starts a daemon (see [`Self::spawn`]) and waits until it serves.
    pub fn start(server: &'a Server, barrier: Option<&str>, paused: bool) -> Self {
        let d = Self::spawn(server, barrier, paused);
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.curl(&["-sf", &format!("{API}/healthz")]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// This daemon's log (stdout and stderr), and its predecessors' on the same server.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.join("daemon.log")).unwrap_or_default()
    }

    /// What this daemon itself logged.
    pub fn own_log(&self) -> String {
        self.log()
            .get(self.log_from..)
            .unwrap_or_default()
            .to_string()
    }

    pub fn curl(&self, args: &[&str]) -> std::process::Output {
        self.server.run("curl", args)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.curl(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    }

    pub fn create(&self, id: u32) -> String {
        let body = format!("id={id}&vlan=2&ip=192.168.2.{id}/24");
        let v = self.json(&[
            "-s",
            "--data",
            &body,
            &format!("{API}/api/container/create"),
        ]);
        v["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not accepted: {v}"))
            .to_string()
    }

    pub fn destroy(&self, id: u32) -> String {
        let v = self.json(&["-s", "-X", "DELETE", &format!("{API}/api/container/{id}")]);
        v["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not accepted: {v}"))
            .to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        self.json(&["-s", &format!("{API}/api/jobs/{id}")])
    }

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
        std::fs::write(self.server.dir.join("barrier-release"), "").unwrap();
    }

    /// Waits for the barrier `point`, then SIGKILLs the daemon there.
    pub fn kill_at_barrier(mut self, point: &str) {
        self.wait_barrier(point);
        self.kill();
    }

    /// Sends SIGTERM and waits (30 s at most) for a clean exit; returns the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().unwrap();
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}
