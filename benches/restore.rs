//! Restore after a reboot, and a reconcile pass that finds nothing to do (issue 12).
//!
//! **Restore.** `CMBENCH_RESTORE_N` (default 100) containers are created through the daemon on
//! one simulated server, on VLANs 2/3/4 with addresses `192.168.V.x/24`, which the server
//! reaches over its own address on each bridge. Then the reboot: the daemon SIGKILLed,
//! `lxc-stop -k` of every container, every link but the underlay deleted, `creepy-meow setup`.
//! Measured: from spawning `serve` (`--reconcile-interval 0`: only the pass at start) to every
//! container answering an ICMP echo from the server's namespace (one raw socket; a container is
//! probed every 5 ms from the moment its host veth is up on its bridge, and the namespace's ARP
//! asks again every 10 ms rather than every second); per container, each start job's
//! `started_at → finished_at` and its steps. Baseline in the same run, the floor: after a
//! second reboot, `lxc-start -d` alone of the same stopped containers, one after another
//! (`lxc-info` checks, untimed, that each was RUNNING when `lxc-start` returned); then a third
//! reboot and a second restore, so the floor sits between the two restores.
//! Target: the whole restore ≤ N × (floor per container + 5 ms).
//!
//! **No-op pass.** `CMBENCH_RECONCILE_RECORDS` (default 1,000) records written through the
//! library, each with a real container (overlay clones of one busybox base), started with
//! their network by the daemon's own pass at start. Then `CMBENCH_RECONCILE_PASSES` (default
//! 20) `POST /api/reconcile`, each of which must check every record and find nothing: the
//! round trip, and the report's `finished_at − started_at`; then as many passes again under
//! `perf stat`, counting the daemon's clone/fork/exec calls (and a restart job under the same
//! counting, which does start processes: perf's positive control). The same on the restore's N
//! containers (after the second restore), `GET /healthz` as the HTTP part alone, and the pass's
//! host reads (the inventory, every `fib_trie`, the bridge-port dump, the link names) timed
//! alone through the library, each beside the read it replaced (every process's command line,
//! a full link dump) in the same run.
//! Targets: a pass ≤ 50 ms (the round trip's p95); no process started per container.
//! Takes ≈ 3–5 minutes here, most of it the 100 creates and the 1,000 starts.

#[path = "common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use creepy_meow::model::{ContainerId, VlanId};
use creepy_meow::spec::StepName;
use time::OffsetDateTime;

use common::daemon::{Daemon, PORT};
use common::harness::lab::run_checked;
use common::http::{json, Req};
use common::lab::Lab;
use common::perf::ForkExec;
use common::reach::{first_answers, Probe};
use common::reconcile::{
    forks_of_a_restart, no_op_passes, start_jobs, verdicts, wait_idle, HostReads, Passes, StartJobs,
};
use common::stats::{between, ms, ts, verdict, Summary};
use common::{clones, host};

const BENCH: &str = "restore";
/// Only the pass at start: no periodic pass may land inside a measurement.
const SERVE_FLAGS: &[&str] = &["--reconcile-interval", "0"];
/// The lab's one server.
const HOST_ID: u8 = 1;
/// The VLANs the daemon serves by default, each with a bridge holding the server's address.
const VLANS: [u8; 3] = [2, 3, 4];
/// The server namespace's ARP retry on the bridges (the kernel's default is a second).
const ARP_RETRY: Duration = Duration::from_millis(10);
/// A restore taking longer has failed.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// Creates, or the many-record host's start jobs, taking longer have failed.
const JOBS_TIMEOUT: Duration = Duration::from_secs(900);
/// The target's allowance per container over the floor.
const SLACK: Duration = Duration::from_millis(5);
/// The target for a pass that finds nothing to do.
const PASS_TARGET: Duration = Duration::from_millis(50);

fn main() {
    let n = common::env_usize("CMBENCH_RESTORE_N", 100);
    let records = common::env_usize("CMBENCH_RECONCILE_RECORDS", 1000);
    let reps = common::env_usize("CMBENCH_RECONCILE_PASSES", 20).max(1);
    assert!(
        (1..=700).contains(&n),
        "CMBENCH_RESTORE_N must be 1..=700 (three /24s)"
    );
    assert!(
        records > n,
        "CMBENCH_RECONCILE_RECORDS must exceed CMBENCH_RESTORE_N"
    );
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, n, records, reps));
}

