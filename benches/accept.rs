//! Accept throughput (issue 7, part 2): concurrent clients POSTing creates to a daemon started
//! with `--paused`, so only the API and the durable enqueue are measured (one sled transaction,
//! then the group-committed flush), never LXC.
//!
//! For each of 1, 8, 32 and 128 clients (closed loop, keep-alive, `CMBENCH_ACCEPT_SECS`
//! seconds each, default 3, a fresh store each time): accepted jobs/s and p50/p99 latency of
//! the `202`. Baseline, in the same run and on the same file system as the data directory: the
//! disk's raw rate of 4 KiB `write` + `fsync` (and + `sync_file_range`, which is what sled
//! really calls), measured before and after. While each level runs, `perf stat` counts the
//! daemon's `fsync`, `fdatasync` and `sync_file_range` calls (syscall tracepoints, counting
//! only), so "jobs per sync call" shows whether group commit shares flushes.
//!
//! Then (issue 14) 32 clients with and without an `Idempotency-Key` on every create (a fresh
//! key each), alternating eight times, a fresh store each: what storing and checking the key
//! costs. And HTTP against HTTPS (a lab certificate from `scripts/make-lab-certs.sh`, ECDSA
//! P-256, the TLS version and cipher the run negotiated are printed), at 1 and 32 clients,
//! alternating three times each, a fresh store each: keep-alive connections as for every level,
//! so each client's handshake happens once when it connects, never inside a request's latency;
//! what is compared is the per-request cost of TLS records.
//!
//! Targets: ≥ 3,000 accepts/s at 32 clients with p99 ≤ 10 ms, more than one job per sync;
//! (issue 17 item 5) ≥ 10,000 accepts/s at 32 clients with p99 ≤ 5 ms, by the median of the
//! run's five rounds of 32 clients without keys (the level, and the keys comparison's rounds
//! without); accepts with keys within 10 % of without; HTTPS reported next to HTTP (no
//! target).

#[path = "common/mod.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use creepy_meow::queue::{IdempotencyKey, JobStore, StoreOptions};
use futures::future::join_all;

use common::daemon::Daemon;
use common::harness::certs::LabCerts;
use common::http::{load_over, tls_session, Req};
use common::lab::Lab;
use common::perf::PerfStat;
use common::stats::{ms, rate_cells, verdict, Summary};

const BENCH: &str = "accept";
const LEVELS: [usize; 4] = [1, 8, 32, 128];

fn main() {
    let secs = common::env_usize("CMBENCH_ACCEPT_SECS", 3) as u64;
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, Duration::from_secs(secs)));
}

/// How a probe makes its 4 KiB write durable.
#[derive(Clone, Copy)]
enum Sync {
    /// `fsync(2)`: data, metadata and the device's write cache.
    Fsync,
    /// `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`: what sled 0.34 calls on Linux to
    /// flush its log; it writes the data out but flushes neither metadata nor the device cache.
    Range,
}

/// Writes 4 KiB and syncs, in a loop, for `dur`; returns (syncs/s, p50 latency).
fn raw_sync_rate(dir: &Path, how: Sync, dur: Duration) -> (f64, Duration) {
    let path = dir.join("sync-probe");
    let f = std::fs::File::create(&path).expect("probe file");
    let block = [0x5au8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < dur {
        let t0 = Instant::now();
        f.write_all_at(&block, off).expect("write");
        match how {
            Sync::Fsync => f.sync_all().expect("fsync"),
            Sync::Range => {
                let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                // SAFETY: a plain syscall on a file we own.
                let r = unsafe { libc::sync_file_range(f.as_raw_fd(), off as i64, 4096, flags) };
                assert_eq!(r, 0, "sync_file_range: {}", std::io::Error::last_os_error());
            }
        }
        lat.push(t0.elapsed());
        off = (off + 4096) % (64 << 20);
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path).ok();
    (rate, Summary::of(&lat).p50)
}

/// The fsync-family syscalls `perf stat` counts.
const SYNC_CALLS: [&str; 3] = [
    "syscalls:sys_enter_fsync",
    "syscalls:sys_enter_fdatasync",
    "syscalls:sys_enter_sync_file_range",
];

/// `perf stat` counting process `pid`'s fsync-family syscalls, or `None` without perf.
fn perf_attach(pid: u32, out: &Path) -> Option<PerfStat> {
    PerfStat::attach(pid, &SYNC_CALLS, out)
}

/// Stops `perf`; returns (fsync + fdatasync, sync_file_range) calls.
fn perf_count(perf: PerfStat) -> Option<(u64, u64)> {
    let counts = perf.finish()?;
    let n = |name: &str| counts.get(name).copied().unwrap_or(0);
    Some((n("fsync") + n("fdatasync"), n("sync_file_range")))
}

/// The store alone, through the library: `writers` concurrent `enqueue_create` loops on this
/// thread for `dur`, no HTTP. Shows the store's own ceiling and, through `JobStore::flushes`,
/// how many writes each group-committed flush carried.
async fn store_only(lab: &Lab, name: &str, keys: bool, dur: Duration) -> (Level, u64) {
    let writers = 32;
    let dir = lab.path(&format!("data-library-{name}"));
    let opts = StoreOptions {
        max_queued: 10_000_000,
        ..StoreOptions::default()
    };
    let store = JobStore::open(&dir, opts).expect("open the store");
    let perf_out = lab.dir.join(format!("perf-library-{name}.txt"));
    let perf = perf_attach(std::process::id(), &perf_out);
    let next = Arc::new(AtomicU32::new(9_000_000));
    let start = Instant::now();
    let deadline = start + dur;
    let tasks = (0..writers).map(|_| {
        let (store, next) = (store.clone(), next.clone());
        async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let spec = common::store::spec(n);
                let key = keys.then(|| IdempotencyKey {
                    key: format!("bench-{n}"),
                    fingerprint: format!("POST /api/container/create {n}"),
                });
                let t0 = Instant::now();
                store
                    .enqueue_create_keyed(spec, key)
                    .await
                    .expect("enqueue");
                lat.push(t0.elapsed());
            }
            lat
        }
    });
    let lat: Vec<Duration> = join_all(tasks).await.concat();
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    let syncs = perf.and_then(perf_count);
    let level = Level {
        clients: writers,
        rate,
        lat: Summary::of(&lat),
        errors: 0,
        syncs,
        jobs: lat.len(),
    };
    (level, store.flushes())
}

