//! Cluster mode on etcd (issue 16): what the cluster costs a create, how long a new member takes
//! to be reachable, and how long listing the cluster's reservations takes.
//!
//! A two-server lab; etcd (one member) runs in server 1's namespace on its underlay address.
//!
//! 1. **Accept**: 32 closed-loop clients POSTing creates to a `--paused` daemon (so only the
//!    API, the reservation and the durable enqueue are measured), the same daemon without
//!    etcd, with the etcd on its own disk, and with an etcd on server 2 whose data is on tmpfs
//!    (etcd elsewhere, its disk costing nothing), alternating three times each, a fresh store
//!    and cluster name each.
//!    Targets: with etcd ≥ 1,000 creates/s, and its p50 at most 3 ms over the p50 without.
//!    Floor, same run: the reservation's etcd transaction alone, from 32 tasks in the bench.
//!    The same at one client (where the cores are not the bound: the latency a create's two
//!    commits cost); each level also counts the daemon's and etcd's CPU time per create.
//! 2. **Listing**: 10,000 reservations put in etcd, then `GET /api/cluster/containers` 20 times
//!    against etcd's own range read of the same keys from the bench (the floor), same run.
//!    Target: ≤ 200 ms (median).
//! 3. **Joining**: a member on server 1; a daemon started on server 2 five times (each a new
//!    node: fresh data dir, its fabric deleted and server 1's neighbour cache flushed; between
//!    rounds it is killed and its key deleted, as a lease expiry would): from its start to its
//!    key in etcd (it registers once its fabric is up), to server 1's flood entry for it, and
//!    to server 1's first ping answered by its bridge address across the overlay (pinging from
//!    the flood entry on). Reported (no target).

#[path = "common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use creepy_meow::cluster::{Keys, Reservation};
use creepy_meow::sys::rtnl::RtNetlink;
use creepy_meow::sys::{Kv, KvCond, KvOp, Netlink};
use futures::future::join_all;

use common::daemon::Daemon;
use common::etcd::Etcd;
use common::harness::serve::{Launch, Serve};
use common::http::{load, once, Req};
use common::icmp::Pinger;
use common::lab::Lab;
use common::stats::{ms, verdict, Summary};

const BENCH: &str = "cluster";

fn main() {
    let secs = common::env_usize("CMBENCH_CLUSTER_SECS", 3) as u64;
    let lab = Lab::with_servers(2);
    lab.enter();
    common::runtime().block_on(run(&lab, Duration::from_secs(secs)));
}

async fn run(lab: &Lab, secs: Duration) {
    let addr = lab.server(1).underlay_ip.to_string();
    let etcd = Etcd::start(&lab.path("etcd"), &addr).await;
    let elsewhere = Etcd::start_elsewhere(lab.server(2), &lab.path("etcd")).await;
    accept(lab, &etcd, &elsewhere, secs).await;
    drop(elsewhere);
    listing(lab, &etcd).await;
    joining(lab, &etcd).await;
}

/// One accept level's numbers.
struct Level {
    rate: f64,
    lat: Summary,
    errors: u64,
    /// CPU time per accepted create, µs: the daemon's, and its etcd's (0 alone).
    cpu_us: (f64, f64),
}

/// Process `pid`'s CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf reads a constant; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// `clients` closed-loop clients for `secs` against a fresh paused daemon with `extra` flags,
/// the CPU time of it and of `etcd` (if any) counted over the load.
async fn level(
    lab: &Lab,
    (name, k): (&str, u64),
    extra: &[&str],
    etcd: Option<&Etcd>,
    (clients, secs): (usize, Duration),
) -> Level {
    let data = lab.path(&format!("data-{name}"));
    let lxc = lab.path("lxc");
    let mut flags = vec!["--paused", "--max-queued", "10000000"];
    flags.extend_from_slice(extra);
    let daemon = Daemon::start(&data, &lxc, &flags).await;
    let base = 1 + k * 500_000;
    let make = Arc::new(move |n: u64| {
        let id = (base + n) as u32;
        Req::post_form(
            "/api/container/create",
            common::create_form(id, (2 + id % 3) as u8),
        )
    });
    let pids = (daemon.pid(), etcd.map(Etcd::pid));
    let before = (cpu_time(pids.0), pids.1.map_or(Duration::ZERO, cpu_time));
    let res = load(common::daemon::PORT, clients, secs, 202, make).await;
    let after = (cpu_time(pids.0), pids.1.map_or(Duration::ZERO, cpu_time));
    drop(daemon);
    let n = (res.latencies.len() as f64).max(1.0);
    let per = |a: Duration, b: Duration| (a - b).as_secs_f64() * 1e6 / n;
    Level {
        rate: res.rate(),
        lat: Summary::of(&res.latencies),
        errors: res.errors,
        cpu_us: (per(after.0, before.0), per(after.1, before.1)),
    }
}

