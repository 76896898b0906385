//! Provisioning latency (issue 7, part 1; issue 13): sequential creates of busybox containers
//! on one simulated server, five ways, interleaved round-robin so that every way sees the same
//! noise:
//!
//! - **daemon** (images on, the default): `POST /api/container/create`, then
//!   `GET /api/jobs/<id>/wait` until `succeeded`; accept → succeeded is taken from the job's
//!   own `created_at`/`finished_at` (server side) and from the client's clock, and every step's
//!   time from its recorded `started_at`/`finished_at` (which include the flush of the step's
//!   `running` record). Its first create builds the image (the cold create, reported apart);
//! - **engine**: the same steps through the library (`Engine::create`, images recorded in
//!   memory) with no job store, timed by a `Progress` that only reads the clock;
//! - **shell**: the old way, one process per command: `lxc-create`, `lxc-start -d`,
//!   `lxc-info -p` (the pid the next command needs), `ip link add` veth, `ip link set master`,
//!   `ip link set netns`, `lxc-attach -- ip addr add`, `lxc-attach -- ip link set up`;
//! - **floor**: `lxc-copy -s -B overlay` of a busybox image + `lxc-start -d` alone, which no way
//!   of provisioning by clone can beat;
//! - **template floor**: `lxc-create` + `lxc-start -d`, the floor before images.
//!
//! Then every container the daemon made is destroyed through the API, one after another,
//! against `lxc-stop -k` + `lxc-destroy` of the floor's clones.
//!
//! Targets: create, accept → succeeded, warm image, p50 ≤ 40 ms and ≤ 0.1 × the shell pipeline
//! (issue 13); network part (create_veth + configure_network) p50 ≤ 3 ms (issue 7).
//! `CMBENCH_CREATES` (default 30) sets the count; one warm-up round of each way is not counted.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use std::sync::Arc;

use creepy_meow::engine::Engine;
use creepy_meow::fabric::FabricConfig;
use creepy_meow::images::{Images, MemoryBook};
use creepy_meow::model::{HostId, VlanId};
use creepy_meow::spec::{StepEvent, StepName};
use creepy_meow::steps::{Progress, ProgressError};
use creepy_meow::sys::lxc::LxcTools;
use creepy_meow::sys::Host;
use serde_json::Value;

use common::daemon::{Daemon, PORT};
use common::harness::lab::run_checked;
use common::http::{json, Req};
use common::lab::Lab;
use common::stats::{between, ms, ratio, verdict, Summary};

const BENCH: &str = "provision";

/// Times of one create, by part name.
type Parts = HashMap<&'static str, Duration>;

fn main() {
    let n = common::env_usize("CMBENCH_CREATES", 30);
    let lab = Lab::new();
    lab.enter();
    common::runtime().block_on(run(&lab, n));
}

/// The ways, in the order of `runs`.
const WAYS: usize = 5;

async fn run(lab: &Lab, n: usize) {
    let daemon = Daemon::start(&lab.path("data"), &lab.path("lxc-daemon"), &[]).await;
    let conf = lab.empty_net_conf();
    let (shell_p, floor_p) = (lab.path("lxc-shell"), lab.path("lxc-floor"));
    let template_floor_p = lab.path("lxc-template-floor");
    let floor_image = floor_image(&floor_p).await;
    let engine = engine(&lab.path("lxc-engine"));
    let mut runs: [Vec<Parts>; WAYS] = Default::default();
    let mut cold = Parts::new();
    for i in 0..=n as u32 {
        // Round-robin start, so no way is always first after the others' work.
        for k in 0..WAYS {
            let way = (i as usize + k) % WAYS;
            let parts = match way {
                0 => daemon_create(i + 1).await,
                1 => engine_create(&engine, 1001 + i).await,
                2 => shell_create(&shell_p, &conf, i),
                3 => floor_create(&floor_p, &floor_image, i),
                _ => template_floor_create(&template_floor_p, &conf, i),
            };
            if i > 0 {
                runs[way].push(with_rest(parts));
            } else if way == 0 {
                cold = parts;
            }
        }
    }
    let destroys = daemon_destroys(n as u32 + 1).await;
    let floor_destroys = floor_destroys(&floor_p, n as u32 + 1);
    drop(daemon);
    report(n, &runs, &cold, &destroys, &floor_destroys);
}

/// The floor's image: a busybox container made as the daemon makes its images.
async fn floor_image(lxc: &Path) -> String {
    let tools = LxcTools::new(lxc, "busybox", Vec::new()).expect("lxc path");
    creepy_meow::sys::Lxc::create(&tools, "floorimage", None)
        .await
        .expect("the floor's image");
    "floorimage".into()
}