struct Level {
    clients: usize,
    rate: f64,
    lat: Summary,
    errors: u64,
    /// (fsync + fdatasync, sync_file_range) calls while it ran.
    syncs: Option<(u64, u64)>,
    jobs: usize,
}

/// Raw sync rates before and after the levels: (fsync, sync_file_range), each (rate, p50).
type Raw = [((f64, Duration), (f64, Duration)); 2];

fn probe(dir: &Path) -> ((f64, Duration), (f64, Duration)) {
    let second = Duration::from_secs(1);
    (
        raw_sync_rate(dir, Sync::Fsync, second),
        raw_sync_rate(dir, Sync::Range, second),
    )
}

async fn run(lab: &Lab, secs: Duration) {
    // The probe file lives in the lab directory: the data directories' file system.
    let probe_dir = lab.path("probe");
    let before = probe(&probe_dir);
    let mut levels = Vec::new();
    for (k, &clients) in LEVELS.iter().enumerate() {
        let name = format!("{clients}");
        levels.push(level(lab, &name, clients, k as u64, false, secs, None).await);
    }
    let mut keyed = (Vec::new(), Vec::new());
    for round in 0..8u64 {
        let with = round % 2 == 1;
        let name = format!("keys-{round}");
        let l = level(lab, &name, 32, 4 + round / 2, with, secs, None).await;
        if with { &mut keyed.1 } else { &mut keyed.0 }.push(l);
    }
    let library = store_only(lab, "plain", false, secs).await;
    let mut lib_keys = (Vec::new(), Vec::new());
    for round in 0..4 {
        let with = round % 2 == 1;
        let (l, _) = store_only(lab, &format!("keys-{round}"), with, secs).await;
        if with {
            &mut lib_keys.1
        } else {
            &mut lib_keys.0
        }
        .push(l);
    }
    let after = probe(&probe_dir);
    report(&levels, &library, [before, after], secs);
    let plain_32: Vec<&Level> = levels
        .iter()
        .filter(|l| l.clients == 32)
        .chain(&keyed.0)
        .collect();
    rounds_report(&plain_32, [before, after]);
    keys_report("32 clients over HTTP", &keyed.0, &keyed.1);
    keys_report(
        "the store alone, 32 writers, no HTTP",
        &lib_keys.0,
        &lib_keys.1,
    );
    https_vs_http(lab, secs).await;
}

/// HTTP and HTTPS accepts at 1 and 32 clients, alternating three times each (issue 14).
async fn https_vs_http(lab: &Lab, secs: Duration) {
    let certs = LabCerts::make(&lab.path("tls"), "server", &["127.0.0.1"]);
    for clients in [1, 32] {
        let mut runs = (Vec::new(), Vec::new());
        for round in 0..6 {
            let tls = (round % 2 == 1).then_some(&certs);
            let name = format!("tls-{clients}-{round}");
            let l = level(lab, &name, clients, 8, false, secs, tls).await;
            if tls.is_some() {
                &mut runs.1
            } else {
                &mut runs.0
            }
            .push(l);
        }
        let who = if clients == 1 { "client" } else { "clients" };
        let what = format!("HTTP against HTTPS, {clients} {who} on keep-alive connections");
        compare_report(&what, ["http", "https"], &runs.0, &runs.1, None);
    }
    let daemon = Daemon::start_https(
        &lab.path("data-tls-session"),
        &lab.path("lxc"),
        &["--paused"],
        &certs,
    )
    .await;
    let session = tls_session(daemon.transport()).await;
    common::emit(BENCH, &format!("TLS negotiated in this run: {session}\n"));
}

