//! The HTTP API over real HTTP on 127.0.0.1:0, against the whole daemon (store, worker, engine)
//! on a fake host: every endpoint and every error code. No root needed. Every response is also
//! checked against docs/openapi.json.

#[path = "support/openapi.rs"]
mod openapi;

use std::net::SocketAddr;
use std::path::PathBuf;

use creepy_meow::config::DaemonConfig;
use creepy_meow::fabric::FabricConfig;
use creepy_meow::model::{parse_vlan_list, HostId};
use creepy_meow::queue::StoreOptions;
use creepy_meow::sys::Host;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Daemon {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Opts {
    token: Option<&'static str>,
    paused: bool,
    max_queued: usize,
}

const DEFAULT: Opts = Opts {
    token: None,
    paused: false,
    max_queued: 10_000,
};

async fn start(opts: Opts) -> Daemon {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cm-api-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config(&dir, &opts);
    let (host, _net, _lxc) = Host::fake();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        creepy_meow::daemon::run(cfg, host, sd, Some(tx))
            .await
            .expect("daemon runs");
    });
    let addr = rx.await.expect("daemon ready");
    Daemon {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        shutdown,
        task: Some(task),
        dir,
    }
}

fn config(dir: &std::path::Path, opts: &Opts) -> DaemonConfig {
    DaemonConfig {
        fabric: FabricConfig {
            host_id: HostId::new(1).unwrap(),
            underlay: "eth1".into(),
            vlans: parse_vlan_list("2,3,4").unwrap(),
            mtu: None,
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        lxc_path: dir.join("lxc"),
        template: "busybox".into(),
        template_args: vec![],
        token: opts.token.map(String::from),
        log_format: creepy_meow::cli::LogFormat::Text,
        paused: opts.paused,
        store: StoreOptions {
            max_queued: opts.max_queued,
            ..StoreOptions::default()
        },
    }
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let req = req.build().expect("request");
        let (method, path) = (
            req.method().as_str().to_lowercase(),
            req.url().path().to_string(),
        );
        let resp = self.http.execute(req).await.expect("request");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        openapi::conform(&method, &path, status.as_u16(), &ctype, &body);
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    async fn form(&self, body: &str) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url("/api/container/create"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        self.send(req).await
    }

    async fn wait(&self, job: &Value) -> Value {
        let id = job["job_id"].as_str().expect("job_id");
        let (s, body) = self.get(&format!("/api/jobs/{id}/wait?timeout=10")).await;
        assert_eq!(s, StatusCode::OK);
        body
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

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
async fn client_mistakes_get_4xx_with_a_json_sentence_and_the_daemon_keeps_serving() {
    let d = start(DEFAULT).await;
    let (s, first) = d.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let cases: [(&str, u16, &str, Option<&str>); 11] = [
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
    assert_eq!(d.get("/healthz").await.0, StatusCode::OK);
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
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_creepy-meow"));
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