/// Destroys containers `1..end` through the API, one after another; each job's duration
/// (`total`) and steps.
async fn daemon_destroys(end: u32) -> Vec<Parts> {
    let mut out = Vec::new();
    for id in 1..end {
        let accepted = json(PORT, &Req::delete(format!("/api/container/{id}")), 202).await;
        let job_id = accepted["job_id"].as_str().expect("job_id").to_string();
        let job = wait_job(&job_id).await;
        assert_eq!(job["state"], "succeeded", "destroy {id}: {job}");
        let mut parts = Parts::from([
            ("total", between(&job["created_at"], &job["finished_at"])),
            ("queue", between(&job["created_at"], &job["started_at"])),
        ]);
        for (name, step) in StepName::DESTROY
            .iter()
            .zip(job["steps"].as_array().expect("steps"))
        {
            parts.insert(
                name.as_str(),
                between(&step["started_at"], &step["finished_at"]),
            );
        }
        out.push(parts);
    }
    out
}

/// `lxc-stop -k`, then `lxc-destroy`, of the floor's clones `fl0..fl<end>`: each one's two
/// times.
fn floor_destroys(lxc: &Path, end: u32) -> Vec<(Duration, Duration)> {
    let p = path_str(lxc);
    (0..end)
        .map(|i| {
            let name = format!("fl{i}");
            let stop = timed("lxc-stop", &["-P", &p, "-n", &name, "-k"]).0;
            (stop, timed("lxc-destroy", &["-P", &p, "-n", &name]).0)
        })
        .collect()
}

/// `GET /api/jobs/<id>/wait` until the job ended.
async fn wait_job(job_id: &str) -> Value {
    loop {
        let j = json(
            PORT,
            &Req::get(format!("/api/jobs/{job_id}/wait?timeout=30")),
            200,
        )
        .await;
        if matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return j;
        }
    }
}

/// Adds `rest`: everything but `lxc-create` (whose own spread on this machine, ±20 %, is
/// larger than what a way adds), so the ways compare on what they add to the tools.
fn with_rest(mut parts: Parts) -> Parts {
    let rest = parts["total"].saturating_sub(parts["create_container"]);
    parts.insert("rest", rest);
    parts
}

fn engine(lxc: &Path) -> Engine {
    let host =
        Host::real(LxcTools::new(lxc, "busybox", Vec::new()).expect("lxc path")).expect("netlink");
    let images = Images::new(host.lxc.clone(), Arc::new(MemoryBook::default()));
    let vlans = [2, 3, 4].map(|v| VlanId::new(v).expect("vlan")).to_vec();
    let fabric = FabricConfig {
        host_id: HostId::new(1).expect("host id"),
        underlay: "eth1".into(),
        vlans,
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    };
    Engine::new(host, fabric).with_images(Arc::new(images))
}

/// Through the API; parts from the job's recorded timestamps plus the client's view.
async fn daemon_create(id: u32) -> Parts {
    let t0 = Instant::now();
    let post = Req::post_form("/api/container/create", common::create_form(id, 2));
    let accepted = json(PORT, &post, 202).await;
    let job_id = accepted["job_id"].as_str().expect("job_id").to_string();
    let job = wait_job(&job_id).await;
    assert_eq!(job["state"], "succeeded", "create {id}: {job}");
    let client = t0.elapsed();
    let mut parts = Parts::new();
    parts.insert("client", client);
    parts.insert("total", between(&job["created_at"], &job["finished_at"]));
    parts.insert("queue", between(&job["created_at"], &job["started_at"]));
    let steps: Vec<&Value> = job["steps"].as_array().expect("steps").iter().collect();
    for (name, step) in StepName::CREATE.iter().zip(&steps) {
        parts.insert(
            name.as_str(),
            between(&step["started_at"], &step["finished_at"]),
        );
    }
    parts.insert("network", parts["create_veth"] + parts["configure_network"]);
    parts
}

/// Clock-only progress: when each step started and ended, nothing stored.
#[derive(Default)]
struct Clock {
    started: HashMap<&'static str, Instant>,
    parts: Parts,
}

#[async_trait]
impl Progress for Clock {
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError> {
        let key = step.as_str();
        match event {
            StepEvent::Started => {
                self.started.insert(key, Instant::now());
            }
            StepEvent::Done => {
                self.parts.insert(key, self.started[key].elapsed());
            }
            other => {
                return Err(ProgressError::NotRecorded {
                    step,
                    cause: format!("unexpected event {other:?}").into(),
                })
            }
        }
        Ok(())
    }
}

