//! A daemon's reconciliation seen from its API (issue 12): waiting for the jobs a pass queued,
//! reading them back, and timing passes that must find nothing to do, with the daemon's
//! clone/fork/exec calls counted meanwhile ([`super::perf`]) and the host reads a pass makes
//! timed on their own, through the library.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use creepy_meow::sys::netlink::{Netlink, NetnsOpener};
use creepy_meow::sys::netns::RtNetnsOpener;
use creepy_meow::sys::rtnl::RtNetlink;
use creepy_meow::sys::{inventory, monitor};
use serde_json::Value;
use time::OffsetDateTime;

use super::daemon::{Daemon, PORT};
use super::http::{daemon_addr, json, once, Conn, Req};
use super::perf::{ForkExec, PerfStat, FORK_EXEC};
use super::stats::{between, ms, ts, verdict, Summary};

/// `GET /healthz` round trips measured before the passes, as the HTTP part alone.
const HEALTHZ_SAMPLES: usize = 200;

/// Waits until the daemon answers with nothing queued or running; panics after `timeout`.
pub async fn wait_idle(timeout: Duration) {
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = once(PORT, &Req::get("/api/queue")).await {
            let q: Value = serde_json::from_slice(&body).expect("queue JSON");
            if q["queued"] == 0 && q["running"] == 0 {
                return;
            }
        }
        assert!(
            started.elapsed() < timeout,
            "jobs still pending after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The start jobs reconciliation queued since `since`.
pub struct StartJobs {
    /// Each job, `started_at → finished_at`.
    pub times: Vec<Duration>,
    /// Their steps' times, by step name.
    pub steps: BTreeMap<String, Vec<Duration>>,
}

/// The `start` jobs of origin `reconcile` created since `since`; panics unless there are `n`,
/// all succeeded.
pub async fn start_jobs(since: OffsetDateTime, n: usize) -> StartJobs {
    let all = json(PORT, &Req::get("/api/jobs?limit=10000"), 200).await;
    let jobs: Vec<&Value> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["kind"] == "start" && j["origin"] == "reconcile")
        .filter(|j| ts(&j["created_at"]) >= since)
        .collect();
    assert_eq!(jobs.len(), n, "start jobs queued by the pass at start");
    let mut steps: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job}");
        for step in job["steps"].as_array().expect("steps") {
            if step["started_at"].is_string() && step["finished_at"].is_string() {
                let name = step["name"].as_str().expect("step name").to_string();
                let took = between(&step["started_at"], &step["finished_at"]);
                steps.entry(name).or_default().push(took);
            }
        }
    }
    let times = jobs
        .iter()
        .map(|j| between(&j["started_at"], &j["finished_at"]))
        .collect();
    StartJobs { times, steps }
}

/// Passes that found nothing to do.
pub struct Passes {
    /// Records each pass checked.
    pub records: usize,
    /// `GET /healthz` round trips on the same connection: the HTTP part alone.
    pub healthz: Summary,
    /// `POST /api/reconcile` round trips.
    pub rtt: Summary,
    /// The passes themselves (their report's `finished_at − started_at`).
    pub inside: Summary,
    /// The daemon's fork/exec-family calls over `counted` more passes (`None` without perf).
    pub forks: Option<ForkExec>,
    /// Passes run under perf.
    pub counted: usize,
    /// The host reads of a pass, on their own.
    pub reads: HostReads,
}

/// Times `reps` passes on `daemon`, each of which must check `records` records and find
/// nothing, and as many times the host reads a pass makes in LXC path `lxc`; then `reps` more
/// passes under perf (written to `perf_out`), counting the daemon's forks and execs.
pub async fn no_op_passes(
    daemon: &Daemon,
    lxc: &Path,
    records: usize,
    reps: usize,
    perf_out: &Path,
) -> Passes {
    let mut conn = Conn::connect(daemon_addr(PORT)).await.expect("connect");
    let mut healthz = Vec::new();
    for _ in 0..HEALTHZ_SAMPLES {
        let started = Instant::now();
        let (status, _) = conn.send(&Req::get("/healthz")).await.expect("healthz");
        assert_eq!(status, 200);
        healthz.push(started.elapsed());
    }
    let (mut rtt, mut inside) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (r, i) = no_op_pass(&mut conn, records).await;
        rtt.push(r);
        inside.push(i);
    }
    let reads = host_reads(lxc, reps).await;
    let perf = PerfStat::attach(daemon.pid(), FORK_EXEC, perf_out);
    for _ in 0..reps {
        no_op_pass(&mut conn, records).await;
    }
    Passes {
        records,
        healthz: Summary::of(&healthz),
        rtt: Summary::of(&rtt),
        inside: Summary::of(&inside),
        forks: perf.and_then(PerfStat::finish).map(|c| ForkExec::of(&c)),
        counted: reps,
        reads,
    }
}