/// `clients` closed-loop clients creating for `secs` against a fresh `--paused` daemon (its
/// store in `data-<name>`), IDs from `k` × 1,000,000; each create with a fresh
/// `Idempotency-Key` when `keys`; over HTTPS with `tls`'s pair when given.
async fn level(
    lab: &Lab,
    name: &str,
    clients: usize,
    k: u64,
    keys: bool,
    secs: Duration,
    tls: Option<&LabCerts>,
) -> Level {
    let data = lab.path(&format!("data-{name}"));
    let lxc = lab.path("lxc");
    let flags = ["--paused", "--max-queued", "10000000"];
    let daemon = match tls {
        Some(certs) => Daemon::start_https(&data, &lxc, &flags, certs).await,
        None => Daemon::start(&data, &lxc, &flags).await,
    };
    let perf_out = lab.dir.join(format!("perf-{name}.txt"));
    let perf = perf_attach(daemon.pid(), &perf_out);
    let base = 1 + k * 1_000_000;
    let make = Arc::new(move |n: u64| {
        let id = (base + n) as u32;
        let req = Req::post_form(
            "/api/container/create",
            common::create_form(id, (2 + id % 3) as u8),
        );
        if keys {
            // Unique per request without a random draw (a syscall) in the load generator,
            // which shares the two cores with the daemon.
            req.with_key(format!("bench-{k}-{id}"))
        } else {
            req
        }
    });
    let res = load_over(daemon.transport(), clients, secs, 202, make).await;
    let syncs = perf.and_then(perf_count);
    drop(daemon);
    Level {
        clients,
        rate: res.rate(),
        lat: Summary::of(&res.latencies),
        errors: res.errors,
        syncs,
        jobs: res.latencies.len(),
    }
}

/// Accepts without and with idempotency keys, alternating, as `what`; target: with keys at
/// least 0.9× the rate without.
/// Issue 17 item 5: every round of 32 clients over plain HTTP without keys in this run (the
/// level, then the keys comparison's rounds without), against ≥ 10,000 accepts/s with p99 ≤ 5
/// ms, by the median round, next to the raw fsync rate of the same run.
fn rounds_report(rounds: &[&Level], raw: Raw) {
    let fsync = mean_fsync(&raw);
    let mut out = String::from(
        "## 32 clients over HTTP, every round without keys (issue 17 item 5)\n\n\
         | round | accepted/s | vs raw fsync/s | p50 ms | p99 ms | max ms | errors |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (i, l) in rounds.iter().enumerate() {
        out += &format!(
            "| {} | {} | {} |\n",
            i + 1,
            rate_cells(l.rate, fsync, &l.lat),
            l.errors
        );
    }
    let rate = median(rounds.iter().map(|l| l.rate).collect());
    let p99 = median(
        rounds
            .iter()
            .map(|l| l.lat.p99.as_secs_f64() * 1e3)
            .collect(),
    );
    out += &format!(
        "\nmedian of {} rounds: {rate:.0} accepts/s (target ≥ 10,000: **{}**), p99 {p99:.2} ms \
         (target ≤ 5 ms: **{}**); raw 4 KiB write + fsync {fsync:.0}/s in the same run\n",
        rounds.len(),
        verdict(rate >= 10_000.0),
        verdict(p99 <= 5.0),
    );
    common::emit(BENCH, &out);
}

/// The median of `v` (of the middle two when even).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

/// The raw `fsync` rate, the mean of the probes before and after.
fn mean_fsync(raw: &Raw) -> f64 {
    (raw[0].0 .0 + raw[1].0 .0) / 2.0
}

fn keys_report(what: &str, without: &[Level], with: &[Level]) {
    let what = format!("Accepts with and without an Idempotency-Key, {what}");
    compare_report(&what, ["no keys", "keys"], without, with, Some(0.9));
}