async fn accept(lab: &Lab, etcd: &Etcd, elsewhere: &Etcd, secs: Duration) {
    let mut out = String::new();
    for (clients, k0) in [(32usize, 0u64), (1, 9)] {
        out += &accept_at(lab, (etcd, elsewhere), clients, (k0, secs)).await;
    }
    common::emit(BENCH, &out);
}

/// The three kinds alternated three times each at `clients` clients; the report's section.
async fn accept_at(
    lab: &Lab,
    (etcd, elsewhere): (&Etcd, &Etcd),
    clients: usize,
    (k0, secs): (u64, Duration),
) -> String {
    let (mut alone, mut clustered, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    let load = (clients, secs);
    for round in k0..k0 + 9 {
        let name = format!("accept-{round}");
        match round % 3 {
            0 => alone.push(level(lab, (&name, round), &[], None, load).await),
            1 => {
                let flags = ["--etcd", &etcd.url, "--cluster", &name];
                let l = level(lab, (&name, round), &flags, Some(etcd), load).await;
                clustered.push(l);
            }
            _ => {
                let flags = ["--etcd", &elsewhere.url, "--cluster", &name];
                let l = level(lab, (&name, round), &flags, Some(elsewhere), load).await;
                remote.push(l);
            }
        }
    }
    let mut out = format!(
        "## Accept with and without etcd, {clients} client(s), alternating\n\n\
         etcd: on this server's disk beside the store; elsewhere: on server 2, across the lab's \
         switch, its data on tmpfs (a disk that costs nothing: what the daemon and the network \
         add). CPU: the daemon's and etcd's own time (user + system) over the level, per \
         accepted create\n\n\
         | run | kind | accepted/s | p50 ms | p99 ms | errors | daemon CPU µs | etcd CPU µs |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (i, ((a, c), r)) in alone.iter().zip(&clustered).zip(&remote).enumerate() {
        let kinds = [(a, "alone"), (c, "etcd"), (r, "etcd elsewhere")];
        for (j, (l, kind)) in kinds.into_iter().enumerate() {
            out += &format!(
                "| {} | {kind} | {:.0} | {} | {} | {} | {:.0} | {:.0} |\n",
                3 * i + j + 1,
                l.rate,
                ms(l.lat.p50),
                ms(l.lat.p99),
                l.errors,
                l.cpu_us.0,
                l.cpu_us.1
            );
        }
    }
    let median = |ls: &[Level], f: &dyn Fn(&Level) -> f64| {
        let mut v: Vec<f64> = ls.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let floor = etcd_alone(etcd, clients, secs).await;
    out += &format!(
        "\nfloor, etcd alone (the reservation's transaction from {clients} task(s) in the bench, \
         no daemon): {:.0}/s, p50 {} ms, p99 {} ms\n",
        floor.rate,
        ms(floor.lat.p50),
        ms(floor.lat.p99)
    );
    let rate = median(&clustered, &|l| l.rate);
    let p50 = |ls: &[Level]| median(ls, &|l| l.lat.p50.as_secs_f64() * 1e3);
    let over = p50(&clustered) - p50(&alone);
    let (remote_rate, remote_over) = (median(&remote, &|l| l.rate), p50(&remote) - p50(&alone));
    // The targets are set at 32 clients; the one-client level shows what the cores hide.
    let judge = |met: bool| {
        if clients == 32 {
            verdict(met)
        } else {
            "not a target"
        }
    };
    out += &format!(
        "\nmedian: alone {:.0}/s p50 {:.2} ms; etcd {rate:.0}/s p50 {:.2} ms: \
         ≥ 1,000/s **{}**, p50 +{over:.2} ms ≤ 3 ms **{}**; etcd elsewhere {remote_rate:.0}/s \
         p50 {:.2} ms: ≥ 1,000/s **{}**, p50 +{remote_over:.2} ms ≤ 3 ms **{}**. \
         The two commits one after the other would be ≈ alone + the floor: p50 {:.2} ms\n\n",
        median(&alone, &|l| l.rate),
        p50(&alone),
        p50(&clustered),
        judge(rate >= 1000.0),
        judge(over <= 3.0),
        p50(&remote),
        judge(remote_rate >= 1000.0),
        judge(remote_over <= 3.0),
        p50(&alone) + floor.lat.p50.as_secs_f64() * 1e3,
    );
    out
}

/// `tasks` tasks each running a create's reservation transaction (two keys, both absent, put)
/// against etcd for `secs`, closed loop: what etcd alone can take.
async fn etcd_alone(etcd: &Etcd, tasks: usize, secs: Duration) -> Level {
    let kv = etcd.client().await;
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let deadline = Instant::now() + secs;
    let start = Instant::now();
    let spawned = (0..tasks).map(|_| {
        let (kv, next) = (kv.clone(), next.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let keys = [
                    format!("floor{tasks}/containers/{n}"),
                    format!("floor{tasks}/addresses/2/{n}"),
                ];
                let when = keys.iter().cloned().map(KvCond::Absent).collect();
                let then = keys
                    .iter()
                    .map(|k| KvOp::Put {
                        key: k.clone(),
                        value: b"x".to_vec(),
                        lease: 0,
                    })
                    .collect();
                let t0 = Instant::now();
                assert!(kv.txn(when, then).await.expect("txn"), "fresh keys");
                lat.push(t0.elapsed());
            }
            lat
        })
    });
    let lat: Vec<Duration> = join_all(spawned)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    Level {
        rate: lat.len() as f64 / start.elapsed().as_secs_f64(),
        lat: Summary::of(&lat),
        errors: 0,
        cpu_us: (0.0, 0.0),
    }
}

