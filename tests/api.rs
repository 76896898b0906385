//! The HTTP API over real HTTP on 127.0.0.1:0, against the whole daemon (store, worker, engine)
//! on a fake host, in process (`common::in_process`): every endpoint and every error code. No
//! root needed. Every response is also checked against docs/openapi.json (`common::openapi`).

mod common;

use common::in_process::{capture_logs, config, start, Opts, DEFAULT};
use common::serve::BIN;
use creepy_meow::cli::LogFormat;
use creepy_meow::sys::Host;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_original_curl_line_is_accepted_and_the_container_appears() {
    let d = start(DEFAULT).await;
    let resp = d
        .http
        .post(d.url("/api/container/create"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=5&vlan=2&ip=192.168.2.5/24")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/jobs/{}", body["job_id"].as_str().unwrap())
    );
    assert_eq!(
        (body["id"].clone(), body["vlan"].clone(), body["ip"].clone()),
        (json!(5), json!(2), json!("192.168.2.5/24"))
    );

    let job = d.wait(&body).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "create");
    assert_eq!(job["container_id"], 5);
    let steps = job["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "ensure_image",
            "create_container",
            "start_container",
            "create_veth",
            "configure_network"
        ]
    );
    assert!(steps.iter().all(|s| s["state"] == "done"
        && s["started_at"].is_string()
        && s["finished_at"].is_string()));

    assert_eq!(
        d.get("/api/container/list").await,
        (StatusCode::OK, json!({"containers_id": [5]}))
    );
    let (s, info) = d.get("/api/container/info/5").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["name"], "container5");
    assert_eq!(info["state"], "RUNNING");
    assert_eq!(info["vlan"], 2);
    assert_eq!(info["ip"], "192.168.2.5/24");
    assert_eq!(info["mtu"], 1450);
    assert_eq!(info["host_veth"], "vethc_br5");
    assert!(info["pid"].is_u64());
    d.stop().await;
}

#[tokio::test]
async fn json_creates_destroy_and_the_list_is_sorted() {
    let d = start(DEFAULT).await;
    for (id, ip) in [(7, "192.168.3.7/24"), (6, "192.168.3.6/24")] {
        let req = d
            .http
            .post(d.url("/api/container/create"))
            .json(&json!({"id": id, "vlan": 3, "ip": ip, "gateway": "192.168.3.1"}));
        let (s, body) = d.send(req).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        assert_eq!(d.wait(&body).await["state"], "succeeded");
    }
    assert_eq!(
        d.get("/api/container/list").await.1,
        json!({"containers_id": [6, 7]})
    );
    let (s, body) = d.send(d.http.delete(d.url("/api/container/6"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let job = d.wait(&body).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["kind"], "destroy");
    assert_eq!(
        d.get("/api/container/list").await.1,
        json!({"containers_id": [7]})
    );
    assert_eq!(
        d.get("/api/container/info/6").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        d.send(d.http.delete(d.url("/api/container/6"))).await.0,
        StatusCode::NOT_FOUND
    );
    // The address of a destroyed container is free again.
    let (s, _) = d.form("id=9&vlan=3&ip=192.168.3.6/24").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    d.stop().await;
}

#[tokio::test]
async fn a_create_names_a_template_the_server_offers_and_the_job_keeps_it() {
    let d = start(DEFAULT).await;
    let req = d
        .http
        .post(d.url("/api/container/create"))
        .json(&json!({"id": 8, "vlan": 2, "ip": "192.168.2.8/24", "template": "alt"}));
    let (s, body) = d.send(req).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["template"], "alt", "{body}");
    let job = d.wait(&body).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["request"]["template"], "alt", "{job}");
    // The original form POST names none: the default, and no template in the job.
    let (s, body) = d.form("id=9&vlan=2&ip=192.168.2.9/24").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let job = d.wait(&body).await;
    assert!(job["request"].get("template").is_none(), "{job}");
    let (s, e) = d
        .form("id=10&vlan=2&ip=192.168.2.10/24&template=ubuntu")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let msg = e["error"].as_str().unwrap_or_default();
    assert!(msg.contains("allowed: busybox, alt"), "{e}");
    d.stop().await;
}