async fn engine_create(engine: &Engine, id: u32) -> Parts {
    let spec = common::store::spec(id);
    let spec = creepy_meow::spec::CreateSpec {
        vlan: VlanId::new(2).expect("vlan"),
        ..spec
    };
    let mut clock = Clock::default();
    let t0 = Instant::now();
    engine
        .create(&spec, &mut clock)
        .await
        .unwrap_or_else(|e| panic!("engine create {id}: {e}"));
    let mut parts = clock.parts;
    parts.insert("total", t0.elapsed());
    parts.insert("network", parts["create_veth"] + parts["configure_network"]);
    parts
}

/// Runs one command of the old pipeline and times it.
fn timed(program: &str, args: &[&str]) -> (Duration, String) {
    let t0 = Instant::now();
    let out = run_checked(Command::new(program).args(args));
    (t0.elapsed(), out)
}

fn shell_create(lxc: &Path, conf: &Path, i: u32) -> Parts {
    let (p, conf) = (path_str(lxc), path_str(conf));
    let (name, host, peer) = (format!("sh{i}"), format!("vsh{i}"), format!("vshp{i}"));
    let ip = format!("10.200.{}.{}/8", i / 250, i % 250 + 1);
    let lxc = |tool: &str, extra: &[&str]| {
        let mut a = vec!["-P", p.as_str(), "-n", name.as_str()];
        a.extend_from_slice(extra);
        timed(tool, &a)
    };
    let mut parts = Parts::new();
    parts.insert(
        "create_container",
        lxc("lxc-create", &["-t", "busybox", "-f", &conf]).0,
    );
    parts.insert("start_container", lxc("lxc-start", &["-d"]).0);
    let (info, pid) = lxc("lxc-info", &["-p", "-H"]);
    let pid = pid.trim().to_string();
    let add = timed(
        "ip",
        &["link", "add", &host, "type", "veth", "peer", "name", &peer],
    )
    .0;
    let master = timed("ip", &["link", "set", &host, "master", "br2", "up"]).0;
    let netns = timed("ip", &["link", "set", &peer, "netns", &pid]).0;
    parts.insert("create_veth", info + add + master + netns);
    let addr = lxc(
        "lxc-attach",
        &["--", "ip", "addr", "add", &ip, "dev", &peer],
    )
    .0;
    let up = lxc("lxc-attach", &["--", "ip", "link", "set", &peer, "up"]).0;
    parts.insert("configure_network", addr + up);
    parts.insert("network", parts["create_veth"] + parts["configure_network"]);
    let total = ["create_container", "start_container", "network"]
        .iter()
        .map(|k| parts[k])
        .sum();
    parts.insert("total", total);
    parts
}

fn floor_create(lxc: &Path, image: &str, i: u32) -> Parts {
    let (p, name) = (path_str(lxc), format!("fl{i}"));
    let args = ["-P", &p, "-n", image, "-N", &name, "-s", "-B", "overlay"];
    let clone = timed("lxc-copy", &args).0;
    let start = timed("lxc-start", &["-P", &p, "-n", &name, "-d"]).0;
    Parts::from([
        ("create_container", clone),
        ("start_container", start),
        ("total", clone + start),
    ])
}

fn template_floor_create(lxc: &Path, conf: &Path, i: u32) -> Parts {
    let (p, conf, name) = (path_str(lxc), path_str(conf), format!("tf{i}"));
    let create = timed(
        "lxc-create",
        &["-P", &p, "-n", &name, "-t", "busybox", "-f", &conf],
    )
    .0;
    let start = timed("lxc-start", &["-P", &p, "-n", &name, "-d"]).0;
    Parts::from([
        ("create_container", create),
        ("start_container", start),
        ("total", create + start),
    ])
}

fn path_str(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}

