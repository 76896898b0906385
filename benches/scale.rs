//! Scale (issue 7, part 4; issue 13): `CMBENCH_SCALE_N` (default 500) busybox containers on one
//! simulated server across VLANs 2, 3 and 4, all queued at once through the API and created by
//! the one worker, each a clone of the image its first create built. Takes about N × 0.03 s
//! here plus ≈ 15 s of teardown.
//!
//! Measured: each create's duration (the job's `started_at` → `finished_at`), the first 50
//! against the last 50 (the very first, which builds the image, is left out of both);
//! `GET /api/container/list` latency (200 sequential requests) and the daemon's RSS (`VmRSS`)
//! at 0 containers and at every tenth of the way; the disk each container uses (its directory:
//! config and overlay upper directory) beside the image's. Baseline in the same run: the floor
//! (`lxc-copy -s -B overlay` of a busybox image + `lxc-start -d`, 20 containers on another LXC
//! path; 8 after) before the first create and after the last, which shows how much of any slow-down is
//! LXC's own.
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
use creepy_meow::sys::lxc::{Lxc, LxcTools};
use creepy_meow::sys::lxc_files::disk_usage;

const BENCH: &str = "scale";
const WINDOW: usize = 50;
/// Floor containers before the first create (stopped again after) and after the last: each
/// running busybox container holds six ptys of the host's ≈ 3,070 (see
/// benches/common/clones.rs), so with 500 up only a few more start.
const FLOOR_RUNS: usize = 20;
const FLOOR_RUNS_AFTER: usize = 8;

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

/// The floor's image, `base` in LXC path `base_path` (beside the server's directory: see
/// `common::clones`), made as the daemon makes its images.
async fn floor_image(base_path: &Path) {
    let tools = LxcTools::new(base_path, "busybox", Vec::new()).expect("the base's LXC path");
    tools
        .create(FLOOR_BASE, None)
        .await
        .expect("create the floor's image");
}

const FLOOR_BASE: &str = "base";

/// `lxc-copy -s -B overlay` of the floor's image + `lxc-start -d` of `runs` containers
/// named `<tag>N` on `lxc`.
fn floor(base_path: &Path, lxc: &Path, tag: &str, runs: usize) -> Summary {
    let (base, p) = (base_path.display().to_string(), lxc.display().to_string());
    let times: Vec<Duration> = (0..runs)
        .map(|i| {
            let name = format!("{tag}{i}");
            let t0 = Instant::now();
            run_checked(Command::new("lxc-copy").args([
                "-P", &base, "-n", FLOOR_BASE, "-p", &p, "-N", &name, "-s", "-B", "overlay",
            ]));
            run_checked(Command::new("lxc-start").args(["-P", &p, "-n", &name, "-d"]));
            t0.elapsed()
        })
        .collect();
    Summary::of(&times)
}

/// `lxc-stop -k` of the floor's containers `<tag>N`.
fn stop_all(lxc: &Path, tag: &str) {
    let p = lxc.display().to_string();
    for i in 0..FLOOR_RUNS {
        let name = format!("{tag}{i}");
        run_checked(Command::new("lxc-stop").args(["-P", &p, "-n", &name, "-k"]));
    }
}

/// Bytes on disk under each `container<ID>` directory of `lxc`, and under each image's.
fn disk(lxc: &Path) -> (Vec<u64>, Vec<(String, u64)>) {
    let (mut containers, mut images) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(lxc).expect("the LXC path").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = disk_usage(&entry.path()).expect("disk usage");
        if name.starts_with("container") {
            containers.push(bytes);
        } else if name.starts_with("image-") {
            images.push((name, bytes));
        }
    }
    (containers, images)
}

async fn done_count(n: usize) -> usize {
    let q = json(PORT, &Req::get("/api/queue"), 200).await;
    let pending = q["queued"].as_u64().unwrap_or(0) + q["running"].as_u64().unwrap_or(0);
    n - pending as usize
}

async fn run(lab: &Lab, n: usize) {
    let (floor_lxc, floor_base) = (lab.path("lxc-floor"), lab.beside("floor-base"));
    floor_image(&floor_base).await;
    let floor_before = floor(&floor_base, &floor_lxc, "fa", FLOOR_RUNS);
    // Stopped again, for the ptys (FLOOR_RUNS_AFTER).
    stop_all(&floor_lxc, "fa");
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
    let floor_after = floor(&floor_base, &floor_lxc, "fz", FLOOR_RUNS_AFTER);
    let disk = disk(&lab.path("lxc"));
    drop(daemon);
    report(
        n,
        took,
        &durations,
        &points,
        (floor_before, floor_after),
        &disk,
    );
    common::emit(BENCH, &steps_table(&jobs));
}

/// Each step's p50 / p95 over the first and the last window (the first create left out).
fn steps_table(jobs: &[Value]) -> String {
    let windows = [&jobs[1..=WINDOW], &jobs[jobs.len() - WINDOW..]];
    // `time` of every job of each window that has one, as "p50 / p95".
    let cells = |time: &dyn Fn(&Value) -> Option<Duration>| -> Vec<String> {
        windows
            .iter()
            .map(|js| {
                let s = Summary::of(&js.iter().filter_map(time).collect::<Vec<_>>());
                format!("{} / {}", ms(s.p50), ms(s.p95))
            })
            .collect()
    };
    let mut out = String::from("| step, p50 / p95 ms | first 50 | last 50 |\n|---|---|---|\n");
    for step in creepy_meow::spec::StepName::CREATE {
        let c = cells(&|j: &Value| {
            let steps = j["steps"].as_array()?;
            let s = steps.iter().find(|s| s["name"] == step.as_str())?;
            Some(between(&s["started_at"], &s["finished_at"]))
        });
        out += &format!("| {step} | {} | {} |\n", c[0], c[1]);
    }
    // Job started → its first step started: the checks against the host (`check_host`).
    let c = cells(&|j: &Value| {
        let first = &j["steps"].as_array()?[0];
        Some(between(&j["started_at"], &first["started_at"]))
    });
    out += &format!("| before the first step | {} | {} |\n", c[0], c[1]);
    out
}

fn report(
    n: usize,
    took: Duration,
    durations: &[Duration],
    points: &[Point],
    (floor_before, floor_after): (Summary, Summary),
    (per_container, images): &(Vec<u64>, Vec<(String, u64)>),
) {
    // The first create builds the image: reported on its own, not in the first window.
    let cold = durations[0];
    let first = Summary::of(&durations[1..=WINDOW]);
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
        ("floor before (lxc-copy -s + lxc-start, 20)", floor_before),
        ("floor after, with all containers up (8)", floor_after),
    ] {
        out += &format!(
            "| {label} | {} | {} | {} |\n",
            ms(s.p50),
            ms(s.p95),
            ms(s.mean)
        );
    }
    out += &format!(
        "\nthe first create, which built the image: {} ms\n",
        ms(cold)
    );
    let kib = |b: u64| b as f64 / 1024.0;
    let most = per_container.iter().copied().max().unwrap_or(0);
    let mean = per_container.iter().sum::<u64>() as f64 / per_container.len().max(1) as f64;
    out += &format!(
        "\ndisk per container (its directory: config + overlay upper directory), {} containers: \
         mean {:.1} KiB, max {:.1} KiB; ",
        per_container.len(),
        mean / 1024.0,
        kib(most)
    );
    for (name, bytes) in images {
        out += &format!("image {name}: {:.1} KiB; ", kib(*bytes));
    }
    out += "\n";
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
