//! The soak test (issue 17): two simulated servers, each with its daemon on a small tmpfs, and a
//! seeded random mix of creates (good and bad), destroys, cancels, starts, stops and restarts,
//! pauses, SIGKILLs and SIGTERMs of a daemon, and one full disk, for a bounded time. After each
//! restart, and at the end, with the queue drained, it checks the invariants:
//!
//! - every accepted job is terminal, and stays in the state it ended in (it ends once);
//! - the host is the records: the containers (`lxc-ls`), those running, and the `vethc_br<ID>`
//!   links are exactly what the records say (no orphan, nothing missing);
//! - no answer is a 5xx but a 503 with its code and a reason.
//!
//! Ignored by `cargo test`: run it with `scripts/soak.sh [SECONDS] [SEED]`, which passes
//! `SOAK_SECONDS` (default 120) and `SOAK_SEED` (default: the time; printed to replay a run).
//! It prints how many of each operation and fault it survived.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::daemon::{Answer, Daemon};
use common::disk::{fill, Tmpfs, FILLER};
use common::layout::{data_path, lxc_path};
use common::{Lab, Server};

/// The daemons' flags: containers from their template (no image builds, which are slow); VLAN 3
/// for the full disk's creates.
const FLAGS: &[&str] = &["--clone", "off", "--vlans", "2,3"];

/// splitmix64: a seeded, reproducible stream of numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One server under soak: its daemon (restarted at will) and what the test knows.
struct Node<'a> {
    server: &'a Server,
    daemon: Option<Daemon<'a>>,
    /// Every accepted job, with the terminal state it was first seen in.
    jobs: BTreeMap<String, Option<String>>,
}

impl<'a> Node<'a> {
    fn start(server: &'a Server) -> Self {
        Self {
            server,
            daemon: Some(Daemon::start_with(server, None, FLAGS)),
            jobs: BTreeMap::new(),
        }
    }

