//! Crash safety of the real daemon: SIGKILL at many points — at least once inside each create
//! and destroy step — then a restart. Every accepted job reaches a terminal state, none is lost
//! or completed twice, no job stays `running`, and the host matches the jobs' outcomes.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, Server};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_creepy-meow");
const API: &str = "http://127.0.0.1:8080";

/// A daemon on a simulated server, with its data and LXC paths under the server's dir.
struct Daemon<'a> {
    server: &'a Server,
    child: Option<Child>,
}

fn lxc_path(s: &Server) -> PathBuf {
    s.dir.join("lxc")
}

impl<'a> Daemon<'a> {
    fn start(server: &'a Server, step_pause_ms: Option<u64>, paused: bool) -> Self {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.join("daemon.log")).unwrap_or_default()
    }

    fn curl(&self, args: &[&str]) -> std::process::Output {
        self.server.run("curl", args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.curl(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    }

    fn create(&self, id: u32) -> String {
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

    fn destroy(&self, id: u32) -> String {
        let v = self.json(&["-s", "-X", "DELETE", &format!("{API}/api/container/{id}")]);
        v["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not accepted: {v}"))
            .to_string()
    }

    fn job(&self, id: &str) -> Value {
        self.json(&["-s", &format!("{API}/api/jobs/{id}")])
    }

    fn wait(&self, id: &str) -> Value {
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
    fn kill_inside(mut self, id: &str, step: &str) {
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

    fn kill(&mut self) {
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

/// What the host shows: (running containers, vethc_* links attached to br2).
fn host_state(s: &Server) -> (Vec<String>, Vec<String>) {
    let lxc = lxc_path(s);
    let mut running: Vec<String> = s
        .run_ok("lxc-ls", ["-P", lxc.to_str().unwrap(), "--running"])
        .split_whitespace()
        .map(String::from)
        .collect();
    running.sort();
    let all = s.run_ok("lxc-ls", ["-P", lxc.to_str().unwrap()]);
    assert_eq!(
        all.split_whitespace().count(),
        running.len(),
        "a container exists but is not running: {all}"
    );
    let links = s.run_ok("ip", ["-o", "link", "show"]);
    let mut veths: Vec<String> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("vethc_"))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    veths.sort();
    let attached = links
        .lines()
        .filter(|l| l.contains("vethc_") && l.contains(" master br2 "))
        .count();
    assert_eq!(
        attached,
        veths.len(),
        "a vethc_ link is not on br2: {links}"
    );
    (running, veths)
}

fn assert_host_matches(d: &Daemon, s: &Server) {
    let listed = d.json(&["-s", &format!("{API}/api/container/list")]);
    let ids: Vec<u64> = listed["containers_id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut want_running: Vec<String> = ids.iter().map(|i| format!("container{i}")).collect();
    want_running.sort();
    let mut want_veths: Vec<String> = ids.iter().map(|i| format!("vethc_br{i}")).collect();
    want_veths.sort();
    assert_eq!(
        host_state(s),
        (want_running, want_veths),
        "host and ledger disagree"
    );
    let running = d.json(&["-s", &format!("{API}/api/jobs?state=running")]);
    assert_eq!(
        running["jobs"].as_array().unwrap().len(),
        0,
        "a job is stuck running"
    );
    for id in ids {
        let info = d.json(&["-s", &format!("{API}/api/container/info/{id}")]);
        assert_eq!(info["state"], "RUNNING", "{info}");
        let pid = info["pid"].as_u64().unwrap().to_string();
        let addr = s.run_ok(
            "nsenter",
            [
                format!("--net=/proc/{pid}/ns/net"),
                "ip".into(),
                "-4".into(),
                "-o".into(),
                "addr".into(),
            ],
        );
        assert!(
            addr.contains(&format!("192.168.2.{id}/24")),
            "container{id} lost its address: {addr}"
        );
    }
}

#[test]
fn sigkill_inside_every_step_then_restart_converges() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let steps = [
        "create_container",
        "start_container",
        "create_veth",
        "configure_network",
    ];
    let mut jobs = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let id = 10 + i as u32;
        let d = Daemon::start(s, Some(250), false);
        let job = d.create(id);
        d.kill_inside(&job, step);
        let d = Daemon::start(s, None, false);
        let done = d.wait(&job);
        assert_eq!(
            done["state"],
            "succeeded",
            "killed inside {step}: {done}\n{}",
            d.log()
        );
        assert!(
            done["attempts"].as_u64().unwrap() >= 2,
            "the job must have been run again: {done}"
        );
        assert_host_matches(&d, s);
        jobs.push(job);
    }
    for (victim, step) in [
        (13, "stop_container"),
        (12, "delete_veth"),
        (11, "destroy_container"),
    ] {
        let d = Daemon::start(s, Some(250), false);
        let job = d.destroy(victim);
        d.kill_inside(&job, step);
        let d = Daemon::start(s, None, false);
        assert_eq!(
            d.wait(&job)["state"],
            "succeeded",
            "killed inside {step}\n{}",
            d.log()
        );
        assert_host_matches(&d, s);
        jobs.push(job);
    }
    // Every job is still there, finished, exactly once.
    let d = Daemon::start(s, None, false);
    let all = d.json(&["-s", &format!("{API}/api/jobs?limit=1000")]);
    let all = all["jobs"].as_array().unwrap();
    for j in &jobs {
        let found: Vec<&Value> = all.iter().filter(|x| x["id"] == j.as_str()).collect();
        assert_eq!(found.len(), 1, "job {j} lost or duplicated");
        assert_eq!(found[0]["state"], "succeeded");
    }
}

#[test]
fn a_job_acknowledged_just_before_sigkill_is_there_after_restart() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let mut d = Daemon::start(s, None, true);
    let accepted: Vec<String> = (21..=25).map(|id| d.create(id)).collect();
    d.kill();
    drop(d);
    let d = Daemon::start(s, None, true);
    for j in &accepted {
        assert_eq!(
            d.job(j)["state"],
            "queued",
            "job {j} was acknowledged, then lost"
        );
    }
    // Resumed, they run in order and all succeed; then SIGKILL right after accepting a destroy,
    // while the worker is on it or about to be.
    d.curl(&["-s", "-X", "POST", &format!("{API}/api/queue/resume")]);
    for j in &accepted {
        assert_eq!(d.wait(j)["state"], "succeeded");
    }
    let mut d = d;
    let last = d.destroy(25);
    d.kill();
    drop(d);
    let d = Daemon::start(s, None, false);
    assert_eq!(d.wait(&last)["state"], "succeeded");
    assert_host_matches(&d, s);
}

#[test]
fn sigterm_undoes_the_current_job_which_resumes_after_restart() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let mut d = Daemon::start(s, Some(300), false);
    let job = d.create(31);
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.job(&job)["steps"][2]["state"] != "running" {
        assert!(Instant::now() < deadline, "create_veth never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = d.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}\n{}",
        d.log()
    );
    assert_eq!(
        host_state(s),
        (vec![], vec![]),
        "the interrupted create was not undone"
    );
    drop(d);
    let d = Daemon::start(s, None, false);
    let done = d.wait(&job);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_host_matches(&d, s);
}