/// Puts `n` reservations under cluster `name` (64 keys a transaction, 16 at a time).
async fn fill(kv: &Arc<dyn Kv>, name: &str, n: u32) {
    let keys = Keys::new(name);
    let node = uuid::Uuid::new_v4();
    let batches: Vec<Vec<KvOp>> = (1..=n)
        .collect::<Vec<u32>>()
        .chunks(32)
        .map(|ids| {
            ids.iter()
                .flat_map(|&id| {
                    let r = Reservation {
                        id: id.to_string().parse().unwrap(),
                        vlan: creepy_meow::model::VlanId::new(2).unwrap(),
                        ip: common::addr_of(id).parse().unwrap(),
                        host_id: creepy_meow::model::HostId::new(1 + u64::from(id % 3)).unwrap(),
                        node,
                    };
                    let value = r.to_value();
                    keys.of(&r).map(|key| KvOp::Put {
                        key,
                        value: value.clone(),
                        lease: 0,
                    })
                })
                .collect()
        })
        .collect();
    for wave in batches.chunks(16) {
        let puts = wave.iter().map(|ops| kv.txn(Vec::new(), ops.clone()));
        for r in join_all(puts).await {
            assert!(
                r.expect("fill etcd"),
                "an unconditional transaction applies"
            );
        }
    }
}

async fn listing(lab: &Lab, etcd: &Etcd) {
    const N: u32 = 10_000;
    let kv = etcd.client().await;
    fill(&kv, "list", N).await;
    let data = lab.path("data-list");
    let flags = ["--paused", "--etcd", &etcd.url, "--cluster", "list"];
    let daemon = Daemon::start(&data, &lab.path("lxc"), &flags).await;
    let req = Req::get("/api/cluster/containers");
    let prefix = Keys::new("list").containers();
    let (mut api, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t0 = Instant::now();
        let (status, body) = once(common::daemon::PORT, &req).await.expect("list");
        api.push(t0.elapsed());
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["count"], N);
        let t0 = Instant::now();
        let got = kv.list(&prefix).await.expect("range");
        floor.push(t0.elapsed());
        assert_eq!(got.entries.len(), N as usize);
    }
    drop(daemon);
    let (a, f) = (Summary::of(&api), Summary::of(&floor));
    common::emit(
        BENCH,
        &format!(
            "## Listing 10,000 reservations (20 times)\n\n\
             | | p50 ms | max ms |\n|---|---|---|\n\
             | GET /api/cluster/containers | {} | {} |\n\
             | etcd range read alone (floor) | {} | {} |\n\n\
             median {} ms ≤ 200 ms: **{}** ({:.2}× the floor)\n",
            ms(a.p50),
            ms(a.max),
            ms(f.p50),
            ms(f.max),
            ms(a.p50),
            verdict(a.p50 <= Duration::from_millis(200)),
            a.p50.as_secs_f64() / f.p50.as_secs_f64(),
        ),
    );
}

