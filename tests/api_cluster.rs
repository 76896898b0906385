//! Cluster mode (issue 16) over real HTTP: whole daemons on fake hosts, in process, sharing one
//! fake etcd (`sys::fake_kv`, etcd's semantics for what cluster mode uses). The real etcd, the
//! kernel's flood entries and servers in namespaces are `tests/cluster_root.rs`'s. Every answer
//! is checked against docs/openapi.json.

mod common;

use std::time::Duration;

use common::in_process::{start, Daemon, Opts, DEFAULT};
use creepy_meow::sys::fake_kv::FakeKv;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn member(kv: &FakeKv, host_id: u8) -> Daemon {
    start(Opts {
        cluster: Some(kv.clone()),
        host_id,
        ..DEFAULT
    })
    .await
}

/// Polls `what` until it holds (a background task of the daemon gets there on its own);
/// panics with `why` after 10 s — well under a full reservation sync's 30 s, so a release
/// seen here came from its job's end (or, while etcd was away, from the 2 s retries), not
/// from the periodic pass.
async fn eventually(why: &str, mut what: impl FnMut() -> bool) {
    for _ in 0..100 {
        if what() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {why}");
}

fn reserved(kv: &FakeKv) -> Vec<String> {
    kv.dump()
        .into_keys()
        .filter(|k| !k.contains("/hosts/"))
        .collect()
}

#[tokio::test]
async fn two_servers_cannot_accept_one_id_or_one_address() {
    let kv = FakeKv::new();
    let (a, b) = (member(&kv, 1).await, member(&kv, 2).await);
    let (s, job) = a.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let (s, err) = b.form("id=5&vlan=3&ip=192.168.3.5/24").await;
    assert_eq!(
        (s, &err["code"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{err}"
    );
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("container 5 is held by host 1"),
        "{err}"
    );
    let (s, err) = b.form("id=6&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("address 192.168.2.5 on VLAN 2"),
        "{err}"
    );
    // The refused creates queued nothing on the second server.
    let (_, jobs) = b.get("/api/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    b.assert_metrics(&["creepy_meow_cluster_refused_total{reason=\"held\"} 2"])
        .await;
    assert_eq!(a.wait(&job).await["state"], "succeeded");

    let (s, view) = b.get("/api/cluster/containers").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        view,
        json!({"count": 1, "containers": [{"id": 5, "vlan": 2, "ip": "192.168.2.5/24", "host_id": 1}]})
    );
}

#[tokio::test]
async fn the_members_and_their_standing_are_listed() {
    let kv = FakeKv::new();
    let (a, b) = (member(&kv, 1).await, member(&kv, 2).await);
    let (s, health) = a.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&health["status"], &health["cluster"]["state"]),
        (&json!("ok"), &json!("connected")),
        "{health}"
    );
    assert_eq!(health["fabric"], "unicast");
    let (s, view) = b.get("/api/cluster/hosts").await;
    assert_eq!(s, StatusCode::OK, "{view}");
    let hosts = view["hosts"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value, Value)> = hosts
        .iter()
        .map(|h| {
            (
                h["host_id"].clone(),
                h["underlay"].clone(),
                h["api_url"].clone(),
                h["lease"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!(1),
                json!("10.0.0.1"),
                json!("http://host-1.test:8080"),
                json!("alive")
            ),
            (
                json!(2),
                json!("10.0.0.2"),
                json!("http://host-2.test:8080"),
                json!("alive")
            ),
        ]
    );
    assert_eq!(hosts[0]["vlans"], json!([2, 3, 4]));
    // Each server floods to the other on every VLAN, once it has read the members.
    eventually("server 1 knows server 2", || {
        a.net
            .calls()
            .iter()
            .filter(|c| c.contains("10.0.0.2"))
            .count()
            >= 3
    })
    .await;
    a.assert_metrics(&[
        "creepy_meow_cluster_member 1",
        "creepy_meow_cluster_peers 1",
    ])
    .await;
    let (code, out, err) = a.client(&["cluster", "hosts"]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "cluster test: this server is host 1, connected",
        "{out}"
    );
    assert!(
        lines[3].contains("10.0.0.2") && lines[3].contains("2,3,4"),
        "{out}"
    );

    let alone = start(DEFAULT).await;
    let (s, err) = alone.get("/api/cluster/hosts").await;
    assert_eq!(
        (s, &err["code"]),
        (StatusCode::NOT_FOUND, &json!("not_clustered")),
        "{err}"
    );
    let (_, health) = alone.get("/healthz").await;
    assert!(health.get("cluster").is_none(), "{health}");
}

