//! Restart (issue 7, part 5): time from spawning `creepy-meow serve --paused` to its first
//! `200` on `/healthz` (polled every millisecond), on a store holding `CMBENCH_FINISHED`
//! (default 10,000) finished jobs — 1,000 of them successful creates whose containers stay in
//! the ledger — and `CMBENCH_QUEUED` (default 1,000) queued creates, built through the library.
//!
//! Baseline in the same run: the same start on an empty store (process start, store open,
//! fabric check, listen). The two are interleaved, `CMBENCH_RESTARTS` (default 7) times each;
//! the fabric already exists after the first start, as on a real server's restart. The
//! library's `JobStore::open` alone on the full store is timed too, to show how much of the
//! start is the store's.
//!
//! Target: serving within 1 s with 11,000 jobs.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use creepy_meow::queue::{JobStore, StoreOptions};

use common::daemon::Daemon;
use common::lab::Lab;
use common::stats::{ms, ratio, verdict, Summary};

const BENCH: &str = "restart";

fn main() {
    let finished = common::env_usize("CMBENCH_FINISHED", 10_000) as u32;
    let queued = common::env_usize("CMBENCH_QUEUED", 1_000) as u32;
    let restarts = common::env_usize("CMBENCH_RESTARTS", 7);
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, finished, queued, restarts));
}

async fn run(lab: &Lab, finished: u32, queued: u32, restarts: usize) {
    let (empty, full, lxc) = (lab.path("empty"), lab.path("full"), lab.path("lxc"));
    let succeeded = finished.min(1_000);
    let filled = common::store::fill(&full, succeeded, finished - succeeded, queued).await;
    let size = du(&full);
    // The first start builds the fabric; not counted.
    Daemon::start(&empty, &lxc, &["--paused"]).await;
    let (mut base, mut loaded) = (Vec::new(), Vec::new());
    for _ in 0..restarts {
        for (data, times) in [(&empty, &mut base), (&full, &mut loaded)] {
            let d = Daemon::spawn(data, &lxc, &["--paused", "--max-queued", "100000"]);
            times.push(d.wait_ready(Duration::from_secs(60)).await);
        }
    }
    let mut open = Vec::new();
    for _ in 0..restarts {
        let t0 = Instant::now();
        let store = JobStore::open(&full, StoreOptions::default()).expect("open");
        open.push(t0.elapsed());
        assert_eq!(
            store.queued_count().unwrap(),
            queued as usize,
            "queued jobs lost"
        );
    }
    report(
        (finished, queued),
        filled.took,
        size,
        Summary::of(&base),
        Summary::of(&loaded),
        Summary::of(&open),
    );
}

/// Bytes under `dir`.
fn du(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn report(
    (finished, queued): (u32, u32),
    fill: Duration,
    size: u64,
    base: Summary,
    loaded: Summary,
    open: Summary,
) {
    let out = format!(
        "## Restart: spawn → first 200 on /healthz, daemon --paused, {} starts each\n\n\
         store: {finished} finished + {queued} queued jobs, {:.1} MiB on disk, built through the library in {:.1} s\n\n\
         | start | p50 ms | min ms | max ms | p50 vs empty |\n|---|---|---|---|---|\n\
         | empty store (baseline) | {} | {} | {} | 1.00× |\n\
         | {} jobs | {} | {} | {} | {} |\n\
         | `JobStore::open` alone, {} jobs (library) | {} | {} | {} | – |\n\n\
         serving with {} jobs p50 {} ms: target ≤ 1 s: **{}**\n",
        base.n,
        size as f64 / (1024.0 * 1024.0),
        fill.as_secs_f64(),
        ms(base.p50),
        ms(base.min),
        ms(base.max),
        finished + queued,
        ms(loaded.p50),
        ms(loaded.min),
        ms(loaded.max),
        ratio(loaded.p50, base.p50),
        finished + queued,
        ms(open.p50),
        ms(open.min),
        ms(open.max),
        finished + queued,
        ms(loaded.p50),
        verdict(loaded.max <= Duration::from_secs(1)),
    );
    common::emit(BENCH, &out);
}