/// One container of the restore.
struct Target {
    /// Its ID.
    id: ContainerId,
    /// Its VLAN.
    vlan: u8,
    /// The address it answers on.
    addr: Ipv4Addr,
}

/// Containers `1..=n`, spread over [`VLANS`], at `192.168.V.10` upwards.
fn targets(n: usize) -> Vec<Target> {
    (1..=n as u32)
        .map(|id| {
            let vlan = VLANS[id as usize % VLANS.len()];
            let host = 10 + id / VLANS.len() as u32;
            Target {
                id: ContainerId::new(u64::from(id)).expect("container id"),
                vlan,
                addr: Ipv4Addr::new(192, 168, vlan, host as u8),
            }
        })
        .collect()
}

fn names(targets: &[Target]) -> Vec<String> {
    targets.iter().map(|t| t.id.container_name()).collect()
}

async fn run(lab: &Lab, n: usize, records: usize, reps: usize) {
    let (data, lxc) = (lab.path("data"), lab.path("lxc"));
    let targets = targets(n);
    let (daemon, created) = create_all(&data, &lxc, &targets).await;
    reboot(Some(daemon), &lxc, &targets).await;
    let (daemon, first) = restore(&data, &lxc, &targets).await;
    reboot(Some(daemon), &lxc, &targets).await;
    let floor = floor(&lxc, &targets);
    reboot(None, &lxc, &targets).await;
    let (daemon, second) = restore(&data, &lxc, &targets).await;
    report_restore(n, created, &floor, [&first, &second]);
    let small = no_op_passes(&daemon, &lxc, n, reps, &lab.dir.join("perf-small.txt")).await;
    let control = forks_of_a_restart(&daemon, 1, &lab.dir.join("perf-control.txt")).await;
    drop(daemon);
    host::kill_containers(&lxc, &names(&targets));
    let (big_data, big_lxc) = (lab.path("data-big"), lab.path("lxc-big"));
    let big_names: Vec<String> = (1..=records as u64)
        .map(|id| ContainerId::new(id).expect("id").container_name())
        .collect();
    let (daemon, build) = big_host(lab, &big_data, &big_lxc, &big_names).await;
    let big = no_op_passes(
        &daemon,
        &big_lxc,
        records,
        reps,
        &lab.dir.join("perf-big.txt"),
    )
    .await;
    drop(daemon);
    report_passes(&build, &small, &big, control);
    // Faster than the lab's teardown, which goes one container at a time.
    host::kill_containers(&big_lxc, &big_names);
    host::lxc_each("lxc-destroy", &big_lxc, &big_names, &[]);
}

/// Creates every target through the daemon (queued at once, one worker); returns the daemon
/// and how long the creates took.
async fn create_all(data: &Path, lxc: &Path, targets: &[Target]) -> (Daemon, Duration) {
    let daemon = Daemon::start(data, lxc, SERVE_FLAGS).await;
    let started = Instant::now();
    for t in targets {
        let form = format!("id={}&vlan={}&ip={}/24", t.id, t.vlan, t.addr);
        json(PORT, &Req::post_form("/api/container/create", form), 202).await;
    }
    wait_idle(JOBS_TIMEOUT).await;
    let failed = json(PORT, &Req::get("/api/jobs?state=failed&limit=10"), 200).await;
    assert!(
        failed["jobs"].as_array().is_some_and(Vec::is_empty),
        "failed creates: {failed}"
    );
    (daemon, started.elapsed())
}

/// Issue 12's reboot: the daemon (if one runs) SIGKILLed, every container stopped at once,
/// every link but the underlay deleted, then `setup` as at boot; and the prober's ARP retry on
/// the new bridges (see `common/reach.rs`; nothing the daemon sees).
async fn reboot(daemon: Option<Daemon>, lxc: &Path, targets: &[Target]) {
    if let Some(mut daemon) = daemon {
        daemon.kill();
    }
    host::kill_containers(lxc, &names(targets));
    host::delete_links_but_underlay().await;
    host::setup(HOST_ID);
    for vlan in VLANS {
        let bridge = VlanId::new(u64::from(vlan)).expect("vlan").bridge_name();
        host::arp_retry(&bridge, ARP_RETRY);
    }
}

