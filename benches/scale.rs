//! Scale (issue 7, part 4): `CMBENCH_SCALE_N` (default 500) busybox containers on one simulated
//! server across VLANs 2, 3 and 4, all queued at once through the API and created by the one
//! worker. Takes about N × 0.55 s here (≈ 5 minutes for 500) plus ≈ 15 s of teardown.
//!
//! Measured: each create's duration (the job's `started_at` → `finished_at`), the first 50
//! against the last 50; `GET /api/container/list` latency (200 sequential requests) and the
//! daemon's RSS (`VmRSS`) at 0 containers and at every tenth of the way. Baseline in the same
//! run: the floor (`lxc-create` + `lxc-start -d`, 5 containers on another LXC path) before the
//! first create and after the last, which shows how much of any slow-down is LXC's own.
//!
//! Targets: last 50 ≤ 1.2 × first 50; list at 500 ≤ 5 ms; RSS ≤ 30 MB.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::daemon::{Daemon, PORT};
use common::harness::lab::run_checked;
use common::http::{json, Conn, Req};
use common::lab::Lab;
use common::stats::{between, ms, ratio, rss_kib, verdict, Summary};

const BENCH: &str = "scale";
const WINDOW: usize = 50;
const FLOOR_RUNS: usize = 5;

fn main() {
    let n = common::env_usize("CMBENCH_SCALE_N", 500);
    assert!(
        n >= 2 * WINDOW,
        "CMBENCH_SCALE_N must be at least {}",
        2 * WINDOW
    );
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, n));
}

/// One checkpoint: containers existing, list latency, RSS.
struct Point {
    containers: usize,
    list: Summary,
    rss_kib: u64,
    /// Open file descriptors of the daemon: a leak per create would show here.
    fds: usize,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn list_latency() -> Summary {
    let mut conn = Conn::connect(common::http::daemon_addr(PORT))
        .await
        .expect("connect");
    let req = Req::get("/api/container/list");
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t0 = Instant::now();
        let (status, _) = conn.send(&req).await.expect("list");
        assert_eq!(status, 200);
        lat.push(t0.elapsed());
    }
    Summary::of(&lat)
}

/// `lxc-create` + `lxc-start -d` of `FLOOR_RUNS` containers named `<tag>N` on `lxc`.
fn floor(lxc: &Path, conf: &Path, tag: &str) -> Summary {
    let (p, conf) = (lxc.display().to_string(), conf.display().to_string());
    let times: Vec<Duration> = (0..FLOOR_RUNS)
        .map(|i| {
            let name = format!("{tag}{i}");
            let t0 = Instant::now();
            run_checked(
                Command::new("lxc-create")
                    .args(["-P", &p, "-n", &name, "-t", "busybox", "-f", &conf]),
            );
            run_checked(Command::new("lxc-start").args(["-P", &p, "-n", &name, "-d"]));
            t0.elapsed()
        })
        .collect();
    Summary::of(&times)
}

async fn done_count(n: usize) -> usize {
    let q = json(PORT, &Req::get("/api/queue"), 200).await;
    let pending = q["queued"].as_u64().unwrap_or(0) + q["running"].as_u64().unwrap_or(0);
    n - pending as usize
}

async fn run(lab: &Lab, n: usize) {
    let (floor_lxc, conf) = (lab.path("lxc-floor"), lab.empty_net_conf());
    let floor_before = floor(&floor_lxc, &conf, "fa");
    let daemon = Daemon::start(&lab.path("data"), &lab.path("lxc"), &["--paused"]).await;
    let mut points = vec![Point {
        containers: 0,
        list: list_latency().await,
        rss_kib: rss_kib(daemon.pid()),
        fds: fds(daemon.pid()),
    }];
    for id in 1..=n as u32 {
        let form = common::create_form(id, (2 + id % 3) as u8);
        json(PORT, &Req::post_form("/api/container/create", form), 202).await;
    }
    json(
        PORT,
        &Req::post_form("/api/queue/resume", String::new()),
        200,
    )
    .await;
    let started = Instant::now();
    let step = n.div_ceil(10);
    let mut next = step;
    loop {
        let done = done_count(n).await;
        if done >= next.min(n) {
            points.push(Point {
                containers: done,
                list: list_latency().await,
                rss_kib: rss_kib(daemon.pid()),
                fds: fds(daemon.pid()),
            });
            println!("scale: {done}/{n} created after {:.0?}", started.elapsed());
            next += step;
        }
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let jobs = json(PORT, &Req::get(format!("/api/jobs?limit={n}")), 200).await;
    let mut jobs: Vec<Value> = jobs["jobs"].as_array().expect("jobs").clone();
    jobs.sort_by_key(|j| j["seq"].as_u64());
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "succeeded").collect();
    assert!(
        failed.is_empty(),
        "{} creates failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    let durations: Vec<Duration> = jobs
        .iter()
        .map(|j| between(&j["started_at"], &j["finished_at"]))
        .collect();
    let floor_after = floor(&floor_lxc, &conf, "fz");
    drop(daemon);
    report(n, took, &durations, &points, floor_before, floor_after);
}

fn report(
    n: usize,
    took: Duration,
    durations: &[Duration],
    points: &[Point],
    floor_before: Summary,
    floor_after: Summary,
) {
    let first = Summary::of(&durations[..WINDOW]);
    let last = Summary::of(&durations[durations.len() - WINDOW..]);
    let mut out = format!(
        "## Scale: {n} containers on one server, VLANs 2/3/4, queued at once\n\n\
         all {n} created in {:.0} s ({:.2} creates/s)\n\n\
         | creates (job started → finished) | p50 ms | p95 ms | mean ms |\n|---|---|---|---|\n",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
    );
    for (label, s) in [
        ("first 50", first),
        ("last 50", last),
        ("floor before (lxc-create + lxc-start, 5)", floor_before),
        ("floor after, with all containers up (5)", floor_after),
    ] {
        out += &format!(
            "| {label} | {} | {} | {} |\n",
            ms(s.p50),
            ms(s.p95),
            ms(s.mean)
        );
    }
    out += "\n| containers | list p50 ms | list p99 ms | daemon RSS MiB | daemon fds |\n|---|---|---|---|---|\n";
    for p in points {
        out += &format!(
            "| {} | {} | {} | {:.1} | {} |\n",
            p.containers,
            ms(p.list.p50),
            ms(p.list.p99),
            p.rss_kib as f64 / 1024.0,
            p.fds
        );
    }
    let end = points.last().expect("points");
    let slow = last.mean.as_secs_f64() / first.mean.as_secs_f64();
    out += &format!(
        "\nlast 50 / first 50 (mean): {} (floor after / before: {}): target ≤ 1.2×: **{}**\n\n\
         list at {}: p50 {} ms, p99 {} ms: target ≤ 5 ms: **{}**\n\n\
         RSS at {}: {:.1} MiB: target ≤ 30 MB: **{}**\n",
        ratio(last.mean, first.mean),
        ratio(floor_after.mean, floor_before.mean),
        verdict(slow <= 1.2),
        end.containers,
        ms(end.list.p50),
        ms(end.list.p99),
        verdict(end.list.p50 <= Duration::from_millis(5)),
        end.containers,
        end.rss_kib as f64 / 1024.0,
        verdict(end.rss_kib * 1024 <= 30_000_000),
    );
    common::emit(BENCH, &out);
}
