//! Reconciliation (issue 12) over real HTTP against the whole daemon on a fake host, in process
//! (`common::in_process`): the host is changed behind the daemon's back through the fakes
//! (a container stopped by hand, a rootfs lost, a link broken, a foreign container or link
//! added), then `POST /api/reconcile` must report it and repair what it may, through jobs.
//! Every answer is also checked against docs/openapi.json.

mod common;

use common::in_process::{capture_logs, start, Daemon, DEFAULT};
use creepy_meow::cli::LogFormat;
use creepy_meow::sys::Lxc;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Runs a reconcile pass; returns its report.
async fn reconcile(d: &Daemon) -> Value {
    let (s, report) = d.post("/api/reconcile").await;
    assert_eq!(s, StatusCode::OK, "{report}");
    report
}

/// The drift of a report with each job ID replaced by `"<job>"` (or kept null), for literal
/// comparison; returns it with the job IDs.
fn drift_and_jobs(report: &Value) -> (Value, Vec<String>) {
    let mut drift = report["drift"].clone();
    let mut jobs = Vec::new();
    for f in drift.as_array_mut().unwrap() {
        if let Some(id) = f["job_id"].as_str() {
            jobs.push(id.to_string());
            f["job_id"] = json!("<job>");
        }
    }
    (drift, jobs)
}

/// Waits for job `id` to end; returns it.
async fn wait_job(d: &Daemon, id: &str) -> Value {
    d.wait(&json!({ "job_id": id })).await
}

/// What `info` says of a container's health.
async fn health(d: &Daemon, id: u32) -> Value {
    let (s, info) = d.get(&format!("/api/container/info/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{info}");
    json!({
        "state": info["state"], "record_state": info["record_state"],
        "desired_state": info["desired_state"], "health": info["health"],
        "problems": info["problems"],
    })
}

/// The calls to the fake host since the last `clear_calls` that changed something: every
/// one but the reads (`links`, `link NAME`, `addresses INDEX`).
fn changes(d: &Daemon) -> Vec<String> {
    let reads = |verb: Option<&str>| matches!(verb, Some("links" | "link" | "addresses"));
    d.net
        .calls()
        .into_iter()
        .filter(|c| !reads(c.split(": ").nth(1).and_then(|v| v.split(' ').next())))
        .collect()
}

#[tokio::test]
async fn a_container_stopped_by_hand_is_started_again_by_a_reconcile_job() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.lxc.stop_by_hand("container5");
    let stopped = json!({"state": "STOPPED", "record_state": "active",
                         "desired_state": "running", "health": "stopped", "problems": []});
    assert_eq!(health(&d, 5).await, stopped);

    let report = reconcile(&d).await;
    let (drift, jobs) = drift_and_jobs(&report);
    assert_eq!(
        drift,
        json!([{"container_id": 5, "drift": "stopped", "health": "stopped",
                "job_id": "<job>", "error": null}])
    );
    assert_eq!(
        (&report["checked"], &report["fabric_repaired"]),
        (&json!(1), &json!([]))
    );
    let job = wait_job(&d, &jobs[0]).await;
    assert_eq!(
        (&job["kind"], &job["origin"], &job["state"]),
        (&json!("start"), &json!("reconcile"), &json!("succeeded")),
        "{job}"
    );
    assert_eq!(
        health(&d, 5).await,
        json!({"state": "RUNNING", "record_state": "active",
               "desired_state": "running", "health": "ok", "problems": []})
    );
    // The last pass is kept as it was answered.
    assert_eq!(d.get("/api/reconcile").await, (StatusCode::OK, report));
    d.assert_metrics(&[
        "creepy_meow_drift_total{kind=\"stopped\"} 1",
        "creepy_meow_repairs_total{kind=\"stopped\"} 1",
    ])
    .await;
    // Repaired: the next pass finds nothing.
    assert_eq!(reconcile(&d).await["drift"], json!([]));
    d.stop().await;
}