/// One restore, measured.
struct Restore {
    /// Spawn → each container's first echo reply.
    reach: Vec<Duration>,
    /// Spawn → the end of the pass at start (its report's `finished_at`).
    pass_done: Duration,
    /// That pass (`finished_at − started_at`).
    pass: Duration,
    /// The start jobs it queued.
    jobs: StartJobs,
}

/// Spawns `serve` on the rebooted server and waits until every target answers.
async fn restore(data: &Path, lxc: &Path, targets: &[Target]) -> (Daemon, Restore) {
    let probes: Vec<Probe> = targets
        .iter()
        .map(|t| Probe {
            veth: t.id.host_veth(),
            addr: t.addr,
        })
        .collect();
    let wall = OffsetDateTime::now_utc();
    let spawned = Instant::now();
    let daemon = Daemon::spawn(data, lxc, SERVE_FLAGS);
    let reach = first_answers(&probes, spawned, RESTORE_TIMEOUT, || daemon.log_text()).await;
    let report = json(PORT, &Req::get("/api/reconcile"), 200).await;
    let drift = report["drift"].as_array().map_or(0, Vec::len);
    assert_eq!(drift, targets.len(), "the pass at start: {report}");
    let restore = Restore {
        reach,
        pass_done: Duration::try_from(ts(&report["finished_at"]) - wall).unwrap_or_default(),
        pass: between(&report["started_at"], &report["finished_at"]),
        jobs: start_jobs(wall, targets.len()).await,
    };
    (daemon, restore)
}

/// The floor: `lxc-start -d` alone of every target, one after another.
struct Floor {
    /// Each `lxc-start -d`.
    times: Vec<Duration>,
    /// How many `lxc-info` found RUNNING right after their `lxc-start` returned (untimed).
    running: usize,
}

fn floor(lxc: &Path, targets: &[Target]) -> Floor {
    let p = lxc.display().to_string();
    let mut floor = Floor {
        times: Vec::new(),
        running: 0,
    };
    for name in names(targets) {
        let started = Instant::now();
        run_checked(Command::new("lxc-start").args(["-P", &p, "-n", &name, "-d"]));
        floor.times.push(started.elapsed());
        let state = run_checked(Command::new("lxc-info").args(["-P", &p, "-n", &name, "-s", "-H"]));
        floor.running += usize::from(state.trim() == "RUNNING");
    }
    floor
}

/// How the many-record host was built.
struct Build {
    /// Records written through the library.
    records: usize,
    /// Writing them.
    fill: Duration,
    /// Cloning the containers.
    clones: Duration,
    /// Spawn → every start job done.
    started: Duration,
    /// The start jobs of the pass at start.
    jobs: StartJobs,
}

/// The many-record host: records through the library, containers as overlay clones, started
/// with their network by the daemon's pass at start. Returns the daemon once all are up.
async fn big_host(lab: &Lab, data: &Path, lxc: &Path, names: &[String]) -> (Daemon, Build) {
    let filled = common::store::fill(data, names.len() as u32, 0, 0).await;
    let clones = clones::make(&lab.beside("lxc-base"), lxc, names).await;
    let wall = OffsetDateTime::now_utc();
    let spawned = Instant::now();
    let daemon = Daemon::spawn(data, lxc, SERVE_FLAGS);
    wait_idle(JOBS_TIMEOUT).await;
    let build = Build {
        records: names.len(),
        fill: filled.took,
        clones,
        started: spawned.elapsed(),
        jobs: start_jobs(wall, names.len()).await,
    };
    (daemon, build)
}

/// `| label | p50 | p95 | mean | sum s |` of `samples`.
fn row(label: &str, samples: &[Duration]) -> String {
    let s = Summary::of(samples);
    let sum: Duration = samples.iter().sum();
    let (p50, p95, mean) = (ms(s.p50), ms(s.p95), ms(s.mean));
    format!(
        "| {label} | {p50} | {p95} | {mean} | {:.2} |\n",
        sum.as_secs_f64()
    )
}

