//! Images (issue 13) over real HTTP against the whole daemon on a fake host, in process: the
//! first create builds the image, `POST /api/images/<name>/build` makes a new version as a job,
//! clones keep their version until destroyed, and the errors. Every answer is also checked
//! against docs/openapi.json.

mod common;

use common::in_process::{start, Daemon, Opts, DEFAULT};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `GET /api/images`: (version, clones) of template `name`'s image versions, oldest first.
async fn versions(d: &Daemon, name: &str) -> Vec<(u64, Vec<String>)> {
    let (s, body) = d.get("/api/images").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let image = body["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in {body}"));
    image["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let clones = v["clones"].as_array().unwrap();
            let clones = clones.iter().map(|c| c.as_str().unwrap().to_string());
            (v["version"].as_u64().unwrap(), clones.collect())
        })
        .collect()
}

async fn build(d: &Daemon, name: &str) -> (StatusCode, Value) {
    d.post(&format!("/api/images/{name}/build")).await
}

#[tokio::test]
async fn the_first_create_builds_the_image_and_a_rebuild_leaves_clones_on_theirs() {
    let d = start(DEFAULT).await;
    let (_, body) = d.get("/api/images").await;
    assert_eq!(body["clone"], "overlay");
    assert_eq!(versions(&d, "busybox").await, []);

    d.create_running(5).await;
    assert_eq!(
        versions(&d, "busybox").await,
        [(1, vec!["container5".into()])]
    );

    let (s, accepted) = build(&d, "busybox").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        (&accepted["kind"], &accepted["template"]),
        (&json!("build_image"), &json!("busybox"))
    );
    assert!(
        accepted.get("id").is_none(),
        "a build has no container: {accepted}"
    );
    let job = d.wait(&accepted).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job.get("container_id").is_none(), "{job}");
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build_image", "remove_unused_images"]);
    assert_eq!(
        versions(&d, "busybox").await,
        [(1, vec!["container5".into()]), (2, vec![])],
        "container5 keeps version 1"
    );

    d.create_running(6).await;
    let (s, destroy) = d.send(d.http.delete(d.url("/api/container/5"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{destroy}");
    assert_eq!(d.wait(&destroy).await["state"], "succeeded");
    assert_eq!(
        versions(&d, "busybox").await,
        [(2, vec!["container6".into()])],
        "version 1 went with its last clone"
    );
    assert!(!d.lxc.names().contains(&"image-busybox-v1".to_string()));
    d.stop().await;
}

#[tokio::test]
async fn a_build_is_refused_for_a_template_not_offered_or_while_one_is_pending() {
    let d = start(Opts {
        paused: true,
        ..DEFAULT
    })
    .await;
    let (s, body) = build(&d, "ubuntu").await;
    assert_eq!(
        (s, &body["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("busybox"),
        "{body}"
    );
    let (s, first) = build(&d, "busybox").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (s, body) = build(&d, "busybox").await;
    assert_eq!(
        (s, &body["code"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{body}"
    );
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains(first["job_id"].as_str().unwrap()));
    // Once it ended, another may be asked for.
    let (s, _) = d.post("/api/queue/resume").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d.wait(&first).await["state"], "succeeded");
    let (s, again) = build(&d, "busybox").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    assert_eq!(d.wait(&again).await["state"], "succeeded");
    assert_eq!(
        versions(&d, "busybox").await,
        [(2, vec![])],
        "v1 had no clone"
    );
    d.stop().await;
}

#[tokio::test]
async fn with_clone_off_containers_come_from_their_template_and_builds_are_refused() {
    let d = start(Opts {
        clone: false,
        ..DEFAULT
    })
    .await;
    let (_, body) = d.get("/api/images").await;
    assert_eq!(
        (&body["clone"], &body["images"]),
        (&json!("off"), &json!([]))
    );
    let (s, body) = build(&d, "busybox").await;
    assert_eq!(
        (s, &body["code"]),
        (StatusCode::CONFLICT, &json!("images_off")),
        "{body}"
    );
    d.create_running(5).await;
    let calls = d.net.calls();
    assert!(
        calls.iter().any(|c| c.ends_with("lxc-create container5")),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("lxc-copy")), "{calls:?}");
    d.stop().await;
}