#[tokio::test]
async fn each_drift_is_a_warn_line_naming_the_container_and_the_drift() {
    let (log, _capture) = capture_logs(LogFormat::Json);
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.lxc.stop_by_hand("container5");
    d.lxc.add_foreign("lxcfoo");
    reconcile(&d).await;
    d.stop().await;
    let lines: Vec<Value> = log
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let warned = |message: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["level"] == "WARN" && l["fields"]["message"] == message)
            .map(|l| &l["fields"])
            .collect()
    };
    assert_eq!(
        warned("reconcile: drift found"),
        [
            &json!({"message": "reconcile: drift found", "container_id": "5",
                 "drift": "stopped", "problems": "stopped"})
        ]
    );
    assert_eq!(
        warned("reconcile: foreign to this daemon; left untouched"),
        [
            &json!({"message": "reconcile: foreign to this daemon; left untouched",
                 "name": "lxcfoo"})
        ]
    );
}

#[tokio::test]
async fn a_broken_host_veth_is_made_again_by_a_repair_job() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.net.edit_link("vethc_br5", |l| l.up = false);
    let report = reconcile(&d).await;
    let (drift, jobs) = drift_and_jobs(&report);
    assert_eq!(
        drift,
        json!([{"container_id": 5, "drift": "network", "health": "degraded",
                "problems": ["vethc_br5 is down"], "job_id": "<job>", "error": null}])
    );
    let job = wait_job(&d, &jobs[0]).await;
    assert_eq!(
        (&job["kind"], &job["origin"], &job["state"]),
        (&json!("repair"), &json!("reconcile"), &json!("succeeded")),
        "{job}"
    );
    assert_eq!(health(&d, 5).await["health"], "ok");
    d.assert_metrics(&["creepy_meow_repairs_total{kind=\"network\"} 1"])
        .await;
    d.stop().await;
}

#[tokio::test]
async fn a_lost_rootfs_is_reported_missing_never_recreated_and_destroy_frees_it() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.lxc.stop_by_hand("container5");
    d.lxc.lose_rootfs("container5");
    d.net.clear_calls();
    let report = reconcile(&d).await;
    assert_eq!(
        report["drift"],
        json!([{"container_id": 5, "drift": "missing", "health": "missing",
                "job_id": null, "error": null}])
    );
    assert_eq!(health(&d, 5).await["record_state"], "missing");
    assert_eq!(health(&d, 5).await["health"], "missing");
    // No job was queued, and nothing was started or created on the host.
    let (_, jobs) = d.get("/api/jobs").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(changes(&d), Vec::<String>::new());
    // Only a destroy applies to it.
    assert_eq!(
        d.post("/api/container/5/start").await,
        (
            StatusCode::CONFLICT,
            json!({"code": "conflict", "error": "container 5 is missing: only a destroy applies to it"})
        )
    );
    // Known missing: the next pass reports no drift again.
    assert_eq!(reconcile(&d).await["drift"], json!([]));
    let (s, accepted) = d.send(d.http.delete(d.url("/api/container/5"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(d.wait(&accepted).await["state"], "succeeded");
    assert_eq!(
        d.get("/api/container/list").await.1,
        json!({"containers_id": []})
    );
    // Its address is free again.
    assert_eq!(
        d.form("id=6&vlan=2&ip=192.168.2.5/24").await.0,
        StatusCode::ACCEPTED
    );
    d.stop().await;
}

#[tokio::test]
async fn a_container_started_by_hand_against_its_desired_state_is_reported_not_stopped() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let (_, stop) = d.post("/api/container/5/stop").await;
    assert_eq!(d.wait(&stop).await["state"], "succeeded");
    d.lxc.start("container5").await.unwrap();
    d.net.clear_calls();
    let report = reconcile(&d).await;
    let why = "running, but its desired state is stopped";
    assert_eq!(
        report["drift"],
        json!([{"container_id": 5, "drift": "running_undesired", "health": "degraded",
                "problems": [why], "job_id": null, "error": null}])
    );
    assert_eq!(changes(&d), Vec::<String>::new());
    assert_eq!(
        health(&d, 5).await,
        json!({"state": "RUNNING", "record_state": "active",
               "desired_state": "stopped", "health": "degraded", "problems": [why]})
    );
    d.stop().await;
}

#[tokio::test]
async fn a_foreign_container_and_link_are_reported_and_left_untouched() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.lxc.add_foreign("lxcfoo");
    d.net.add_device("vethc_br77", 1500);
    d.net.clear_calls();
    let report = reconcile(&d).await;
    assert_eq!(
        (&report["foreign"], &report["drift"], &report["checked"]),
        (
            &json!({"containers": ["lxcfoo"], "links": ["vethc_br77"]}),
            &json!([]),
            &json!(1)
        )
    );
    assert_eq!(changes(&d), Vec::<String>::new());
    assert!(d.lxc.names().contains(&"lxcfoo".to_string()));
    assert_eq!(
        d.get("/api/container/list").await.1,
        json!({"containers_id": [5]})
    );
    d.stop().await;
}