fn report_restore(n: usize, created: Duration, floor: &Floor, runs: [&Restore; 2]) {
    let base = Summary::of(&floor.times);
    let budget = (base.mean + SLACK) * n as u32;
    let mut out = format!(
        "## Restore after a reboot: {n} containers on one server, VLANs 2/3/4\n\n\
         Created through the daemon in {:.0} s. Reboot: daemon SIGKILLed, `lxc-stop -k` of every \
         container, every link but `eth1` deleted, `creepy-meow setup`. Reachable: the container's \
         first ICMP echo reply to the server's namespace.\n\n\
         | restore | spawn → pass at start done ms | that pass ms | spawn → first reachable ms \
         | spawn → all reachable ms | ÷ {n} ms | target ≤ {n} × (floor mean + 5 ms) = {} ms |\n\
         |---|---|---|---|---|---|---|\n",
        created.as_secs_f64(),
        ms(budget),
    );
    for (label, r) in [("1, before the floor", runs[0]), ("2, after it", runs[1])] {
        let all = r.reach.iter().max().copied().unwrap_or_default();
        let first = r.reach.iter().min().copied().unwrap_or_default();
        out += &format!(
            "| {label} | {} | {} | {} | {} | {} | **{}** |\n",
            ms(r.pass_done),
            ms(r.pass),
            ms(first),
            ms(all),
            ms(all / n as u32),
            verdict(all <= budget),
        );
    }
    out += "\n| per container | p50 ms | p95 ms | mean ms | sum s |\n|---|---|---|---|---|\n";
    let running = format!("{}/{n}", floor.running);
    out += &row(
        &format!(
            "**floor**: `lxc-start -d` alone, one after another ({running} RUNNING as it returned)"
        ),
        &floor.times,
    );
    out += &row(
        "start job (started → finished), restore 1",
        &runs[0].jobs.times,
    );
    out += &row(
        "start job (started → finished), restore 2",
        &runs[1].jobs.times,
    );
    for step in StepName::START {
        let name = step.as_str();
        let both: Vec<Duration> = runs
            .iter()
            .flat_map(|r| r.jobs.steps.get(name).into_iter().flatten().copied())
            .collect();
        if !both.is_empty() {
            out += &row(&format!("step `{name}`, both restores"), &both);
        }
    }
    common::emit(BENCH, &out);
}

fn report_passes(build: &Build, small: &Passes, big: &Passes, control: Option<ForkExec>) {
    let jobs = Summary::of(&build.jobs.times);
    let mut out = format!(
        "## A reconcile pass that finds nothing to do\n\n\
         {} records written through the library ({:.1} s), each with a real container: overlay \
         clones of one busybox base ({:.1} s, {} ms each). The daemon's pass at start queued {} \
         start jobs, all done {:.1} s after spawn (start job p50 {} ms, p95 {} ms).\n\n\
         | | records | round trip p50 / p95 / max ms | pass (finished − started) p50 / p95 / max ms \
         | during {} more passes: clone+clone3 / fork+vfork / execve+execveat |\n|---|---|---|---|---|\n",
        build.records,
        build.fill.as_secs_f64(),
        build.clones.as_secs_f64(),
        ms(build.clones / build.records as u32),
        build.records,
        build.started.as_secs_f64(),
        ms(jobs.p50),
        ms(jobs.p95),
        big.counted,
    );
    let h = &big.healthz;
    out += &format!(
        "| `GET /healthz` (the HTTP part alone) | – | {} / {} / {} | – | – |\n",
        ms(h.p50),
        ms(h.p95),
        ms(h.max)
    );
    for p in [small, big] {
        out += &format!(
            "| `POST /api/reconcile` | {} | {} / {} / {} | {} / {} / {} | {} |\n",
            p.records,
            ms(p.rtt.p50),
            ms(p.rtt.p95),
            ms(p.rtt.max),
            ms(p.inside.p50),
            ms(p.inside.p95),
            ms(p.inside.max),
            p.forks.map_or("n/a (no perf)".into(), |c| c.cell()),
        );
    }
    out +=
        "\nThe host reads of a pass, each alone, through the library in the bench's process:\n\n";
    out += HostReads::HEAD;
    out += &small.reads.row(small.records);
    out += &big.reads.row(big.records);
    out += &verdicts(small, big, control, PASS_TARGET);
    common::emit(BENCH, &out);
}
