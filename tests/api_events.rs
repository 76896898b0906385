//! `GET /api/events` (issue 14) over real HTTP against the whole daemon on a fake host: a
//! create's events in order, a failed one's undos, resuming with `Last-Event-ID` after a
//! disconnect and after a restart, filters, retention, 100 readers that agree while one that
//! reads nothing is cut with `lagged`, and the client commands that follow jobs by events.
//! Every event's data is checked against docs/openapi.json.

mod common;

use common::events::{ends_job, open, Sleeper};
use common::in_process::{start, Daemon, Opts, DEFAULT};
use creepy_meow::client::events::ServerEvent;
use serde_json::Value;

const PAUSED: Opts = Opts {
    paused: true,
    ..DEFAULT
};

async fn create(d: &Daemon, id: u32) -> String {
    let (s, job) = d
        .form(&format!("id={id}&vlan=2&ip=192.168.2.{id}/24"))
        .await;
    assert_eq!(s, 202, "{job}");
    job["job_id"].as_str().unwrap().to_string()
}

/// `(type, step, state)` of each event.
fn shape(events: &[ServerEvent]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let d = e.json();
            let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (e.event.clone(), text("step"), text("state"))
        })
        .collect()
}

fn seqs(events: &[ServerEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.expect("an id")).collect()
}

