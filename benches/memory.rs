//! Memory (issue 17, item 6): the daemon's resident set as containers and jobs pile up. The
//! whole daemon runs on the fake host (`src/sys/fake.rs`), in a child process of its own
//! (`common::fake_daemon`), so thousands of containers cost no LXC and the child's `VmRSS` is
//! the daemon's (plus the fake kernel's, ≈ 1 KiB a container: heaptrack put 5.5 MiB of its
//! peak at 5,000 containers in `sys::fake*`). No root needed.
//!
//! `CMBENCH_MEMORY_N` (default 5,000) creates are queued through the API at once, 8 clients,
//! across VLANs 2–8; at 0, 500, 1,000, 2,500 and N containers (once every job has finished and
//! one `GET /api/container/list` has filled its cache) the bench reads the child's `VmRSS` and
//! `VmHWM`, glibc's heap in use and free (`mallinfo2`) and the store's size on disk. Then N
//! restarts, one per container, bring the retained jobs to 2 × N (10,000: the default
//! `--keep-jobs`), and 500 of them, spread evenly, are read back one by one (the cost of a
//! smaller page cache is in these reads). Last, the daemon is stopped and started again on the
//! same store, and measured after one list: the fake host starts empty, so the start's
//! reconcile pass finds every container gone and marks all 5,000 records `missing`, a write
//! heavier than a real restart's.
//!
//! Target: ≤ 40 MiB at 5,000 containers and 10,000 retained jobs. The baseline is the same
//! bench on the code before the change, run beside it (docs/PERFORMANCE.md).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use common::fake_daemon::{self, ROLE};
use common::http::{json, Conn, Req};
use common::stats::{ms, rss_kib, Summary};
use creepy_meow::sys::lxc_files::disk_usage;

const BENCH: &str = "memory";
/// Old jobs read back at the end.
const READS: usize = 500;
/// Concurrent clients queueing creates.
const CLIENTS: u32 = 8;
/// A command line the daemon's child runs under, such as `heaptrack -o /tmp/cm` (see
/// docs/PERFORMANCE.md: how the memory was found).
const WRAP: &str = "CMBENCH_MEMORY_WRAP";
/// The target, in MiB.
const TARGET_MIB: f64 = 40.0;