/// One `POST /api/reconcile` that must check `records` records and find nothing (no drift, no
/// fabric repair, nothing foreign): its round trip, and the pass's own time.
async fn no_op_pass(conn: &mut Conn, records: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let (status, body) = conn
        .send(&Req::post_form("/api/reconcile", String::new()))
        .await
        .expect("POST /api/reconcile");
    let rtt = started.elapsed();
    let report: Value = serde_json::from_slice(&body).expect("report JSON");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["checked"], records as u64, "{report}");
    let empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    let quiet = empty(&report["drift"])
        && empty(&report["fabric_repaired"])
        && empty(&report["foreign"]["containers"])
        && empty(&report["foreign"]["links"]);
    assert!(quiet, "a pass that should find nothing found: {report}");
    (rtt, between(&report["started_at"], &report["finished_at"]))
}

/// The host reads of a pass, each timed on its own through the library in the bench's process
/// (the daemon's namespace): what a pass's time is made of, each next to the read it replaced
/// (the baselines: every process's command line, a full link dump), timed in the same run.
pub struct HostReads {
    /// Processes on the host (entries of `/proc`) when measured.
    pub processes: usize,
    /// Links in the namespace.
    pub links: usize,
    /// The LXC path, LXC's command sockets and the monitors' PID files
    /// (`sys::inventory::survey`) the first time: what a pass at start reads for which
    /// containers run.
    pub survey_cold: Summary,
    /// The same with the inits found before held (`sys::monitor::Known`): every later pass.
    pub survey: Summary,
    /// Baseline: the command line of every process (`sys::monitor::scan_proc`).
    pub proc_scan: Summary,
    /// Every running container's IPv4 addresses through netlink
    /// (`NetnsOpener::local_addresses_of`: RTM_GETNSID, then RTM_GETADDR of that namespace).
    pub addresses: Summary,
    /// Baseline: every running container's `/proc/<pid>/net/fib_trie`, one after another
    /// (`sys::inventory::local_addresses`).
    pub fib_trie: Summary,
    /// One AF_BRIDGE dump of the bridge ports (`Netlink::bridge_ports`).
    pub ports: Summary,
    /// Every link name (`Netlink::link_names`: `/proc/net/dev`).
    pub names: Summary,
    /// Baseline: one full netlink dump of every link (`Netlink::links`).
    pub dump: Summary,
}

impl HostReads {
    /// The head of a table of [`HostReads::row`]s.
    pub const HEAD: &'static str = "| records | processes / links on the host | inventory, \
        first (command sockets, PID files) p50 / max ms | inventory, inits held | baseline: every process's command line | \
        every container's addresses (netlink) | baseline: every `fib_trie` | bridge-port dump | link names (`/proc/net/dev`) | baseline: full link \
        dump |\n|---|---|---|---|---|---|---|---|---|---|\n";

    /// A table row for a pass over `records` records.
    pub fn row(&self, records: usize) -> String {
        let cell = |s: &Summary| format!("{} / {}", ms(s.p50), ms(s.max));
        format!(
            "| {records} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.processes,
            self.links,
            cell(&self.survey_cold),
            cell(&self.survey),
            cell(&self.proc_scan),
            cell(&self.addresses),
            cell(&self.fib_trie),
            cell(&self.ports),
            cell(&self.names),
            cell(&self.dump),
        )
    }
}