fn expect(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// The step names of job `job`, in order.
async fn step_names(d: &Daemon, job: &str) -> Vec<String> {
    let (_, body) = d.get(&format!("/api/jobs/{job}")).await;
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_creates_events_arrive_in_order_queued_each_step_running_then_done_succeeded() {
    let d = start(PAUSED).await;
    let mut tail = open(&d, "", None).await;
    let job = create(&d, 5).await;
    d.post("/api/queue/resume").await;
    let events = tail.until(|e| ends_job(e, &job)).await;
    let mut want = vec![("job", "", "queued"), ("job", "", "running")];
    let names = step_names(&d, &job).await;
    for name in &names {
        want.push(("step", name, "running"));
        want.push(("step", name, "done"));
    }
    want.push(("job", "", "succeeded"));
    assert_eq!(shape(&events), expect(&want));
    let ids = seqs(&events);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    for e in &events {
        let data = e.json();
        assert_eq!(
            (data["job_id"].as_str(), data["container_id"].as_u64()),
            (Some(job.as_str()), Some(5))
        );
        assert_eq!(data["seq"].as_u64(), e.id);
    }
    d.stop().await;
}

#[tokio::test]
async fn a_failed_creates_events_include_each_undo_newest_first() {
    let d = start(DEFAULT).await;
    let mut tail = open(&d, "", None).await;
    d.net.fail_next("create_veth", libc::EBUSY);
    let job = create(&d, 5).await;
    let events = tail.until(|e| ends_job(e, &job)).await;
    let steps = shape(&events);
    let failed = steps
        .iter()
        .position(|s| s.2 == "failed" && s.0 == "step")
        .expect("a failed step");
    // Every step done before the failure is undone after it, newest first.
    let done: Vec<String> = steps[..failed]
        .iter()
        .filter(|s| s.0 == "step" && s.2 == "done")
        .map(|s| s.1.clone())
        .collect();
    assert!(!done.is_empty(), "{steps:?}");
    let undone: Vec<String> = steps[failed..]
        .iter()
        .filter(|s| s.0 == "step" && s.2 == "undone")
        .map(|s| s.1.clone())
        .collect();
    let mut newest_first = done.clone();
    newest_first.reverse();
    // The failed step itself is undone first (it may have changed the host before failing).
    assert_eq!(undone[1..], newest_first[..], "{steps:?}");
    assert_eq!(undone[0], steps[failed].1);
    let undoing = steps.iter().filter(|s| s.2 == "undoing").count();
    assert_eq!(undoing, undone.len(), "each undo is announced: {steps:?}");
    let last = events.last().unwrap().json();
    assert_eq!(last["state"], "failed");
    assert!(
        last["error"].as_str().unwrap().contains("create_veth"),
        "{last}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let d = start(PAUSED).await;
    let mut whole = open(&d, "", None).await;
    let mut first = open(&d, "", None).await;
    let jobs = [
        create(&d, 5).await,
        create(&d, 6).await,
        create(&d, 7).await,
    ];
    d.post("/api/queue/resume").await;
    // Disconnect mid-job: after the third event.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(first.next().await.unwrap());
    }
    drop(first);
    let mut again = open(&d, "since=0", seen.last().unwrap().id).await;
    seen.extend(again.until(|e| ends_job(e, &jobs[2])).await);
    let reference = whole.until(|e| ends_job(e, &jobs[2])).await;
    assert_eq!(seqs(&seen), seqs(&reference));
    assert_eq!(
        seen.iter().map(|e| &e.data).collect::<Vec<_>>(),
        reference.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
    d.stop().await;
}

#[tokio::test]
async fn after_a_restart_resuming_from_an_old_id_still_works_and_numbers_go_on() {
    let d = start(DEFAULT).await;
    let mut tail = open(&d, "since=0", None).await;
    let job = create(&d, 5).await;
    let before = tail.until(|e| ends_job(e, &job)).await;
    drop(tail);
    let d = d.restart(DEFAULT).await;
    let middle = before[before.len() / 2].id.unwrap();
    let mut resumed = open(&d, "", Some(middle)).await;
    let replay = resumed.until(|e| ends_job(e, &job)).await;
    let tail_of_before: Vec<&ServerEvent> = before.iter().filter(|e| e.id > Some(middle)).collect();
    assert_eq!(replay.iter().collect::<Vec<_>>(), tail_of_before);
    let next = create(&d, 6).await;
    let live = resumed.until(|e| ends_job(e, &next)).await;
    assert_eq!(
        live[0].id,
        Some(before.last().unwrap().id.unwrap() + 1),
        "numbers go on after a restart"
    );
    d.stop().await;
}

#[tokio::test]
async fn filters_keep_one_job_or_one_container_and_a_job_filter_starts_at_its_first_event() {
    let d = start(DEFAULT).await;
    let a = create(&d, 5).await;
    let b = create(&d, 6).await;
    d.wait(&serde_json::json!({ "job_id": b })).await;
    // No starting point: a job's whole history, then the job's end closes nothing (the
    // stream stays open), so read until its last event.
    let events = open(&d, &format!("job={a}"), None)
        .await
        .until(|e| ends_job(e, &a))
        .await;
    assert_eq!(events[0].json()["state"], "queued");
    assert!(events.iter().all(|e| e.json()["job_id"] == a));
    let only6 = open(&d, "container=6&since=0", None)
        .await
        .until(|e| ends_job(e, &b))
        .await;
    assert!(
        only6.iter().all(|e| e.json()["container_id"] == 6),
        "{only6:?}"
    );
    for (query, code) in [
        ("since=-1", "invalid_field"),
        ("job=nope", "invalid_field"),
        ("container=0", "invalid_field"),
    ] {
        let (s, body) = d.get(&format!("/api/events?{query}")).await;
        assert_eq!(
            (s.as_u16(), body["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let (s, _) = d
        .get(&format!("/api/events?job={}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, 404);
    let bad = d
        .http
        .get(d.url("/api/events"))
        .header("Last-Event-ID", "x");
    let (s, body) = d.send(bad).await;
    assert_eq!(
        (s.as_u16(), body["code"].as_str()),
        (400, Some("invalid_header"))
    );
    d.stop().await;
}

#[tokio::test]
async fn a_container_event_says_when_a_stop_changes_the_desired_state() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let mut tail = open(&d, "container=5", None).await;
    let (s, job) = d.post("/api/container/5/stop").await;
    assert_eq!(s, 202);
    let job = job["job_id"].as_str().unwrap().to_string();
    let events = tail.until(|e| ends_job(e, &job)).await;
    let desired: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "container")
        .map(|e| e.json())
        .collect();
    assert_eq!(desired.len(), 1, "{events:?}");
    assert_eq!(
        (desired[0]["state"].as_str(), desired[0]["desired"].as_str()),
        (Some("active"), Some("stopped"))
    );
    d.stop().await;
}

/// Queues a create of container `id` and cancels it (the worker is paused): two events.
async fn queue_and_cancel(d: &Daemon, id: u32) {
    let job = create(d, id).await;
    let (s, _) = d
        .send(d.http.delete(d.url(&format!("/api/jobs/{job}"))))
        .await;
    assert_eq!(s, 200);
}

/// Whether `e` says the create of container 250 (the end marker) was cancelled.
fn marker(e: &ServerEvent) -> bool {
    let d = e.json();
    e.event == "job" && d["container_id"] == 250 && d["state"] == "cancelled"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_readers_see_one_sequence_while_creates_run() {
    let d = start(DEFAULT).await;
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut tail = open(&d, "", None).await;
        readers.push(tokio::spawn(async move { seqs(&tail.until(marker).await) }));
    }
    assert_eq!(d.metric("creepy_meow_event_streams").await, 100);
    let jobs = futures::future::join_all((11..=20).map(|id| create(&d, id))).await;
    for job in &jobs {
        d.wait(&serde_json::json!({ "job_id": job })).await;
    }
    d.post("/api/queue/pause").await;
    queue_and_cancel(&d, 250).await;
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await.expect("a reader"));
    }
    assert!(
        seen.iter().all(|s| s == &seen[0]),
        "every reader sees one sequence"
    );
    assert!(seen[0].windows(2).all(|w| w[1] == w[0] + 1));
    // Each create: queued, running, two events per step, its end.
    let steps = step_names(&d, &jobs[0]).await.len();
    assert_eq!(seen[0].len(), 10 * (3 + 2 * steps) + 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_with_lagged_and_nobody_waits_for_it() {
    let d = start(PAUSED).await;
    let mut reader = open(&d, "", None).await;
    let reader = tokio::spawn(async move { seqs(&reader.until(marker).await) });
    let sleeper = Sleeper::connect(&d, "since=0").await;
    // Sixty-four creates at a time, each queued and cancelled, until the sleeper is cut: the
    // kernel's socket buffers hold thousands of events before its feed can fall behind.
    let mut rounds = 0;
    while d.metric("creepy_meow_event_streams_lagged_total").await == 0 {
        rounds += 1;
        assert!(rounds <= 1000, "never cut");
        futures::future::join_all((11..=74).map(|id| queue_and_cancel(&d, id))).await;
    }
    queue_and_cancel(&d, 250).await;
    let all = reader.await.expect("the reader");
    assert_eq!(
        all.len(),
        2 * (64 * rounds + 1),
        "the reader that reads got everything"
    );
    let cut = sleeper.wake().await;
    let (lagged, before) = cut.split_last().expect("events, then lagged");
    assert_eq!(lagged.event, "lagged", "{lagged:?}");
    let resume = lagged.json()["since"].as_u64().unwrap();
    assert_eq!(
        Some(resume),
        before.last().unwrap().id,
        "it resumes after the last it got"
    );
    assert_eq!(seqs(before)[..], all[..before.len()]);
    // The worker never waited for it.
    d.post("/api/queue/resume").await;
    let job = create(&d, 99).await;
    assert_eq!(
        d.wait(&serde_json::json!({ "job_id": job })).await["state"],
        "succeeded"
    );
    d.stop().await;
}

#[tokio::test]
async fn the_client_follows_a_create_from_its_events_and_events_job_ends_with_it() {
    let d = start(DEFAULT).await;
    d.net.fail_next("create_veth", libc::EBUSY);
    let (code, out, err) = d.client(&common::CREATE_5).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("✗ create_veth"), "{out}");
    assert!(out.contains("undone"), "each undo is shown: {out}");
    let (_, jobs) = d.get("/api/jobs").await;
    let job = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let (code, out, err) = d.client(&["events", "--job", &job, "--json"]).await;
    assert_eq!(code, Some(1), "the job failed: {out}{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["state"], "queued");
    assert_eq!(lines.last().unwrap()["state"], "failed");
    d.stop().await;
}

#[tokio::test]
async fn reconcile_passes_tell_each_drift_and_each_health_change() {
    let d = start(DEFAULT).await;
    d.create_running(5).await;
    let mut tail = open(&d, "container=5", None).await;
    d.lxc.stop_by_hand("container5");
    let (s, report) = d.post("/api/reconcile").await;
    assert_eq!(s, 200, "{report}");
    let repair = report["drift"][0]["job_id"].as_str().unwrap().to_string();
    let seen = tail.until(|e| ends_job(e, &repair)).await;
    let found: Vec<(String, String)> = seen
        .iter()
        .filter(|e| e.event == "reconcile" || e.event == "health")
        .map(|e| {
            (
                e.event.clone(),
                e.json()["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        found,
        vec![pair("reconcile", "stopped"), pair("health", "stopped")]
    );
    let drift = seen.iter().find(|e| e.event == "reconcile").unwrap().json();
    assert_eq!(drift["job_id"], repair.as_str());
    // Started again by the repair: the next pass finds it well, and says so once.
    d.post("/api/reconcile").await;
    let back = tail.until(|e| e.event == "health").await;
    assert_eq!(back.last().unwrap().json()["state"], "ok");
    d.post("/api/reconcile").await;
    let (s, _) = d.post("/api/queue/pause").await;
    assert_eq!(s, 200);
    let (_, job) = d.form("id=6&vlan=2&ip=192.168.2.6/24").await;
    let mut all = open(&d, "since=0", None).await;
    let id = job["job_id"].as_str().unwrap().to_string();
    let history = all
        .until(|e| e.event == "job" && e.json()["job_id"] == id.as_str())
        .await;
    let health = history.iter().filter(|e| e.event == "health").count();
    assert_eq!(
        health, 2,
        "a pass that changes nothing tells nothing: {history:?}"
    );
    d.stop().await;
}