#[tokio::test]
async fn without_etcd_creates_get_503_and_destroys_release_when_it_is_back() {
    let kv = FakeKv::new();
    let a = member(&kv, 1).await;
    a.create_running(5).await;
    kv.set_down(true);
    let req = a.http.post(a.url("/api/container/create")).form(&[
        ("id", "6"),
        ("vlan", "2"),
        ("ip", "192.168.2.6/24"),
    ]);
    let (s, headers, err) = a.send_full(req).await;
    assert_eq!(
        (s, &err["code"]),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &json!("cluster_unavailable")
        ),
        "{err}"
    );
    assert!(headers.contains_key("retry-after"));
    let (_, jobs) = a.get("/api/jobs?kind=create").await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "the refused create queued nothing: {jobs}"
    );
    // The destroy works without etcd; its release waits for etcd.
    let (s, job) = a.send(a.http.delete(a.url("/api/container/5"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(a.wait(&job).await["state"], "succeeded");
    let (_, health) = a.get("/healthz").await;
    assert_eq!(health["status"], "degraded", "{health}");
    a.assert_metrics(&["creepy_meow_cluster_refused_total{reason=\"unavailable\"} 1"])
        .await;
    assert_eq!(
        reserved(&kv),
        ["test/addresses/2/192.168.2.5", "test/containers/5"]
    );
    kv.set_down(false);
    eventually("the destroy's release lands", || reserved(&kv).is_empty()).await;
    let (s, job) = a.form("id=6&vlan=2&ip=192.168.2.6/24").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
}

#[tokio::test]
async fn a_failed_create_gives_its_reservation_back() {
    let kv = FakeKv::new();
    let a = member(&kv, 1).await;
    a.net.fail_next("create_veth", libc::EBUSY);
    let (s, job) = a.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(a.wait(&job).await["state"], "failed");
    eventually("the failed create's keys are released", || {
        reserved(&kv).is_empty()
    })
    .await;
    let b = member(&kv, 2).await;
    let (s, job) = b.form("id=5&vlan=2&ip=192.168.2.5/24").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
}

#[tokio::test]
async fn a_second_server_with_a_live_members_host_id_is_refused_before_touching_the_host() {
    let kv = FakeKv::new();
    let a = member(&kv, 1).await;
    let opts = Opts {
        cluster: Some(kv.clone()),
        ..DEFAULT
    };
    let dir = a.dir.with_extension("other");
    let cfg = common::in_process::config(&dir, &opts);
    let (host, net, _) = creepy_meow::sys::Host::fake();
    common::in_process::underlay(&host, &net, "10.0.0.7/24").await;
    let kv_dyn: std::sync::Arc<dyn creepy_meow::sys::Kv> = std::sync::Arc::new(kv.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let err = creepy_meow::daemon::run_with(cfg, host, Some(kv_dyn), shutdown, None)
        .await
        .expect_err("a live member holds host ID 1");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.is_usage());
    let text = err.to_string();
    assert!(
        text.contains("host ID 1 is held by another live server"),
        "{text}"
    );
    assert!(text.contains("underlay 10.0.0.1"), "{text}");
    // Read, never changed: no link made, no address added.
    let changes: Vec<String> = net
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("host: link ") && !c.starts_with("host: addresses "))
        .collect();
    assert_eq!(changes, Vec::<String>::new());
    // The member it would have displaced is untouched.
    let (_, health) = a.get("/healthz").await;
    assert_eq!(health["cluster"]["state"], "connected");
}
