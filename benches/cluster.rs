//! Cluster mode on etcd (issue 16): what the cluster costs a create, how long a new member takes
//! to be reachable, and how long listing the cluster's reservations takes.
//!
//! A two-server lab; etcd (one member) runs in server 1's namespace on its underlay address.
//!
//! 1. **Accept**: 32 closed-loop clients POSTing creates to a `--paused` daemon (so only the
//!    API, the reservation and the durable enqueue are measured), the same daemon without and
//!    with `--etcd`, alternating three times each, a fresh store and cluster name each.
//!    Targets: with etcd ≥ 1,000 creates/s, and its p50 at most 3 ms over the p50 without.
//! 2. **Listing**: 10,000 reservations put in etcd, then `GET /api/cluster/containers` 20 times
//!    against etcd's own range read of the same keys from the bench (the floor), same run.
//!    Target: ≤ 200 ms (median).
//! 3. **Joining**: a member on server 1; a daemon started on server 2 five times (each a new
//!    node: fresh data dir; between rounds it is killed and its key deleted, as a lease expiry
//!    would): from its start to its key in etcd, to server 1's flood entry for it, and to server
//!    1 pinging its bridge address across the overlay. Reported (no target).

#[path = "common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use creepy_meow::cluster::{Keys, Reservation};
use creepy_meow::sys::rtnl::RtNetlink;
use creepy_meow::sys::{Kv, KvOp, Netlink};
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
    accept(lab, &etcd, secs).await;
    listing(lab, &etcd).await;
    joining(lab, &etcd).await;
}

/// One accept level's numbers.
struct Level {
    rate: f64,
    lat: Summary,
    errors: u64,
}

/// 32 clients for `secs` against a fresh paused daemon with `extra` flags.
async fn level(lab: &Lab, name: &str, k: u64, extra: &[&str], secs: Duration) -> Level {
    let data = lab.path(&format!("data-{name}"));
    let lxc = lab.path("lxc");
    let mut flags = vec!["--paused", "--max-queued", "10000000"];
    flags.extend_from_slice(extra);
    let daemon = Daemon::start(&data, &lxc, &flags).await;
    let base = 1 + k * 1_000_000;
    let make = Arc::new(move |n: u64| {
        let id = (base + n) as u32;
        Req::post_form(
            "/api/container/create",
            common::create_form(id, (2 + id % 3) as u8),
        )
    });
    let res = load(common::daemon::PORT, 32, secs, 202, make).await;
    drop(daemon);
    Level {
        rate: res.rate(),
        lat: Summary::of(&res.latencies),
        errors: res.errors,
    }
}

async fn accept(lab: &Lab, etcd: &Etcd, secs: Duration) {
    let (mut alone, mut clustered) = (Vec::new(), Vec::new());
    for round in 0..6u64 {
        let name = format!("accept-{round}");
        if round % 2 == 0 {
            alone.push(level(lab, &name, round, &[], secs).await);
        } else {
            let flags = ["--etcd", &etcd.url, "--cluster", &name];
            clustered.push(level(lab, &name, round, &flags, secs).await);
        }
    }
    let mut out = String::from(
        "## Accept with and without etcd, 32 clients, alternating\n\n\
         | run | kind | accepted/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n",
    );
    for (i, (a, c)) in alone.iter().zip(&clustered).enumerate() {
        for (j, (l, kind)) in [(a, "alone"), (c, "etcd")].into_iter().enumerate() {
            out += &format!(
                "| {} | {kind} | {:.0} | {} | {} | {} |\n",
                2 * i + j + 1,
                l.rate,
                ms(l.lat.p50),
                ms(l.lat.p99),
                l.errors
            );
        }
    }
    let median = |ls: &[Level], f: &dyn Fn(&Level) -> f64| {
        let mut v: Vec<f64> = ls.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = median(&clustered, &|l| l.rate);
    let p50 = |ls: &[Level]| median(ls, &|l| l.lat.p50.as_secs_f64() * 1e3);
    let over = p50(&clustered) - p50(&alone);
    out += &format!(
        "\nmedian: alone {:.0}/s p50 {:.2} ms; etcd {rate:.0}/s p50 {:.2} ms: \
         ≥ 1,000/s **{}**, p50 +{over:.2} ms ≤ 3 ms **{}**\n",
        median(&alone, &|l| l.rate),
        p50(&alone),
        p50(&clustered),
        verdict(rate >= 1000.0),
        verdict(over <= 3.0),
    );
    common::emit(BENCH, &out);
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
            if last_ping.elapsed() >= Duration::from_millis(5) {
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