    fn d(&self) -> &Daemon<'a> {
        self.daemon.as_ref().unwrap()
    }

    /// Restarts the daemon after `stop` (a SIGKILL or a SIGTERM) and checks the invariants.
    fn restart(&mut self, stop: impl FnOnce(&mut Daemon<'a>)) {
        let mut d = self.daemon.take().unwrap();
        stop(&mut d);
        drop(d);
        self.daemon = Some(Daemon::start_with(self.server, None, FLAGS));
        self.check();
    }

    /// Waits (120 s at most) until no job is queued or running, the queue resumed: the queue's
    /// counts at 0 and the job list showing none queued or running, twice in a row (a job the
    /// worker is taking is neither counted queued nor yet recorded running for a moment).
    fn drain(&self) {
        let d = self.d();
        answered(&d.ask("/api/queue/resume", &["-X", "POST"]));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut idle_polls = 0;
        loop {
            let q = d.ask("/api/queue", &[]);
            let none = |state: &str| {
                let l = d.ask(&format!("/api/jobs?state={state}&limit=1"), &[]);
                l.status == 200 && l.body["jobs"].as_array().is_some_and(Vec::is_empty)
            };
            let idle = q.status == 200
                && q.body["queued"] == 0
                && q.body["running"] == 0
                && none("queued")
                && none("running");
            idle_polls = if idle { idle_polls + 1 } else { 0 };
            if idle_polls == 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the queue never drained: {}",
                q.body
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The invariants (see the module doc), once the queue is drained.
    fn check(&mut self) {
        self.drain();
        let d = self.daemon.as_ref().unwrap();
        let listed = d.ask("/api/jobs?limit=1000", &[]);
        let states: BTreeMap<String, String> = listed.body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no job list: {}", listed.body))
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap().to_owned(),
                    j["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (job, ended) in &mut self.jobs {
            let state = states
                .get(job)
                .unwrap_or_else(|| panic!("accepted job {job} is gone"));
            assert!(
                ["succeeded", "failed", "cancelled"].contains(&state.as_str()),
                "job {job} is {state}"
            );
            let first = ended.get_or_insert_with(|| state.clone());
            assert_eq!(first, state, "job {job} ended twice");
        }
        let records = d.ask("/api/container/list?detail=1", &[]);
        let mut all = BTreeSet::new();
        let mut running = BTreeSet::new();
        for c in records.body["containers"].as_array().unwrap() {
            assert_eq!(c["record_state"], "active", "{}", records.body);
            let id = c["id"].as_u64().unwrap();
            all.insert(format!("container{id}"));
            if c["desired_state"] == "running" {
                running.insert(id);
            }
        }
        let names = |extra: &[&str]| -> BTreeSet<String> {
            let lxc = lxc_path(&self.server.dir);
            let mut args = vec!["-P", lxc.to_str().unwrap()];
            args.extend_from_slice(extra);
            self.server
                .run_ok("lxc-ls", args)
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            names(&[]),
            all,
            "the containers on the host are not the records"
        );
        let up: BTreeSet<String> = running.iter().map(|id| format!("container{id}")).collect();
        assert_eq!(
            names(&["--running"]),
            up,
            "the running containers are not the desired ones"
        );
        let links = self.server.run_ok("ip", ["-o", "link", "show"]);
        let veths: BTreeSet<String> = links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("vethc_"))
            .collect();
        let want: BTreeSet<String> = running.iter().map(|id| format!("vethc_br{id}")).collect();
        assert_eq!(veths, want, "the veths are not the running containers'");
    }
}

/// Checks an answer is not a 5xx, unless a 503 with a code and a reason; returns it.
fn answered(a: &Answer) -> &Answer {
    if a.status >= 500 {
        assert_eq!(a.status, 503, "{}", a.body);
        let code = a.body["code"].as_str().unwrap_or_default();
        assert!(
            ["storage_unavailable", "queue_full"].contains(&code),
            "{}",
            a.body
        );
        assert!(
            a.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            a.body
        );
    }
    a
}

/// Records `a`'s job if it was accepted.
fn accepted(node: &mut Node<'_>, a: &Answer) {
    if a.status == 202 {
        node.jobs
            .insert(a.body["job_id"].as_str().unwrap().to_owned(), None);
    }
}

/// One random operation on `node`; returns its name for the tally.
fn step(node: &mut Node<'_>, rng: &mut Rng, base: u32, disk_done: &mut bool) -> &'static str {
    let id = base + rng.below(12) as u32;
    let d = node.d();
    let roll = rng.below(100);
    let (name, answer) = match roll {
        0..=29 => ("create", d.ask_create(id)),
        30..=34 => (
            "bad create",
            d.ask(
                "/api/container/create",
                &["--data", &format!("id={id}&vlan=2&ip=192.168.2.0/24")],
            ),
        ),
        35..=49 => (
            "destroy",
            d.ask(&format!("/api/container/{id}"), &["-X", "DELETE"]),
        ),
        50..=54 => {
            let job = node
                .jobs
                .keys()
                .nth(rng.below(node.jobs.len().max(1) as u64) as usize)
                .cloned();
            let path = format!("/api/jobs/{}", job.unwrap_or_default());
            ("cancel", d.ask(&path, &["-X", "DELETE"]))
        }
        55..=74 => {
            let op = ["start", "stop", "restart"][rng.below(3) as usize];
            (
                "lifecycle",
                d.ask(&format!("/api/container/{id}/{op}"), &["-X", "POST"]),
            )
        }
        75..=84 => {
            let op = if rng.below(2) == 0 { "pause" } else { "resume" };
            (
                "pause/resume",
                d.ask(&format!("/api/queue/{op}"), &["-X", "POST"]),
            )
        }
        85..=89 => {
            node.restart(Daemon::kill);
            return "SIGKILL";
        }
        90..=94 => {
            node.restart(|d| assert!(d.sigterm().success()));
            return "SIGTERM";
        }
        _ if !*disk_done => {
            *disk_done = true;
            full_disk(node);
            return "full disk";
        }
        _ => ("wait", d.ask("/api/queue", &[])),
    };
    answered(&answer);
    accepted(node, &answer);
    name
}

/// Fills `node`'s data directory: creates are accepted until sled needs room the disk does not
/// have (it writes into a log segment already allocated first), then refused with 503, and
/// `/healthz` says why; then frees it, waits for the daemon to accept again, and cancels what
/// the full disk let in (queued, the queue paused: none of it runs). Their addresses are on
/// VLAN 3, which the random operations leave alone.
fn full_disk(node: &mut Node<'_>) {
    let data = data_path(&node.server.dir);
    answered(&node.d().ask("/api/queue/pause", &["-X", "POST"]));
    fill(&data);
    let mut let_in = Vec::new();
    let mut refused = false;
    for host in 2..=254u32 {
        let body = format!("id={}&vlan=3&ip=192.168.3.{host}/24", 1000 + host);
        let a = node.d().ask("/api/container/create", &["--data", &body]);
        answered(&a);
        if a.status == 202 {
            let_in.push(a.body["job_id"].as_str().unwrap().to_owned());
        }
        if a.status == 503 && a.body["code"] == "storage_unavailable" {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk never refused a create");
    let d = node.d();
    assert_eq!(d.ask("/healthz", &[]).status, 503);
    std::fs::remove_file(data.join(FILLER)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.ask("/healthz", &[]).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the daemon never accepted again: {}",
            d.own_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for job in let_in {
        let a = node.d().ask(&format!("/api/jobs/{job}"), &["-X", "DELETE"]);
        assert_eq!(answered(&a).status, 200, "{}", a.body);
        node.jobs.insert(job, None);
    }
    node.check();
}

#[test]
#[ignore = "the soak test: run scripts/soak.sh"]
fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").map_or(120, |s| s.parse().unwrap());
    let seed: u64 = std::env::var("SOAK_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        },
        |s| s.parse().unwrap(),
    );
    println!("soak: seed {seed}, {seconds} s (replay: scripts/soak.sh {seconds} {seed})");
    let mut rng = Rng(seed);
    let lab = Lab::new(2);
    let _disks: Vec<Tmpfs> = lab
        .servers()
        .iter()
        .map(|s| Tmpfs::mount(&data_path(&s.dir), "size=8m"))
        .collect();
    let mut nodes: Vec<Node<'_>> = lab.servers().iter().map(Node::start).collect();
    let mut tally: BTreeMap<&str, u32> = BTreeMap::new();
    let mut disk_done = false;
    let started = Instant::now();
    let (half, until) = (
        started + Duration::from_secs(seconds / 2),
        started + Duration::from_secs(seconds),
    );
    while Instant::now() < until {
        let n = rng.below(nodes.len() as u64) as usize;
        // The full disk happens once whatever the dice say: at half time if not before.
        let name = if !disk_done && Instant::now() >= half {
            disk_done = true;
            full_disk(&mut nodes[n]);
            "full disk"
        } else {
            step(&mut nodes[n], &mut rng, 10 + 20 * n as u32, &mut disk_done)
        };
        *tally.entry(name).or_default() += 1;
    }
    for node in &mut nodes {
        node.check();
    }
    let jobs: usize = nodes.iter().map(|n| n.jobs.len()).sum();
    println!("soak: survived {tally:?}; {jobs} jobs accepted, every one terminal once; host == records on both servers");
}