/// Times the reads of a pass in LXC path `lxc`, `reps` times each.
pub async fn host_reads(lxc: &Path, reps: usize) -> HostReads {
    let nl = RtNetlink::connect().expect("netlink");
    let opener = RtNetnsOpener::connect();
    let mut t: [Vec<Duration>; 8] = Default::default();
    let mut links = 0;
    let known = monitor::Known::default();
    for _ in 0..reps {
        let started = Instant::now();
        inventory::survey(lxc, &monitor::Known::default()).expect("survey the LXC path");
        t[6].push(started.elapsed());
        let started = Instant::now();
        let (found, _) = inventory::survey(lxc, &known).expect("survey the LXC path");
        t[0].push(started.elapsed());
        let started = Instant::now();
        monitor::scan_proc(lxc).expect("scan /proc");
        t[1].push(started.elapsed());
        let pids: Vec<u32> = found.iter().filter_map(|e| e.init_pid).collect();
        let started = Instant::now();
        for got in opener.local_addresses_of(&pids).await {
            got.expect("a running container's addresses");
        }
        t[2].push(started.elapsed());
        let started = Instant::now();
        for &pid in &pids {
            inventory::local_addresses(pid).expect("a running container's fib_trie");
        }
        t[7].push(started.elapsed());
        let started = Instant::now();
        nl.bridge_ports().await.expect("bridge ports");
        t[3].push(started.elapsed());
        let started = Instant::now();
        nl.link_names().await.expect("link names");
        t[4].push(started.elapsed());
        let started = Instant::now();
        links = nl.links().await.expect("list links").len();
        t[5].push(started.elapsed());
    }
    let processes = std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    let [survey, proc_scan, addresses, ports, names, dump, survey_cold, fib_trie] =
        t.map(|d| Summary::of(&d));
    HostReads {
        processes,
        links,
        survey_cold,
        survey,
        proc_scan,
        addresses,
        fib_trie,
        ports,
        names,
        dump,
    }
}

/// perf's positive control: the same counting around one restart job of container `id`, which
/// does start processes (`lxc-stop`, `lxc-start`), so that a zero from
/// [`no_op_passes`] means nothing was started, not that perf saw nothing. `None` without perf.
pub async fn forks_of_a_restart(daemon: &Daemon, id: u32, perf_out: &Path) -> Option<ForkExec> {
    let perf = PerfStat::attach(daemon.pid(), FORK_EXEC, perf_out)?;
    let path = format!("/api/container/{id}/restart");
    let job = json(PORT, &Req::post_form(path, String::new()), 202).await;
    let job = job["job_id"].as_str().expect("job_id");
    let wait = format!("/api/jobs/{job}/wait?timeout=60");
    let done = json(PORT, &Req::get(wait), 200).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    perf.finish().map(|c| ForkExec::of(&c))
}

/// The no-op pass's cost per record beyond `small`'s, and its two targets on `big`: the round
/// trip's p95 within `target`, and no process started per container (`control`: perf's positive
/// control, [`forks_of_a_restart`]).
pub fn verdicts(
    small: &Passes,
    big: &Passes,
    control: Option<ForkExec>,
    target: Duration,
) -> String {
    let extra = big.records - small.records;
    let per_record = big.inside.p50.saturating_sub(small.inside.p50) / extra as u32;
    let no_fork = big.forks.map(|c| no_process(&c, big.counted));
    format!(
        "\nper record beyond the {}-record pass: {:.1} µs (p50s)\n\n\
         round trip at {} records p95 {} ms (max {}): target ≤ {} ms: **{}**\n\n\
         no process started per container during the passes: **{}** (perf's positive control, \
         one restart job under the same counting: {})\n",
        small.records,
        per_record.as_secs_f64() * 1e6,
        big.records,
        ms(big.rtt.p95),
        ms(big.rtt.max),
        target.as_millis(),
        verdict(big.rtt.p95 <= target),
        no_fork.map_or("not measured (no perf)", verdict),
        control.map_or("n/a".into(), |c| c.cell()),
    )
}

/// No program run and no fork; at most a thread per pass (the blocking pool's).
fn no_process(c: &ForkExec, passes: usize) -> bool {
    c.execs == 0 && c.forks == 0 && c.clones <= passes as u64
}