/// Whether server 1's `vxlan2` floods to `peer`.
async fn floods_to(nl: &RtNetlink, peer: Ipv4Addr) -> bool {
    let Ok(Some(link)) = nl.link("vxlan2").await else {
        return false;
    };
    let entries = nl.fdb_entries(link.index).await.unwrap_or_default();
    entries.iter().any(|e| e.is_flood() && e.dst == peer)
}

async fn joining(lab: &Lab, etcd: &Etcd) {
    let flags = [
        "--paused",
        "--vlans",
        "2",
        "--etcd",
        &etcd.url,
        "--cluster",
        "join",
    ];
    let _first = Daemon::start(&lab.path("data-join"), &lab.path("lxc"), &flags).await;
    let kv = etcd.client().await;
    let nl = RtNetlink::connect().expect("netlink");
    let second = lab.server(2);
    let (peer, bridge2) = (second.underlay_ip, Ipv4Addr::new(192, 168, 2, 2));
    let key = Keys::new("join").host(creepy_meow::model::HostId::new(2).unwrap());
    let mut rows = String::new();
    let mut totals = Vec::new();
    for round in 0..5 {
        // A new server each round: no fabric yet on it, nothing of it learned here.
        let _ = second.run("ip", ["link", "del", "vxlan2"]);
        let _ = second.run("ip", ["link", "del", "br2"]);
        let flushed = std::process::Command::new("ip")
            .args(["neigh", "flush", "dev", "br2"])
            .status();
        assert!(
            flushed.is_ok_and(|s| s.success()),
            "flush server 1's neighbours"
        );
        let data = second.dir.join(format!("data-join-{round}"));
        let lxc = second.dir.join("lxc");
        let serve = Serve::new(2, &data, &lxc).flags(&flags);
        let mut pinger = Pinger::new();
        let t0 = Instant::now();
        let mut process = serve.spawn(Launch::OnServer(second));
        let (mut reg, mut fdb, mut ping) = (None, None, None);
        let mut last_ping = Instant::now() - Duration::from_secs(1);
        while ping.is_none() || fdb.is_none() || reg.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no join: {}",
                process.log()
            );
            if reg.is_none() && kv.get(&key).await.ok().flatten().is_some() {
                reg = Some(t0.elapsed());
            }
            if fdb.is_none() && floods_to(&nl, peer).await {
                fdb = Some(t0.elapsed());
            }
            // Pings only once the member is registered (its fabric is up) and flooded to: an
            // ARP request lost before that would wait out the kernel's 1 s retransmission.
            if fdb.is_some() && last_ping.elapsed() >= Duration::from_millis(5) {
                pinger.send(bridge2);
                last_ping = Instant::now();
            }
            if ping.is_none() && pinger.replies().contains(&bridge2) {
                ping = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let [reg, fdb, ping] = [reg, fdb, ping].map(Option::unwrap);
        totals.push(ping);
        rows += &format!(
            "| {} | {} | {} | {} |\n",
            round + 1,
            ms(reg),
            ms(fdb),
            ms(ping)
        );
        process.kill();
        // The lease would expire in 10 s; deleting the key is what the expiry does.
        kv.txn(Vec::new(), vec![KvOp::Delete(key.clone())])
            .await
            .expect("delete");
        let t = Instant::now();
        while floods_to(&nl, peer).await {
            assert!(t.elapsed() < Duration::from_secs(30), "the entry stays");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let s = Summary::of(&totals);
    common::emit(
        BENCH,
        &format!(
            "## A new member joining (5 times)\n\n\
             ms from its `serve` start to: its key in etcd, server 1's flood entry for it, \
             server 1's first ping answered by its bridge (192.168.2.2)\n\n\
             | round | registered | flood entry | reachable |\n|---|---|---|---|\n{rows}\n\
             reachable: median {} ms, max {} ms\n",
            ms(s.p50),
            ms(s.max)
        ),
    );
}