fn main() {
    fake_daemon::serve_if_asked();
    let n = common::env_usize("CMBENCH_MEMORY_N", 5_000) as u32;
    let dir = std::env::temp_dir().join(format!("cm-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let (rows, reads) = common::runtime().block_on(run(&dir, n));
    let _ = std::fs::remove_dir_all(&dir);
    report(&rows, &reads);
}

/// The daemon's child process and its stdout.
struct FakeDaemon {
    /// The child.
    child: Child,
    /// Its stdout, line by line.
    lines: Lines<BufReader<ChildStdout>>,
    /// The port it listens on.
    port: u16,
    /// The daemon's process (the child itself, or under [`WRAP`] a process of the wrapper's).
    pid: u32,
}

impl FakeDaemon {
    /// Spawns this executable as the daemon on `dir` and waits until it listens.
    fn spawn(dir: &Path) -> Self {
        let own = std::env::current_exe().expect("own path");
        let wrap = std::env::var(WRAP).unwrap_or_default();
        let mut argv: Vec<&std::ffi::OsStr> = wrap.split_whitespace().map(AsRef::as_ref).collect();
        argv.push(own.as_os_str());
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .env(ROLE, dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the daemon");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut d = Self {
            child,
            lines,
            port: 0,
            pid: 0,
        };
        let listening = d.answer("listening ");
        let (addr, pid) = listening.split_once(' ').expect("address and pid");
        d.port = addr
            .parse::<std::net::SocketAddr>()
            .expect("an address")
            .port();
        d.pid = pid.parse().expect("a pid");
        d
    }

    /// The rest of the child's next line that starts with `prefix`; a profiler's lines between
    /// are printed.
    fn answer(&mut self, prefix: &str) -> String {
        loop {
            let line = self.lines.next().expect("a line").expect("read");
            match line.strip_prefix(prefix) {
                Some(rest) => return rest.to_string(),
                None => eprintln!("memory: daemon: {line}"),
            }
        }
    }

    /// glibc's heap in use, free, and mmapped, in bytes.
    fn heap(&mut self) -> [u64; 3] {
        signal(self.pid, "USR1");
        let v: Vec<u64> = self
            .answer("heap ")
            .split(' ')
            .map(|s| s.parse().expect("a number"))
            .collect();
        [v[0], v[1], v[2]]
    }

    /// How long one `malloc_trim` of the daemon's heap takes, µs.
    fn trim_us(&mut self) -> u64 {
        signal(self.pid, "USR2");
        self.answer("trim ").parse().expect("a number")
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        signal(self.pid, "TERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the daemon exited with {status}");
    }
}

impl Drop for FakeDaemon {
    /// Kills a daemon the bench did not stop (it panicked), so no child outlives it.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// One measurement.
struct Row {
    /// What had just happened.
    what: String,
    /// Containers listed.
    containers: u32,
    /// Jobs the bench made so far (all retained: fewer than `--keep-jobs`).
    jobs: u64,
    /// `VmRSS`, KiB.
    rss_kib: u64,
    /// `VmHWM`, KiB: the most resident so far.
    hwm_kib: u64,
    /// glibc's heap in use, free and mmapped, bytes.
    heap: [u64; 3],
    /// The data directory's size, bytes.
    disk: u64,
    /// How long one `malloc_trim` took just after, µs.
    trim_us: u64,
    /// `VmRSS` after that trim, KiB: what the daemon cannot give back.
    trimmed_kib: u64,
    /// How long the phase before took, from the first request to the queue drained.
    secs: f64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Measures the daemon once the jobs `last` have finished, `containers` listed, `jobs` made so
/// far, the phase having started at `t0`.
async fn measure(
    d: &mut FakeDaemon,
    data: &Path,
    what: &str,
    (containers, jobs): (u32, u64),
    (t0, last): (Instant, &[String]),
) -> Row {
    drained(d.port, last).await;
    let secs = t0.elapsed().as_secs_f64();
    let list = json(d.port, &Req::get("/api/container/list"), 200).await;
    let listed = list["containers_id"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, containers as usize, "containers listed");
    let pid = d.pid;
    let (rss, hwm) = (rss_kib(pid), status_kib(pid, "VmHWM:"));
    let heap = d.heap();
    Row {
        what: what.into(),
        containers,
        jobs,
        rss_kib: rss,
        hwm_kib: hwm,
        heap,
        disk: disk_usage(data).expect("the store's size"),
        trim_us: d.trim_us(),
        trimmed_kib: rss_kib(pid),
        secs,
    }
}

/// Waits until the jobs `last` (each client's last) have finished: the one worker takes jobs
/// oldest first, so every job queued before them has too. Then checks the queue is empty,
/// once: `GET /api/queue` counts running jobs by reading every retained job, so polling it
/// would churn the store's cache and weigh on what is measured.
async fn drained(port: u16, last: &[String]) {
    for job in last {
        loop {
            let path = format!("/api/jobs/{job}/wait?timeout=60");
            let j = json(port, &Req::get(path), 200).await;
            if j["finished_at"].is_string() {
                break;
            }
        }
    }
    let q = json(port, &Req::get("/api/queue"), 200).await;
    assert_eq!(
        (q["queued"].as_u64(), q["running"].as_u64()),
        (Some(0), Some(0)),
        "{q}"
    );
}

/// Sends `reqs` over [`CLIENTS`] connections, each answered `202`; returns the jobs each
/// client queued, in order.
async fn queue_all(port: u16, reqs: Vec<Req>) -> Vec<Vec<String>> {
    let mut shares: Vec<Vec<Req>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, r) in reqs.into_iter().enumerate() {
        shares[i % CLIENTS as usize].push(r);
    }
    let clients = shares.into_iter().map(|share| async move {
        let mut conn = Conn::connect(common::http::daemon_addr(port))
            .await
            .expect("connect");
        let mut jobs = Vec::new();
        for req in &share {
            let (status, body) = conn.send(req).await.expect("send");
            assert_eq!(status, 202, "{req:?}: {}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            jobs.push(v["job_id"].as_str().expect("a job_id").to_string());
        }
        jobs
    });
    futures::future::join_all(clients).await
}

/// Each client's last job.
fn lasts(queued: &[Vec<String>]) -> Vec<String> {
    queued.iter().filter_map(|c| c.last().cloned()).collect()
}

/// `GET /api/jobs/<id>` of [`READS`] jobs spread evenly over `jobs`, one after another: most
/// are old, so their pages come from disk unless sled's cache holds them (the cost of a
/// smaller cache).
async fn old_job_reads(port: u16, jobs: &[String]) -> Summary {
    let mut conn = Conn::connect(common::http::daemon_addr(port))
        .await
        .expect("connect");
    let step = (jobs.len() / READS).max(1);
    let mut lat = Vec::new();
    for job in jobs.iter().step_by(step) {
        let req = Req::get(format!("/api/jobs/{job}"));
        let t0 = Instant::now();
        let (status, _) = conn.send(&req).await.expect("read a job");
        lat.push(t0.elapsed());
        assert_eq!(status, 200);
    }
    Summary::of(&lat)
}

/// Creates of containers `from..to`, spread over the VLANs of [`fake_daemon::VLANS`].
fn creates(from: u32, to: u32) -> Vec<Req> {
    let vlans = fake_daemon::VLANS.split(',').count() as u32;
    (from..to)
        .map(|id| {
            let vlan = 2 + (id % vlans) as u8;
            Req::post_form("/api/container/create", common::create_form(id, vlan))
        })
        .collect()
}

async fn run(dir: &Path, n: u32) -> (Vec<Row>, Summary) {
    let data: PathBuf = common::harness::layout::data_path(dir);
    let mut d = FakeDaemon::spawn(dir);
    let mut rows = vec![measure(&mut d, &data, "start", (0, 0), (Instant::now(), &[])).await];
    let mut jobs = Vec::new();
    let mut made = 0;
    for at in [500, 1_000, 2_500, n].into_iter().filter(|&at| at <= n) {
        if at == made {
            continue;
        }
        let t0 = Instant::now();
        let queued = queue_all(d.port, creates(made + 1, at + 1)).await;
        made = at;
        let done = (made, u64::from(made));
        let row = measure(&mut d, &data, "creates", done, (t0, &lasts(&queued))).await;
        rows.push(row);
        jobs.extend(queued.into_iter().flatten());
    }
    let t0 = Instant::now();
    let restarts = (1..=n)
        .map(|id| Req::post_form(format!("/api/container/{id}/restart"), String::new()))
        .collect();
    let queued = queue_all(d.port, restarts).await;
    let all = (n, 2 * u64::from(n));
    let last = lasts(&queued);
    rows.push(measure(&mut d, &data, "+ a restart each", all, (t0, &last)).await);
    jobs.extend(queued.into_iter().flatten());
    let reads = old_job_reads(d.port, &jobs).await;
    d.stop();
    let t0 = Instant::now();
    let mut d = FakeDaemon::spawn(dir);
    rows.push(measure(&mut d, &data, "reopened", all, (t0, &[])).await);
    d.stop();
    (rows, reads)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn report(rows: &[Row], reads: &Summary) {
    let mut out = format!(
        "## memory: the daemon on the fake host, {} containers\n\n\
         | after | containers | jobs | phase s | RSS MiB | HWM MiB | heap in use MiB | heap free MiB | mmapped MiB | store on disk MiB | a trim ms | RSS after it MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        rows.last().map_or(0, |r| r.containers)
    );
    for r in rows {
        let [used, free, mapped] = r.heap.map(|b| b / 1024);
        out += &format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            r.what,
            r.containers,
            r.jobs,
            r.secs,
            mib(r.rss_kib),
            mib(r.hwm_kib),
            mib(used),
            mib(free),
            mib(mapped),
            mib(r.disk / 1024),
            r.trim_us as f64 / 1000.0,
            mib(r.trimmed_kib),
        );
    }
    let created = rows.iter().rfind(|r| r.what == "creates");
    if let (Some(first), Some(last)) = (rows.first(), created) {
        let grown = last.rss_kib.saturating_sub(first.rss_kib);
        let per = grown as f64 / f64::from(last.containers.max(1));
        out += &format!(
            "\nRSS per container created (start to {}): {per:.1} KiB\n",
            last.containers
        );
    }
    out += &format!(
        "{} reads of old jobs (`GET /api/jobs/<id>`, spread over all {}): p50 {} ms, p99 {} ms\n",
        reads.n,
        rows.iter().map(|r| r.jobs).max().unwrap_or(0),
        ms(reads.p50),
        ms(reads.p99)
    );
    let worst = rows.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    out += &format!(
        "Largest RSS: {worst:.1} MiB: target ≤ {TARGET_MIB} MiB: **{}**\n",
        if worst <= TARGET_MIB {
            "met"
        } else {
            "not met"
        }
    );
    common::emit(BENCH, &out);
}