#[tokio::test]
async fn the_detailed_list_has_its_own_shape_and_other_details_are_400() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let (s, list) = d.get("/api/container/list?detail=1").await;
    assert_eq!(s, StatusCode::OK);
    // Created after the pass at start: not judged yet.
    assert_eq!(
        list["containers"],
        json!([{"id": 5, "record_state": "active", "desired_state": "running", "health": null}])
    );
    let (_, last) = d.get("/api/reconcile").await;
    assert_eq!(list["health_checked_at"], last["finished_at"]);
    assert_eq!(
        d.get("/api/container/list?detail=0").await.1,
        json!({"containers_id": [5]})
    );
    for bad in ["2", "yes", ""] {
        assert_eq!(
            d.get(&format!("/api/container/list?detail={bad}")).await,
            (
                StatusCode::BAD_REQUEST,
                json!({"code": "invalid_field", "field": "detail",
                       "error": format!("detail must be 0 or 1, not {bad:?}")})
            )
        );
    }
    d.stop().await;
}

/// Runs the client with `args` against `d`; returns its exit code and stdout, and checks it
/// printed nothing on stderr.
async fn client(d: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = d.client(args).await;
    assert!(err.is_empty(), "{err}");
    (code, out)
}

/// A line's words, for comparing table rows without their padding.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn the_client_shows_the_last_pass_runs_one_now_and_lists_health() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.lxc.stop_by_hand("container5");
    d.lxc.add_foreign("lxcfoo");
    let (code, out) = client(&d, &["reconcile", "--now"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (_, last) = d.get("/api/reconcile").await;
    let job = last["drift"][0]["job_id"].as_str().unwrap().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].split(": ").nth(1), Some("1 checked, 1 drifted"));
    assert_eq!(words(lines[1]), "CONTAINER DRIFT HEALTH JOB PROBLEMS");
    assert_eq!(words(lines[2]), format!("5 stopped stopped {job}"));
    assert_eq!(lines[3], "foreign containers (left untouched): lxcfoo");
    assert_eq!(lines.len(), 4, "{out}");
    wait_job(&d, &job).await;

    // Without --now: the same pass again, as JSON too.
    assert_eq!(client(&d, &["reconcile"]).await, (Some(0), out));
    let (code, json_out) = client(&d, &["reconcile", "--json"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap(), last);

    let (code, out) = client(&d, &["list", "--detail"]).await;
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(words(lines[0]), "NAME RECORD DESIRED HEALTH");
    assert_eq!(words(lines[1]), "container5 active running stopped");
    let at = last["finished_at"].as_str().unwrap();
    assert_eq!(
        lines[2],
        format!("health as the reconcile pass that ended {at} found it")
    );
    d.stop().await;
}
