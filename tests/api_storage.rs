//! A disk that stops taking writes (issue 17) under the whole daemon on a fake host, over real
//! HTTP: every change is refused with 503 `storage_unavailable` and `Retry-After`, never a 500
//! nor a 202; `/healthz` says why; once the disk writes again the daemon accepts without a
//! restart, and what it counts is what its store holds. The fault is the store's log sync
//! failing with `ENOSPC` (`creepy_meow::testhook::FAIL_SYNC_FILE`); the real full disk is
//! `faults_root.rs`'s. Every answer is checked against docs/openapi.json.

mod common;

use std::time::{Duration, Instant};

use common::in_process::{start, Daemon, Opts, DEFAULT};
use common::layout::data_path;
use creepy_meow::testhook::FAIL_SYNC_FILE;
use reqwest::StatusCode;
use serde_json::Value;

/// A create of container `id` on VLAN 2 with `key`: (status, `Retry-After`, body).
async fn create(d: &Daemon, id: u32, key: &str) -> (StatusCode, Option<String>, Value) {
    let (s, headers, body) = d.keyed_create(key, id).await;
    let retry = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (s, retry, body)
}

/// Waits (30 s at most) until `/healthz` answers `status`; returns its body.
async fn health_becomes(d: &Daemon, status: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = d.get("/healthz").await;
        if s == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {s}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The queued count the daemon answers (`GET /api/queue`) once no job runs (10 s at most).
async fn queued(d: &Daemon) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, q) = d.get("/api/queue").await;
        assert_eq!(s, StatusCode::OK, "{q}");
        if q["running"] == 0 {
            return q["queued"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "a job kept running: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_disk_that_fails_writes_gets_503_and_the_daemon_accepts_again_without_a_restart() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let (s, _, first) = create(&d, 5, "a").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let marker = data_path(&d.dir).join(FAIL_SYNC_FILE);
    std::fs::write(&marker, "").unwrap();

    let (s, retry, body) = create(&d, 6, "b").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    let (s, body) = d.send(d.http.delete(d.url("/api/container/5"))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let health = health_becomes(&d, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(health["status"], "storage_unavailable");
    assert!(
        health["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{health}"
    );
    // Reads are refused too while sled is closed (nothing only in its memory is shown). The
    // queue is resumed all the same (its answer reads the store): the worker meets the fault,
    // records nothing, and waits for the store.
    let (s, body) = d.get("/api/queue").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    let (s, body) = d.post("/api/queue/resume").await;
    assert!(
        s == StatusCode::SERVICE_UNAVAILABLE && body["code"] == "storage_unavailable",
        "{s} {body}"
    );

    std::fs::remove_file(&marker).unwrap();
    assert_eq!(health_becomes(&d, StatusCode::OK).await["status"], "ok");
    let c5 = d.wait(&first).await;
    assert_eq!(c5["state"], "succeeded", "{c5}");
    // Paused again, so what is queued holds still while it is counted.
    assert_eq!(d.post("/api/queue/pause").await.0, StatusCode::OK);
    // The refused create's retry, with its key: accepted now, or (if the failed batch reached
    // sled's log after all) that same job; never two jobs.
    let (s, _, retried) = create(&d, 6, "b").await;
    assert!(
        [StatusCode::ACCEPTED, StatusCode::OK].contains(&s),
        "{s} {retried}"
    );
    let counted = queued(&d).await;
    let (s, jobs) = d.get("/api/jobs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");
    let waiting = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "queued")
        .count() as u64;
    assert_eq!(counted, waiting, "{jobs}");

    // What it counted is what the store holds: a restart counts the same.
    let d = d
        .restart(Opts {
            paused: true,
            ..DEFAULT
        })
        .await;
    assert_eq!(queued(&d).await, counted);
    let (s, _) = d.post("/api/queue/resume").await;
    assert_eq!(s, StatusCode::OK);
    let c6 = d.wait(&retried).await;
    assert_eq!(c6["state"], "succeeded", "{c6}");
    let (s, list) = d.get("/api/container/list").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["containers_id"], serde_json::json!([5, 6]), "{list}");
    d.stop().await;
}
