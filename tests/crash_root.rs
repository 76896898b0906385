//! Crash safety of the real daemon: SIGKILL at many points — at least once inside each create
//! and destroy step — then a restart. Every accepted job reaches a terminal state, none is lost
//! or completed twice, no job stays `running`, and the host matches the jobs' outcomes.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{lxc_path, Daemon, API};
use common::{Lab, Server};
use serde_json::Value;

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
    let status = d.sigterm();
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