/// Two kinds of run (`labels`: `a` and `b`) alternating, as `what`: a row per run, then the
/// mean and median rates of each and their ratio b/a, against `target` when given.
fn compare_report(what: &str, labels: [&str; 2], a: &[Level], b: &[Level], target: Option<f64>) {
    let mean = |ls: &[Level]| ls.iter().map(|l| l.rate).sum::<f64>() / ls.len().max(1) as f64;
    let mut out = format!(
        "## {what}, alternating\n\n\
         | run | kind | accepted/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n",
    );
    let rows = a
        .iter()
        .map(|l| (l, labels[0]))
        .zip(b.iter().map(|l| (l, labels[1])));
    for (i, ((x, kx), (y, ky))) in rows.enumerate() {
        for (j, (l, k)) in [(x, kx), (y, ky)].into_iter().enumerate() {
            out += &format!(
                "| {} | {k} | {:.0} | {} | {} | {} |\n",
                2 * i + j + 1,
                l.rate,
                ms(l.lat.p50),
                ms(l.lat.p99),
                l.errors
            );
        }
    }
    let median_rate = |ls: &[Level]| median(ls.iter().map(|l| l.rate).collect());
    let p99 = |ls: &[Level]| {
        let mut r: Vec<Duration> = ls.iter().map(|l| l.lat.p99).collect();
        r.sort();
        r[(r.len() - 1) / 2]
    };
    let (ma, mb) = (mean(a), mean(b));
    let (da, db) = (median_rate(a), median_rate(b));
    let [la, lb] = labels;
    out += &format!(
        "\nmean: {la} {ma:.0}/s, {lb} {mb:.0}/s = {:.3}× (median {da:.0} and {db:.0}/s = {:.3}×); \
         median p99: {la} {} ms, {lb} {} ms",
        mb / ma,
        db / da,
        ms(p99(a)),
        ms(p99(b)),
    );
    if let Some(t) = target {
        out += &format!(": target ≥ {t}×: **{}**", verdict(mb >= t * ma));
    }
    out.push('\n');
    common::emit(BENCH, &out);
}

/// One row of the levels' table: `label`, the rate against the raw `fsync` rate, latencies,
/// errors and the sync calls counted (n/a without perf).
fn level_row(label: &str, l: &Level, fsync: f64) -> String {
    let (full, rng, per) = match l.syncs {
        Some((f, r)) => (
            f.to_string(),
            r.to_string(),
            format!("{:.1}", l.jobs as f64 / (f + r).max(1) as f64),
        ),
        None => ("n/a".into(), "n/a".into(), "n/a".into()),
    };
    format!(
        "| {label} | {} | {} | {full} | {rng} | {per} |\n",
        rate_cells(l.rate, fsync, &l.lat),
        l.errors
    )
}

fn report(levels: &[Level], library: &(Level, u64), raw: Raw, secs: Duration) {
    let fsync = mean_fsync(&raw);
    let range = (raw[0].1 .0 + raw[1].1 .0) / 2.0;
    type Pick = fn(&((f64, Duration), (f64, Duration))) -> (f64, Duration);
    let line = |name: &str, pick: Pick| {
        let (b, a) = (pick(&raw[0]), pick(&raw[1]));
        format!(
            "| 4 KiB write + {name} | {:.0} (p50 {} ms) | {:.0} (p50 {} ms) |\n",
            b.0,
            ms(b.1),
            a.0,
            ms(a.1)
        )
    };
    let mut out = format!(
        "## Accept throughput: durable creates, daemon --paused, {}s per level, fresh store each\n\n\
         Raw rates on the data directory's file system, same run:\n\n\
         | probe | before, /s | after, /s |\n|---|---|---|\n{}{}\n\
         | clients | accepted/s | vs raw fsync/s | p50 ms | p99 ms | max ms | errors | fsync+fdatasync | sync_file_range | jobs per sync call |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        secs.as_secs(),
        line("fsync", |r| r.0),
        line("sync_file_range (sled's)", |r| r.1),
    );
    for l in levels {
        out += &level_row(&l.clients.to_string(), l, fsync);
    }
    let (l, flushes) = library;
    out += &level_row("library, 32 writers, no HTTP", l, fsync);
    out += &format!(
        "\nlibrary: {flushes} group-committed flushes for {} jobs = {:.2} jobs per flush\n",
        l.jobs,
        l.jobs as f64 / (*flushes).max(1) as f64,
    );
    out += &format!("\n(mean raw rates: fsync {fsync:.0}/s, sync_file_range {range:.0}/s)\n");
    if let Some(l) = levels.iter().find(|l| l.clients == 32) {
        let ok_rate = l.rate >= 3000.0;
        let ok_p99 = l.lat.p99 <= Duration::from_millis(10);
        let grouped = l.syncs.map(|(f, r)| l.jobs as u64 > f + r);
        out += &format!(
            "\n32 clients: {:.0} accepts/s (target ≥ 3,000: **{}**), p99 {} ms (target ≤ 10 ms: **{}**), \
             more than one job per disk sync: **{}**\n",
            l.rate,
            verdict(ok_rate),
            ms(l.lat.p99),
            verdict(ok_p99),
            grouped.map_or("not measured (no perf)", verdict),
        );
    }
    common::emit(BENCH, &out);
}
