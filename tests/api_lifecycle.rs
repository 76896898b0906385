//! Start, stop and restart (issue 12) over real HTTP against the whole daemon on a fake host, in
//! process (`common::in_process`), and through the `creepy-meow` client: the jobs they make, the
//! desired state and health they leave, and their errors. Every answer is also checked against
//! docs/openapi.json.

mod common;

use common::in_process::{start, Daemon, Opts, DEFAULT};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `POST /api/container/<id>/<verb>`, checked to be a 202 whose job is of kind `verb` and asked
/// by the operator; returns the job once it ended.
async fn lifecycle(d: &Daemon, id: u32, verb: &str) -> Value {
    let req = d.http.post(d.url(&format!("/api/container/{id}/{verb}")));
    let (s, headers, accepted) = d.send_full(req).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let job_id = accepted["job_id"].as_str().expect("job_id");
    assert_eq!(
        (
            &accepted["kind"],
            &accepted["id"],
            &accepted["state"],
            headers["location"].to_str().unwrap()
        ),
        (
            &json!(verb),
            &json!(id),
            &json!("queued"),
            &*format!("/api/jobs/{job_id}")
        ),
    );
    let job = d.wait(&accepted).await;
    assert_eq!(
        (&job["kind"], &job["origin"], &job["state"]),
        (&json!(verb), &json!("operator"), &json!("succeeded")),
        "{job}"
    );
    job
}

/// The names of a job's steps, in order.
fn step_names(job: &Value) -> Vec<&str> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// What `info` says of a container's lifecycle: LXC state, desired state, health, problems,
/// host veth.
async fn lifecycle_info(d: &Daemon, id: u32) -> Value {
    let (s, info) = d.get(&format!("/api/container/info/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{info}");
    json!({
        "state": info["state"], "desired_state": info["desired_state"], "health": info["health"],
        "problems": info["problems"], "host_veth": info["host_veth"],
    })
}

#[tokio::test]
async fn start_stop_and_restart_of_an_unknown_container_are_404() {
    let d = start(DEFAULT).await;
    for verb in ["start", "stop", "restart"] {
        let (s, body) = d.post(&format!("/api/container/99/{verb}")).await;
        assert_eq!(
            (s, body),
            (
                StatusCode::NOT_FOUND,
                json!({"code": "not_found", "error": "container 99 does not exist"})
            ),
            "{verb}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn start_stop_and_restart_wait_for_no_queued_create_they_are_409() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let (_, create) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    let job = create["job_id"].as_str().unwrap();
    for verb in ["start", "stop", "restart"] {
        let (s, body) = d.post(&format!("/api/container/5/{verb}")).await;
        assert_eq!(
            (s, body),
            (
                StatusCode::CONFLICT,
                json!({"code": "conflict", "error": format!("container 5 is being created (job {job})")})
            ),
            "{verb}"
        );
    }
    // Nothing was queued besides the create.
    assert_eq!(d.get("/api/queue").await.1["queued"], 1);
    d.stop().await;
}

#[tokio::test]
async fn stop_start_and_restart_set_the_desired_state_and_the_health_follows() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;

    let stop = lifecycle(&d, 5, "stop").await;
    assert_eq!(step_names(&stop), ["shutdown_container"]);
    assert_eq!(
        lifecycle_info(&d, 5).await,
        json!({"state": "STOPPED", "desired_state": "stopped", "health": "stopped",
               "problems": [], "host_veth": null})
    );

    let started = lifecycle(&d, 5, "start").await;
    assert_eq!(
        step_names(&started),
        [
            "start_container",
            "delete_veth",
            "create_veth",
            "configure_network"
        ]
    );
    let running = json!({"state": "RUNNING", "desired_state": "running", "health": "ok",
                         "problems": [], "host_veth": "vethc_br5"});
    assert_eq!(lifecycle_info(&d, 5).await, running);
    let pid_before = d.get("/api/container/info/5").await.1["pid"].clone();

    let restart = lifecycle(&d, 5, "restart").await;
    assert_eq!(
        step_names(&restart),
        [
            "shutdown_container",
            "start_container",
            "delete_veth",
            "create_veth",
            "configure_network"
        ]
    );
    assert_eq!(lifecycle_info(&d, 5).await, running);
    let (_, info) = d.get("/api/container/info/5").await;
    assert!(info["pid"].is_u64(), "{info}");
    assert_ne!(info["pid"], pid_before, "a restart runs a new init");
    assert_eq!(
        (&info["mtu"], &info["ip"]),
        (&json!(1450), &json!("192.168.2.5/24"))
    );
    d.stop().await;
}

#[tokio::test]
async fn a_stopped_container_is_listed_with_its_desired_state() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    d.create_running(6).await;
    lifecycle(&d, 6, "stop").await;
    // The plain list keeps the original tool's shape: a stopped container still exists.
    assert_eq!(
        d.get("/api/container/list").await,
        (StatusCode::OK, json!({"containers_id": [5, 6]}))
    );
    let (_, report) = d.post("/api/reconcile").await;
    let (s, list) = d.get("/api/container/list?detail=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list,
        json!({
            "containers": [
                {"id": 5, "record_state": "active", "desired_state": "running", "health": "ok"},
                {"id": 6, "record_state": "active", "desired_state": "stopped", "health": "stopped"},
            ],
            "health_checked_at": report["finished_at"],
        })
    );
    // A container stopped on purpose is no drift.
    assert_eq!(report["drift"], json!([]));
    d.stop().await;
}

/// The step lines of a client's output, without their times.
fn step_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗') || l.starts_with('↺'))
        .map(|l| l.split(" (").next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_client_stops_starts_and_restarts_with_live_steps() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let (code, out, err) = d.client(&["stop", "5"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(step_lines(&out), ["✓ shutdown_container"], "{out}");
    assert!(out.lines().last().unwrap().ends_with(" succeeded"), "{out}");
    assert_eq!(lifecycle_info(&d, 5).await["desired_state"], "stopped");

    let (code, out, err) = d.client(&["start", "5"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let start_steps = [
        "✓ start_container",
        "✓ delete_veth",
        "✓ create_veth",
        "✓ configure_network",
    ];
    assert_eq!(step_lines(&out), start_steps, "{out}");

    let (code, out, err) = d.client(&["restart", "5"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(step_lines(&out)[0], "✓ shutdown_container", "{out}");
    assert_eq!(step_lines(&out)[1..], start_steps, "{out}");
    assert_eq!(lifecycle_info(&d, 5).await["health"], "ok");

    let (code, out, err) = d.client(&["stop", "5", "--no-wait", "--json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let accepted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&accepted["kind"], &accepted["id"]),
        (&json!("stop"), &json!(5))
    );
    d.wait(&accepted).await;

    let (code, out, err) = d.client(&["start", "99"]).await;
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert_eq!(
        err.trim(),
        "creepy-meow: container 99 does not exist (HTTP 404, not_found)"
    );
    d.stop().await;
}
