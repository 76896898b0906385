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
}

pub fn lxc_path(s: &Server) -> PathBuf {
    s.dir.join("lxc")
}

impl<'a> Daemon<'a> {
    pub fn start(server: &'a Server, step_pause_ms: Option<u64>, paused: bool) -> Self {
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
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(ms) = step_pause_ms {
            cmd.env("CREEPY_MEOW_TEST_STEP_PAUSE_MS", ms.to_string());
        }
        let child = server.spawn_cmd(cmd);
        let d = Self {
            server,
            child: Some(child),
        };
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.join("daemon.log")).unwrap_or_default()
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

    /// Polls until step `step` of job `id` is `running`, then SIGKILLs the daemon.
    pub fn kill_inside(mut self, id: &str, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = self.job(id);
            let state = j["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == step))
                .map(|s| s["state"].clone());
            if state.as_ref().and_then(Value::as_str) == Some("running") {
                break;
            }
            assert!(Instant::now() < deadline, "step {step} never ran: {j}");
            std::thread::sleep(Duration::from_millis(10));
        }
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