fn report(
    n: usize,
    runs: &[Vec<Parts>; WAYS],
    cold: &Parts,
    destroys: &[Parts],
    floor_destroys: &[(Duration, Duration)],
) {
    let [daemon, engine, shell, floor, template_floor] = runs;
    let sum = |rs: &[Parts], part: &str| {
        let v: Vec<Duration> = rs.iter().filter_map(|p| p.get(part).copied()).collect();
        (!v.is_empty()).then(|| Summary::of(&v))
    };
    let floor_p50 = sum(floor, "total").expect("floor").p50;
    let mut out = format!(
        "## Provisioning latency: {n} sequential creates (busybox), interleaved\n\n\
         | way | p50 ms | p95 ms | mean ms | p50 vs floor |\n|---|---|---|---|---|\n"
    );
    let rows: [(&str, &[Parts], &str); 6] = [
        (
            "floor: lxc-copy -s -B overlay + lxc-start -d",
            floor,
            "total",
        ),
        (
            "template floor: lxc-create + lxc-start -d",
            template_floor,
            "total",
        ),
        ("shell pipeline (8 commands, lxc-create)", shell, "total"),
        (
            "daemon, accept → succeeded (job timestamps)",
            daemon,
            "total",
        ),
        (
            "daemon, POST → wait sees succeeded (client)",
            daemon,
            "client",
        ),
        ("engine via library, no job store", engine, "total"),
    ];
    for (label, rs, part) in rows {
        let s = sum(rs, part).expect(part);
        out += &format!(
            "| {label} | {} | {} | {} | {} |\n",
            ms(s.p50),
            ms(s.p95),
            ms(s.mean),
            ratio(s.p50, floor_p50)
        );
    }
    out += "\n| part (p50 / p95 ms) | daemon (recorded) | engine (no store) | shell | floor | template floor |\n\
            |---|---|---|---|---|---|\n";
    let cell = |rs: &[Parts], part: &str| match sum(rs, part) {
        Some(s) => format!("{} / {}", ms(s.p50), ms(s.p95)),
        None => "–".into(),
    };
    for part in StepName::CREATE
        .iter()
        .map(|s| s.as_str())
        .chain(["network", "queue", "rest"])
    {
        out += &format!(
            "| {part} | {} | {} | {} | {} | {} |\n",
            cell(daemon, part),
            cell(engine, part),
            cell(shell, part),
            cell(floor, part),
            cell(template_floor, part)
        );
    }
    let cold_ms = |part: &str| cold.get(part).map_or("–".into(), |d| ms(*d));
    out += &format!(
        "\ncold create (the first, which builds the image): accept → succeeded {} ms, of which \
         ensure_image {} ms, create_container {} ms\n",
        cold_ms("total"),
        cold_ms("ensure_image"),
        cold_ms("create_container"),
    );
    let net = sum(daemon, "network").expect("network");
    let shell_net = sum(shell, "network").expect("shell network");
    let total = sum(daemon, "total").expect("total");
    let shell_total = sum(shell, "total").expect("shell total");
    let vs_shell = total.p50.as_secs_f64() / shell_total.p50.as_secs_f64();
    let vs_floor = total.p50.as_secs_f64() / floor_p50.as_secs_f64();
    out += &format!(
        "\ncreate, warm image, accept → succeeded p50 {} ms: target ≤ 40 ms: **{}**; \
         vs the shell pipeline {} ms = {:.3}×: target ≤ 0.1×: **{}**; vs the floor {} ms = {:+.1} %\n\n\
         network part, daemon p50 {} ms vs shell {} ms ({}): target ≤ 3 ms: **{}**\n",
        ms(total.p50),
        verdict(total.p50 <= Duration::from_millis(40)),
        ms(shell_total.p50),
        vs_shell,
        verdict(vs_shell <= 0.1),
        ms(floor_p50),
        (vs_floor - 1.0) * 100.0,
        ms(net.p50),
        ms(shell_net.p50),
        ratio(net.p50, shell_net.p50),
        verdict(net.p50 <= Duration::from_millis(3)),
    );
    let both: Vec<Duration> = floor_destroys.iter().map(|(s, d)| *s + *d).collect();
    let alone: Vec<Duration> = floor_destroys.iter().map(|(_, d)| *d).collect();
    let (f, alone) = (Summary::of(&both), Summary::of(&alone));
    let d = sum(destroys, "total").expect("destroys");
    out += &format!(
        "\n| destroy, one after another | n | p50 ms | p95 ms | mean ms |\n|---|---|---|---|---|\n\
         | daemon, accept → succeeded | {} | {} | {} | {} |\n\
         | floor: lxc-stop -k + lxc-destroy of a clone | {} | {} | {} | {} |\n\
         | lxc-destroy alone (of the stopped clone) | {} | {} | {} | {} |\n\n\
         destroy p50 vs the floor: {}; vs lxc-destroy alone: {}\n",
        destroys.len(),
        ms(d.p50),
        ms(d.p95),
        ms(d.mean),
        floor_destroys.len(),
        ms(f.p50),
        ms(f.p95),
        ms(f.mean),
        floor_destroys.len(),
        ms(alone.p50),
        ms(alone.p95),
        ms(alone.mean),
        ratio(d.p50, f.p50),
        ratio(d.p50, alone.p50),
    );
    let steps: Vec<String> = StepName::DESTROY
        .iter()
        .map(|s| s.as_str())
        .chain(["queue"])
        .map(|part| format!("{part} {}", cell(destroys, part)))
        .collect();
    out += &format!("\ndestroy steps, p50 / p95 ms: {}\n", steps.join("; "));
    common::emit(BENCH, &out);
}
