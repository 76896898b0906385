//! `Idempotency-Key` (issue 14) over real HTTP against the whole daemon on a fake host: racing
//! retries of one key make one job and every answer names it, the retries are told apart from
//! the first answer, another request with the key is refused, a bad key is a 400, and the key
//! outlives the daemon. Every answer is also checked against docs/openapi.json.

mod common;

use common::in_process::{start, Daemon, Opts, DEFAULT};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A create of container `id` with idempotency key `key`; (status, replayed header, body).
async fn keyed_create(d: &Daemon, key: &str, id: u32) -> (StatusCode, bool, Value) {
    let (s, headers, body) = d.keyed_create(key, id).await;
    let replayed = headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (s, replayed, body)
}

#[tokio::test]
async fn twenty_racing_posts_with_one_key_make_one_job_and_all_name_it() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let answers = futures::future::join_all((0..20).map(|_| keyed_create(&d, "order-42", 5))).await;
    let first: Vec<&(StatusCode, bool, Value)> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    let job = &first[0].2["job_id"];
    for (s, replayed, body) in &answers {
        assert_eq!(&body["job_id"], job, "{body}");
        assert_eq!(*replayed, *s == StatusCode::OK, "{s} {body}");
        assert!(
            *s == StatusCode::OK || *s == StatusCode::ACCEPTED,
            "{s} {body}"
        );
    }
    let (_, jobs) = d.get("/api/jobs").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs["jobs"][0]["idempotency_key"], "order-42");
    d.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_a_bad_key_is_a_400() {
    let d = start(DEFAULT).await;
    let (s, _, first) = keyed_create(&d, "k", 5).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (s, _, body) = keyed_create(&d, "k", 6).await;
    assert_eq!(
        (s, &body["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("idempotency_key_reused")
        )
    );
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains(first["job_id"].as_str().unwrap()));
    // The same key on another endpoint is another request too.
    let req = d
        .http
        .delete(d.url("/api/container/5"))
        .header("Idempotency-Key", "k");
    let (s, body) = d.send(req).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for bad in ["", &"x".repeat(256)] {
        let req = d
            .http
            .delete(d.url("/api/container/5"))
            .header("Idempotency-Key", bad);
        let (s, body) = d.send(req).await;
        assert_eq!(
            (s, &body["code"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_header")),
            "{bad:?}"
        );
    }
    // The same create sent as JSON is the same request: a replay, with the job as it is now.
    let req = d
        .http
        .post(d.url("/api/container/create"))
        .header("Idempotency-Key", "k")
        .json(&json!({"id": 5, "vlan": 2, "ip": "192.168.2.5/24"}));
    let (s, headers, body) = d.send_full(req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body["job_id"], first["job_id"]);
    d.stop().await;
}

#[tokio::test]
async fn a_key_outlives_the_daemon_and_works_on_every_endpoint_that_makes_a_job() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let stop = || {
        d.http
            .post(d.url("/api/container/5/stop"))
            .header("Idempotency-Key", "stop-5")
    };
    let (s, first) = d.send(stop()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    assert_eq!(d.wait(&first).await["state"], "succeeded");
    let d = d.restart(DEFAULT).await;
    let stop = d
        .http
        .post(d.url("/api/container/5/stop"))
        .header("Idempotency-Key", "stop-5");
    let (s, headers, again) = d.send_full(stop).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(
        (&again["job_id"], &again["state"]),
        (&first["job_id"], &json!("succeeded"))
    );
    let build = || {
        d.http
            .post(d.url("/api/images/busybox/build"))
            .header("Idempotency-Key", "b1")
    };
    let (s, b) = d.send(build()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, b2) = d.send(build()).await;
    assert_eq!((s, &b2["job_id"]), (StatusCode::OK, &b["job_id"]));
    d.stop().await;
}

#[tokio::test]
async fn the_client_sends_a_fresh_key_with_each_command() {
    let d = start(DEFAULT).await;
    for args in [
        &common::CREATE_5[..],
        &["stop", "5"],
        &["build-image", "busybox"],
    ] {
        let (code, out, err) = d.client(args).await;
        assert_eq!(code, Some(0), "{args:?}: {out}\n{err}");
    }
    let (_, jobs) = d.get("/api/jobs").await;
    let keys: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["idempotency_key"].as_str().expect("a key"))
        .collect();
    assert_eq!(keys.len(), 3, "{jobs}");
    assert!(
        keys.iter().all(|k| uuid::Uuid::parse_str(k).is_ok()),
        "{keys:?}"
    );
    assert!(keys[0] != keys[1] && keys[1] != keys[2], "{keys:?}");
    d.stop().await;
}