#[tokio::test]
async fn client_mistakes_get_4xx_with_a_json_sentence_and_the_daemon_keeps_serving() {
    let d = start(DEFAULT).await;
    let (s, first) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let cases: [(&str, u16, &str, Option<&str>); 12] = [
        ("vlan=2&ip=192.168.2.6/24", 400, "missing_field", Some("id")),
        (
            "id=6&vlan=2&ip=192.168.2.6/24&x=1",
            400,
            "unknown_field",
            None,
        ),
        (
            "id=six&vlan=2&ip=192.168.2.6/24",
            400,
            "invalid_field",
            Some("id"),
        ),
        (
            "id=0&vlan=2&ip=192.168.2.6/24",
            400,
            "invalid_field",
            Some("id"),
        ),
        (
            "id=10000000&vlan=2&ip=192.168.2.6/24",
            400,
            "invalid_field",
            Some("id"),
        ),
        (
            "id=6&vlan=9&ip=192.168.9.6/24",
            400,
            "invalid_field",
            Some("vlan"),
        ),
        (
            "id=6&vlan=2&ip=192.168.2.600/24",
            400,
            "invalid_field",
            Some("ip"),
        ),
        (
            "id=6&vlan=2&ip=192.168.2.255/24",
            400,
            "invalid_field",
            Some("ip"),
        ),
        (
            "id=6&vlan=2&ip=192.168.2.1/24",
            400,
            "invalid_field",
            Some("ip"),
        ),
        (
            "id=6&vlan=2&ip=192.168.2.6/24&template=ubuntu",
            400,
            "invalid_field",
            Some("template"),
        ),
        ("id=5&vlan=3&ip=192.168.3.5/24", 409, "conflict", None),
        ("id=6&vlan=2&ip=192.168.2.5/24", 409, "conflict", None),
    ];
    for (body, status, code, field) in cases {
        let (s, e) = d.form(body).await;
        assert_eq!(s.as_u16(), status, "{body}: {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
        assert!(
            e["error"].as_str().is_some_and(|m| m.len() > 10),
            "{body}: {e}"
        );
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{body}: {e}");
        }
    }
    let (s, e) = d
        .send(
            d.http
                .post(d.url("/api/container/create"))
                .header("content-type", "text/plain")
                .body("id=6"),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let big = format!("id=6&vlan=2&ip=192.168.2.6/24&pad={}", "x".repeat(20_000));
    let (s, e) = d.form(&big).await;
    assert_eq!(
        (s.as_u16(), e["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (s, e) = d
        .send(
            d.http
                .post(d.url("/api/container/create"))
                .json(&json!([1])),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["code"].as_str()),
        (400, Some("malformed_body"))
    );
    assert_eq!(
        d.get("/api/container/info/77").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        d.get("/api/container/info/x").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        d.get("/api/jobs/not-a-uuid").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        d.get(&format!("/api/jobs/{}", uuid::Uuid::new_v4()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(d.get("/api/nothing").await.1["code"], "not_found");
    assert_eq!(
        d.send(d.http.put(d.url("/api/container/list"))).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        d.get("/api/jobs?state=sleeping").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(d.get("/api/jobs?limit=0").await.0, StatusCode::BAD_REQUEST);
    // A finished job cannot be cancelled.
    let job = d.wait(&first).await;
    let (s, e) = d
        .send(
            d.http
                .delete(d.url(&format!("/api/jobs/{}", job["id"].as_str().unwrap()))),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["code"].as_str()),
        (409, Some("not_cancellable"))
    );
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        health,
        serde_json::json!({"status": "ok", "fabric": "multicast"})
    );
    d.stop().await;
}

#[tokio::test]
async fn a_token_guards_everything_but_healthz() {
    let d = start(Opts {
        token: Some("s3cret"),
        ..DEFAULT
    })
    .await;
    assert_eq!(d.get("/healthz").await.0, StatusCode::OK);
    let (s, e) = d.get("/api/container/list").await;
    assert_eq!(
        (s.as_u16(), e["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = d
        .send(
            d.http
                .get(d.url("/api/container/list"))
                .bearer_auth("wrong"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = d
        .send(d.http.get(d.url("/metrics")).bearer_auth("wrong"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = d
        .send(
            d.http
                .get(d.url("/api/container/list"))
                .bearer_auth("s3cret"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    d.stop().await;
}

#[tokio::test]
async fn paused_queue_accepts_waits_cancels_and_refuses_when_full() {
    let d = start(Opts {
        paused: true,
        max_queued: 2,
        ..DEFAULT
    })
    .await;
    let (_, a) = d.form("id=1&vlan=2&ip=192.168.2.11/24").await;
    let (_, b) = d.form("id=2&vlan=2&ip=192.168.2.12/24").await;
    let (s, e) = d.form("id=3&vlan=2&ip=192.168.2.13/24").await;
    assert_eq!((s.as_u16(), e["code"].as_str()), (503, Some("queue_full")));
    assert_eq!(
        d.get("/api/queue").await.1,
        json!({"paused": true, "queued": 2, "running": 0})
    );
    // wait answers with the current state once its timeout passes.
    let (s, j) = d
        .get(&format!(
            "/api/jobs/{}/wait?timeout=0.2",
            a["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((s, j["state"].as_str()), (StatusCode::OK, Some("queued")));
    let (s, j) = d
        .send(
            d.http
                .delete(d.url(&format!("/api/jobs/{}", b["job_id"].as_str().unwrap()))),
        )
        .await;
    assert_eq!(
        (s, j["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (s, _) = d.form("id=2&vlan=2&ip=192.168.2.12/24").await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "a cancelled job releases its reservations"
    );
    let (s, q) = d.send(d.http.post(d.url("/api/queue/resume"))).await;
    assert_eq!((s, q["paused"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(d.wait(&a).await["state"], "succeeded");
    let (_, jobs) = d.get("/api/jobs?state=cancelled").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    let (_, metrics) = d.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("creepy_meow_jobs{state=\"cancelled\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("creepy_meow_step_duration_seconds_count{step=\"create_veth\"}"),
        "{text}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_creating_the_same_id_get_exactly_one_202() {
    let d = std::sync::Arc::new(
        start(Opts {
            paused: true,
            ..DEFAULT
        })
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..32 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            d.form(&format!("id=42&vlan=2&ip=192.168.2.{}/24", 100 + i))
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        31,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_directory_is_refused() {
    let d = start(DEFAULT).await;
    let cfg = config(&d.dir, &DEFAULT);
    let (host, _, _) = Host::fake();
    let err = creepy_meow::daemon::run(cfg, host, CancellationToken::new(), None)
        .await
        .expect_err("two daemons on one store");
    assert!(err.is_usage());
    assert!(err.to_string().contains("is in use by"), "{err}");
    d.stop().await;
}

#[tokio::test]
async fn the_client_says_one_sentence_for_a_missing_or_wrong_token() {
    let d = start(Opts {
        token: Some("s3cret"),
        ..DEFAULT
    })
    .await;
    let client = |token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["list", "--server", &d.base])
            .env_remove("CREEPY_MEOW_TOKEN");
        if let Some(t) = token {
            cmd.env("CREEPY_MEOW_TOKEN", t);
        }
        cmd.output()
    };
    for token in [None, Some("wrong")] {
        let out = client(token).await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("the server refused the token"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let out = client(Some("s3cret")).await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no containers");
    d.stop().await;
}

/// A header's value as text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The job ID in a 202 answer.
fn job_id(accepted: &Value) -> &str {
    accepted["job_id"].as_str().expect("job_id")
}

#[tokio::test]
async fn a_runtime_pause_holds_new_jobs_until_resume() {
    let d = start(DEFAULT).await;
    assert_eq!(
        d.post("/api/queue/pause").await,
        (
            StatusCode::OK,
            json!({"paused": true, "queued": 0, "running": 0})
        )
    );
    let (s, job) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(
        (s, job["state"].as_str()),
        (StatusCode::ACCEPTED, Some("queued"))
    );
    // Bounded, not a timing assert: a worker that ignored the pause would finish this job on
    // the fake host long before the wait gives up, and the wait would answer `succeeded`.
    let (s, j) = d
        .get(&format!("/api/jobs/{}/wait?timeout=1", job_id(&job)))
        .await;
    assert_eq!(
        (s, j["state"].as_str()),
        (StatusCode::OK, Some("queued")),
        "{j}"
    );
    assert_eq!(
        d.get("/api/queue").await.1,
        json!({"paused": true, "queued": 1, "running": 0})
    );
    // The worker may already have taken the job by the time resume answers: only `paused` is
    // certain.
    let (s, q) = d.post("/api/queue/resume").await;
    assert_eq!((s, q["paused"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(d.wait(&job).await["state"], "succeeded");
    assert_eq!(
        d.get("/api/queue").await.1,
        json!({"paused": false, "queued": 0, "running": 0})
    );
    d.stop().await;
}

#[tokio::test]
async fn a_full_queue_says_retry_after_and_a_refused_token_says_www_authenticate() {
    let d = start(Opts {
        token: Some("s3cret"),
        paused: true,
        max_queued: 1,
        ..DEFAULT
    })
    .await;
    let create = |body: &str| {
        d.http
            .post(d.url("/api/container/create"))
            .bearer_auth("s3cret")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
    };
    let (s, _, _) = d.send_full(create("id=1&vlan=2&ip=192.168.2.11/24")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, h, e) = d.send_full(create("id=2&vlan=2&ip=192.168.2.12/24")).await;
    assert_eq!((s.as_u16(), e["code"].as_str()), (503, Some("queue_full")));
    assert_eq!(header(&h, "retry-after"), Some("5"));
    for token in [None, Some("wrong")] {
        let mut req = d.http.get(d.url("/api/container/list"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (s, h, e) = d.send_full(req).await;
        assert_eq!(
            (s.as_u16(), e["code"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
        assert_eq!(header(&h, "www-authenticate"), Some("Bearer"), "{token:?}");
    }
    d.stop().await;
}

#[tokio::test]
async fn bad_wait_and_list_queries_get_400_with_the_documented_code() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let (_, job) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    let wait = format!("/api/jobs/{}/wait", job_id(&job));
    let invalid = Some("invalid_field");
    let cases: [(String, Option<&str>, Option<&str>); 13] = [
        (format!("{wait}?timeout=-1"), invalid, Some("timeout")),
        (format!("{wait}?timeout=soon"), invalid, Some("timeout")),
        (format!("{wait}?timeout=NaN"), invalid, Some("timeout")),
        (format!("{wait}?timeout="), invalid, Some("timeout")),
        (format!("{wait}?timeout=%FF"), Some("malformed_query"), None),
        ("/api/jobs?limit=0".into(), invalid, Some("limit")),
        ("/api/jobs?limit=10001".into(), invalid, Some("limit")),
        ("/api/jobs?limit=-1".into(), invalid, Some("limit")),
        ("/api/jobs?limit=2.5".into(), invalid, Some("limit")),
        ("/api/jobs?limit=many".into(), invalid, Some("limit")),
        ("/api/jobs?state=sleeping".into(), invalid, Some("state")),
        (
            "/api/jobs?state=%C3%28".into(),
            Some("malformed_query"),
            None,
        ),
        (
            "/api/jobs?limit=1&x=%80".into(),
            Some("malformed_query"),
            None,
        ),
    ];
    for (path, code, field) in cases {
        let (s, e) = d.get(&path).await;
        assert_eq!(
            (s.as_u16(), e["code"].as_str(), e["field"].as_str()),
            (400, code, field),
            "{path}: {e}"
        );
    }
    // The edges of the ranges are accepted; timeout=0 answers at once with the current state.
    for path in [
        "/api/jobs?limit=1".to_string(),
        "/api/jobs?limit=10000".into(),
        format!("{wait}?timeout=0"),
    ] {
        assert_eq!(d.get(&path).await.0, StatusCode::OK, "{path}");
    }
    d.stop().await;
}

#[tokio::test]
async fn the_job_list_answers_the_newest_100_by_default() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    for id in 1..=101 {
        let (s, e) = d
            .form(&format!("id={id}&vlan=2&ip=192.168.2.{}/24", id + 10))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    }
    let ids = |jobs: &Value| -> Vec<u64> {
        let jobs = jobs["jobs"].as_array().expect("jobs");
        jobs.iter()
            .map(|j| j["container_id"].as_u64().unwrap())
            .collect()
    };
    let (s, jobs) = d.get("/api/jobs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&jobs), (2..=101).rev().collect::<Vec<u64>>());
    assert_eq!(ids(&d.get("/api/jobs?limit=101").await.1).len(), 101);
    d.stop().await;
}

#[tokio::test]
async fn info_during_a_queued_create_says_absent_creating_and_names_the_job() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let (_, job) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    let (s, info) = d.get("/api/container/info/5").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        info,
        json!({
            "id": 5, "name": "container5", "vlan": 2, "ip": "192.168.2.5/24", "gateway": null,
            "state": "ABSENT", "pid": null, "mtu": null, "host_veth": null, "bridge": "br2",
            "record_state": "creating", "job_id": job_id(&job),
            "desired_state": "running", "health": null, "problems": [],
        })
    );
    d.post("/api/queue/resume").await;
    assert_eq!(d.wait(&job).await["state"], "succeeded");
    let (_, info) = d.get("/api/container/info/5").await;
    assert_eq!(
        (&info["state"], &info["record_state"], &info["job_id"]),
        (&json!("RUNNING"), &json!("active"), &Value::Null),
        "{info}"
    );
    assert_eq!(
        (&info["health"], &info["problems"]),
        (&json!("ok"), &json!([])),
        "{info}"
    );
    d.stop().await;
}

/// The names docs/OPERATIONS.md promises operators, written out: a renamed metric breaks alerts.
#[tokio::test]
async fn metrics_export_every_documented_name() {
    let d = start(DEFAULT).await;
    let (_, job) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(d.wait(&job).await["state"], "succeeded");
    d.assert_metrics(&[
        "# TYPE creepy_meow_jobs gauge",
        "creepy_meow_jobs{state=\"queued\"} 0",
        "creepy_meow_jobs{state=\"running\"} 0",
        "creepy_meow_jobs{state=\"succeeded\"} 1",
        "creepy_meow_jobs{state=\"failed\"} 0",
        "creepy_meow_jobs{state=\"cancelled\"} 0",
        "# TYPE creepy_meow_queue_depth gauge",
        "creepy_meow_queue_depth 0",
        "# TYPE creepy_meow_queue_paused gauge",
        "creepy_meow_queue_paused 0",
        "# TYPE creepy_meow_step_duration_seconds summary",
        "creepy_meow_step_duration_seconds_count{step=\"create_container\"} 1",
        "creepy_meow_step_duration_seconds_count{step=\"start_container\"} 1",
        "creepy_meow_step_duration_seconds_count{step=\"create_veth\"} 1",
        "creepy_meow_step_duration_seconds_count{step=\"configure_network\"} 1",
    ])
    .await;
    let (_, body) = d.get("/metrics").await;
    for step in [
        "create_container",
        "start_container",
        "create_veth",
        "configure_network",
    ] {
        let sum = format!("creepy_meow_step_duration_seconds_sum{{step=\"{step}\"}} ");
        let value = body
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&sum));
        assert!(
            value.is_some_and(|v| v.parse::<f64>().is_ok_and(|s| s >= 0.0)),
            "{sum}: {body}"
        );
    }
    d.post("/api/queue/pause").await;
    d.form("id=6&vlan=2&ip=192.168.2.6/24").await;
    d.assert_metrics(&[
        "creepy_meow_jobs{state=\"queued\"} 1",
        "creepy_meow_queue_depth 1",
        "creepy_meow_queue_paused 1",
    ])
    .await;
    d.stop().await;
}

/// Runs a create that fails at `create_veth` on a daemon logging in `format` at the default
/// level (info) into a buffer ([`capture_logs`]); returns the job ID and the log (without
/// colours).
async fn failed_create_log(format: LogFormat) -> (String, String) {
    let (log, _capture) = capture_logs(format);
    let d = start(DEFAULT).await;
    d.net.fail_next("create_veth", libc::EBUSY);
    let (_, job) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(d.wait(&job).await["state"], "failed");
    let id = job_id(&job).to_string();
    d.stop().await;
    (id, log.text())
}

/// A JSON log line's field `name`, from the event or from the spans it is in.
fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    std::iter::once(&line["fields"])
        .chain(line["spans"].as_array().into_iter().flatten())
        .find_map(|fields| fields[name].as_str())
}

#[tokio::test]
async fn a_jobs_json_log_lines_carry_job_id_container_id_and_step() {
    let (id, log) = failed_create_log(LogFormat::Json).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{log}"))
    };
    for message in [
        "create accepted",
        "job started",
        "step failed, rolling back",
        "job failed",
    ] {
        let l = line(message);
        assert_eq!(log_field(l, "job_id"), Some(id.as_str()), "{l}");
        assert_eq!(log_field(l, "container_id"), Some("5"), "{l}");
    }
    let failed = line("step failed, rolling back");
    assert_eq!(log_field(failed, "step"), Some("create_veth"), "{failed}");
    // Every line about this job names the container too.
    for l in lines.iter().filter(|l| log_field(l, "job_id") == Some(&id)) {
        assert_eq!(log_field(l, "container_id"), Some("5"), "{l}");
    }
}

#[tokio::test]
async fn a_jobs_text_log_lines_carry_job_id_container_id_and_step() {
    let (id, log) = failed_create_log(LogFormat::Text).await;
    let line = |message: &str| {
        log.lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{log}"))
    };
    for message in ["job started", "step failed, rolling back", "job failed"] {
        let l = line(message);
        assert!(l.contains(&format!("job_id={id}")), "{l}");
        assert!(l.contains("container_id=5"), "{l}");
    }
    let failed = line("step failed, rolling back");
    assert!(failed.contains("step=\"create_veth\""), "{failed}");
}
