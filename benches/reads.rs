//! Reads (issue 7, part 3): `GET /api/jobs/<id>`, `/api/container/list` and
//! `/api/container/info/<id>` at 32 clients (closed loop, keep-alive), with 1,000 containers'
//! records and their 1,000 finished jobs in the store, while the worker is busy creating real
//! containers (a backlog of `CMBENCH_READ_BUSY` creates, default 40, is queued first; the
//! report says whether a job was running at the start and the end of every phase).
//!
//! Baseline in the same run: `GET /healthz` at 32 clients, which touches neither the store nor
//! the host — the HTTP stack's own ceiling on this machine with this client. `info` is measured
//! twice: on the 1,000 record-only IDs (no LXC container exists, so it answers from the store
//! after a file check) and on a real running container (its directory, its init held by a
//! pidfd, its host veth from the link view the kernel's notifications keep current, and its
//! `eth0` addresses by two netlink requests: no process).
//!
//! Targets: ≥ 10,000 req/s at 32 clients with p99 ≤ 5 ms, for every row (for a running
//! container since issue 17 item 4). `CMBENCH_READ_SECS` (default 3)
//! sets each phase's length.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::daemon::{Daemon, PORT};
use common::http::{json, load, Req};
use common::lab::Lab;
use common::stats::{rate_cells, verdict, Summary};

const BENCH: &str = "reads";
const CLIENTS: usize = 32;
const RECORDS: u32 = 1000;
/// First ID of the real containers the worker creates meanwhile.
const BUSY_BASE: u32 = 5001;

fn main() {
    let secs = common::env_usize("CMBENCH_READ_SECS", 3) as u64;
    let busy = common::env_usize("CMBENCH_READ_BUSY", 40) as u32;
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, Duration::from_secs(secs), busy));
}

/// A spread-out index in `0..len` for request `n`.
fn pick(n: u64, len: usize) -> usize {
    (n.wrapping_mul(7919) % len as u64) as usize
}

async fn worker_busy() -> bool {
    json(PORT, &Req::get("/api/queue"), 200).await["running"] == 1
}

struct Phase {
    name: &'static str,
    rate: f64,
    lat: Summary,
    errors: u64,
    busy: (bool, bool),
    target: bool,
}

async fn run(lab: &Lab, secs: Duration, busy: u32) {
    let data = lab.path("data");
    let filled = common::store::fill(&data, RECORDS, 0, 0).await;
    let jobs = Arc::new(filled.finished_jobs);
    let daemon = Daemon::start(&data, &lab.path("lxc"), &[]).await;
    for id in BUSY_BASE..BUSY_BASE + busy {
        let form = common::create_form(id, (2 + id % 3) as u8);
        json(PORT, &Req::post_form("/api/container/create", form), 202).await;
    }
    // A real container to ask `info` about: the first of the backlog, once it is up.
    loop {
        let info = json(
            PORT,
            &Req::get(format!("/api/container/info/{BUSY_BASE}")),
            200,
        )
        .await;
        if info["state"] == "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    type Make = Arc<dyn Fn(u64) -> Req + Send + Sync>;
    let job_get: Make = {
        let jobs = jobs.clone();
        Arc::new(move |n| Req::get(format!("/api/jobs/{}", jobs[pick(n, jobs.len())])))
    };
    let phases: [(&'static str, bool, Make); 5] = [
        (
            "GET /healthz (baseline)",
            false,
            Arc::new(|_| Req::get("/healthz")),
        ),
        ("GET /api/jobs/<id>", true, job_get),
        (
            "GET /api/container/list (1,000)",
            true,
            Arc::new(|_| Req::get("/api/container/list")),
        ),
        (
            "GET /api/container/info/<id>, record only",
            true,
            Arc::new(|n| Req::get(format!("/api/container/info/{}", pick(n, 1000) + 1))),
        ),
        (
            "GET /api/container/info/<id>, running container",
            true,
            Arc::new(|_| Req::get(format!("/api/container/info/{BUSY_BASE}"))),
        ),
    ];
    let mut results = Vec::new();
    for (name, target, make) in phases {
        let before = worker_busy().await;
        let res = load(PORT, CLIENTS, secs, 200, make).await;
        results.push(Phase {
            name,
            rate: res.rate(),
            lat: Summary::of(&res.latencies),
            errors: res.errors,
            busy: (before, worker_busy().await),
            target,
        });
    }
    let rss = common::stats::rss_kib(daemon.pid());
    drop(daemon);
    report(&results, secs, rss);
}

fn report(phases: &[Phase], secs: Duration, rss: u64) {
    let base = phases[0].rate;
    let mut out = format!(
        "## Reads at {CLIENTS} clients, 1,000 container records + 1,000 finished jobs, worker busy, {}s each\n\n\
         | endpoint | req/s | vs /healthz | p50 ms | p99 ms | max ms | errors | worker busy (start/end) | target ≥ 10,000/s, p99 ≤ 5 ms |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        secs.as_secs()
    );
    for p in phases {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let target = if p.target {
            verdict(p.rate >= 10_000.0 && p.lat.p99 <= Duration::from_millis(5))
        } else {
            "–"
        };
        out += &format!(
            "| {} | {} | {} | {}/{} | {target} |\n",
            p.name,
            rate_cells(p.rate, base, &p.lat),
            p.errors,
            yes(p.busy.0),
            yes(p.busy.1),
        );
    }
    out += &format!(
        "\ndaemon RSS after the reads: {:.1} MiB\n",
        rss as f64 / 1024.0
    );
    common::emit(BENCH, &out);
}
