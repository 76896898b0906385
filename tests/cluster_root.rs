//! Cluster mode (issue 16) on simulated servers and a real etcd, started by the tests on a
//! server of its own on the lab switch; the switch drops multicast and no daemon gets
//! `--peers`, so the servers find each other through etcd alone:
//!
//! - containers on three servers reach each other; a fourth server that joins is reachable
//!   from the three without restarting them;
//! - 20 concurrent creates of one ID, or of one (VLAN, address) under 20 IDs, spread over the
//!   three: exactly one is accepted;
//! - a server cut from the switch answers its creates 503 while the others go on creating; its
//!   lease expires and the others drop its flood entries; plugged back, it rejoins and nothing
//!   is held twice;
//! - a daemon killed between its etcd reservation and its local enqueue leaves no reservation
//!   without a job once it is back;
//! - etcd stopped: creates 503, destroys succeed, and their releases land once etcd is back.
//!
//! The waits on background work (a lease expiring, a watch, a sync pass) are bounded
//! ([`eventually`]); nothing asserts how long anything took.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use creepy_meow::cluster::{Keys, DEFAULT_CLUSTER};
use serde_json::Value;

use common::containers::ping_from;
use common::daemon::{Daemon, API};
use common::etcd::Etcd;
use common::switch::{cut, drop_multicast, flood_peers, reconnect};
use common::{eventually, Lab, Server};

/// The barrier where a create is queued locally (gated) and its etcd claim not sent.
const CLAIM: &str = "claim:create";
/// The barrier where a create is reserved in etcd and queued gated, its gate not opened.
const RESERVED: &str = "reserved:create";
/// Far above a lease's TTL (10 s) plus a watch's delivery: the bound on waits for the peers.
const MEMBERS_SETTLE: Duration = Duration::from_secs(40);
/// The curl guard on a create: a hang fails the test instead of stalling it. Not a timing
/// assert: the daemon answers 503 well before it.
const CLIENT_TIMEOUT: &str = "5";

/// Container `id`'s name on its server.
fn name(id: u32) -> String {
    format!("container{id}")
}

/// `serve` flags for `server` in the cluster on `etcd`: VLAN 2, its API URL on the underlay.
fn cluster_flags(server: &Server, etcd: &Etcd) -> Vec<String> {
    let api = format!("http://{}:8080", server.underlay_ip);
    ["--vlans", "2", "--etcd", &etcd.url(), "--api-url", &api]
        .map(String::from)
        .to_vec()
}

/// Starts `server`'s daemon in the cluster, held at `barrier` if given.
fn start<'a>(server: &'a Server, etcd: &Etcd, barrier: Option<&str>) -> Daemon<'a> {
    let flags = cluster_flags(server, etcd);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start_with(server, barrier, &flags)
}

/// A create of `id` on VLAN 2 at `ip` (`192.168.2.N/24`) from `server`, not yet sent.
fn create_cmd(server: &Server, id: u32, ip: &str) -> Command {
    let body = format!("id={id}&vlan=2&ip={ip}");
    let url = format!("{API}/api/container/create");
    let args = ["-s", "--max-time", CLIENT_TIMEOUT, "-w", "\n%{http_code}"];
    let mut cmd = server.cmd("curl", args);
    cmd.args(["--data", &body, &url]).stdout(Stdio::piped());
    cmd
}

/// A create's HTTP status and JSON body, from [`create_cmd`]'s output.
fn answer(out: &Output) -> (u16, Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends a create of `id` at `192.168.2.<id>/24` from `server`.
fn create(server: &Server, id: u32) -> (u16, Value) {
    answer(
        &create_cmd(server, id, &format!("192.168.2.{id}/24"))
            .output()
            .unwrap(),
    )
}

/// Creates container `id` at `192.168.2.<id>/24` through `d` and waits until it runs.
fn create_ok(d: &Daemon, id: u32) {
    let job = d.wait(&d.create(id));
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
}

/// Destroys container `id` through `d` and waits until it is gone.
fn destroy_ok(d: &Daemon, id: u32) {
    let job = d.wait(&d.destroy(id));
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
}

/// The cluster's reservations as `d` lists them: container ID → holding host ID.
fn reserved(d: &Daemon) -> BTreeMap<u64, u64> {
    let v = d.json(&["-s", &format!("{API}/api/cluster/containers")]);
    let list = v["containers"].as_array().unwrap_or_else(|| panic!("{v}"));
    let mut out = BTreeMap::new();
    for c in list {
        let (id, host) = (c["id"].as_u64().unwrap(), c["host_id"].as_u64().unwrap());
        assert!(out.insert(id, host).is_none(), "{id} reserved twice: {v}");
    }
    out
}

/// The containers `d` lists (`GET /api/container/list`), sorted.
fn listed(d: &Daemon) -> Vec<u64> {
    let v = d.json(&["-s", &format!("{API}/api/container/list")]);
    let mut ids: Vec<u64> = v["containers_id"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    ids.sort_unstable();
    ids
}

/// `d`'s standing in the cluster (`connected`, `unavailable`, ...) as `/healthz` says it.
fn standing(d: &Daemon) -> String {
    let h = d.json(&["-s", &format!("{API}/healthz")]);
    h["cluster"]["state"].as_str().unwrap_or("").to_string()
}

/// Waits until `server`'s `vxlan2` floods to exactly the underlay addresses of `hosts`.
fn wait_flood(lab: &Lab, server: &Server, hosts: &[u8]) {
    let want: Vec<String> = hosts
        .iter()
        .map(|&h| lab.server(h.into()).underlay_ip.to_string())
        .collect();
    let what = format!("{} floods vxlan2 to {want:?}", server.netns);
    eventually(&what, MEMBERS_SETTLE, || {
        flood_peers(server, "vxlan2") == want
    });
}

/// Every ordered pair of the containers `ids` (container N on server N % 10) pings.
fn assert_pairs_reach(lab: &Lab, ids: &[u32], when: &str) {
    for &from in ids {
        for &to in ids.iter().filter(|&&to| to != from) {
            let server = lab.server((from % 10) as usize);
            let to_ip = format!("192.168.2.{to}").parse().unwrap();
            assert!(
                ping_from(server, &name(from), to_ip),
                "{when}: {} cannot reach {}",
                name(from),
                name(to)
            );
        }
    }
}

#[test]
fn servers_on_etcd_alone_reach_each_other_reserve_once_and_survive_a_partition() {
    let lab = Lab::new(5);
    drop_multicast(&lab);
    let etcd = Etcd::start(lab.server(5));
    let daemons: Vec<Daemon> = (1..=3).map(|h| start(lab.server(h), &etcd, None)).collect();
    for (i, others) in [[2, 3], [1, 3], [1, 2]].iter().enumerate() {
        wait_flood(&lab, lab.server(i + 1), others);
    }
    for (d, id) in daemons.iter().zip([11, 12, 13]) {
        create_ok(d, id);
    }
    assert_pairs_reach(&lab, &[11, 12, 13], "three servers on etcd");

    // A fourth server joins; the three running daemons add it by themselves.
    let fourth = start(lab.server(4), &etcd, None);
    create_ok(&fourth, 14);
    for (i, others) in [[2, 3, 4], [1, 3, 4], [1, 2, 4]].iter().enumerate() {
        wait_flood(&lab, lab.server(i + 1), others);
    }
    assert_pairs_reach(&lab, &[11, 12, 13, 14], "a fourth server joined");

    one_of_twenty_wins(&lab, &daemons, &etcd);
    a_cut_server_is_dropped_then_rejoins(&lab, &daemons, &fourth);
}

/// 20 creates at once spread over the three servers, then 20 of one address under 20 IDs:
/// one `202` each time, every other answer a `409 conflict`, and etcd holds the winner only.
fn one_of_twenty_wins(lab: &Lab, daemons: &[Daemon], etcd: &Etcd) {
    let keys = Keys::new(DEFAULT_CLUSTER);
    let same_id: Vec<(u32, String)> = (0..20).map(|_| (50, "192.168.2.50/24".into())).collect();
    let same_ip: Vec<(u32, String)> = (60..80).map(|id| (id, "192.168.2.60/24".into())).collect();
    for (race, what) in [(same_id, "one ID"), (same_ip, "one address")] {
        let children: Vec<_> = race
            .iter()
            .enumerate()
            .map(|(i, (id, ip))| {
                let server = lab.server(i % 3 + 1);
                (
                    i % 3,
                    create_cmd(server, *id, ip).spawn().expect("spawn curl"),
                )
            })
            .collect();
        let answers: Vec<(usize, u16, Value)> = children
            .into_iter()
            .map(|(i, c)| {
                let (status, body) = answer(&c.wait_with_output().expect("curl"));
                (i, status, body)
            })
            .collect();
        let won: Vec<&(usize, u16, Value)> = answers.iter().filter(|a| a.1 == 202).collect();
        assert_eq!(won.len(), 1, "{what}: {answers:?}");
        let (winner, _, accepted) = won[0];
        let mut named = 0;
        for (_, status, body) in answers.iter().filter(|a| a.1 != 202) {
            assert_eq!(
                (*status, &body["code"]),
                (409, &Value::from("conflict")),
                "{what}: {body}"
            );
            let message = body["error"].as_str().unwrap_or("");
            if let Some(holder) = message.split("held by host ").nth(1) {
                let host = holder.split_whitespace().next().unwrap_or("");
                assert_eq!(host, (winner + 1).to_string(), "{what}: {message}");
                named += 1;
            }
        }
        assert!(
            named > 0,
            "{what}: no refusal named the holder: {answers:?}"
        );
        let d = &daemons[*winner];
        let job = d.wait(accepted["job_id"].as_str().unwrap());
        assert_eq!(job["state"], "succeeded", "{what}: {job}");
        let id = job["container_id"].as_u64().expect("container_id");
        let raced: Vec<u64> = race.iter().map(|r| u64::from(r.0)).collect();
        let held: Vec<(u64, u64)> = reserved(d)
            .into_iter()
            .filter(|r| raced.contains(&r.0))
            .collect();
        assert_eq!(held, [(id, *winner as u64 + 1)], "{what}");
        let address = race[0].1.trim_end_matches("/24");
        let key = format!("{}2/{address}", keys.addresses());
        assert_eq!(etcd.keys(&key), [key], "{what}");
    }
}

/// Server 3 cut from the switch: its creates answer 503, the others create on, and what it
/// holds stays its own; its lease expires and the others stop flooding to it. Plugged back, it
/// rejoins; every container is reserved once, by the server that lists it.
fn a_cut_server_is_dropped_then_rejoins(lab: &Lab, daemons: &[Daemon], fourth: &Daemon) {
    let alive = [&daemons[0], &daemons[1], fourth];
    cut(lab, 3);
    let (status, body) = create(lab.server(3), 30);
    assert_eq!(
        (status, &body["code"]),
        (503, &Value::from("cluster_unavailable")),
        "{body}"
    );
    assert_eq!(standing(&daemons[2]), "unavailable");
    create_ok(&daemons[0], 31);
    create_ok(&daemons[1], 32);
    let (status, body) = create(lab.server(1), 13);
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap_or("");
    assert!(message.contains("held by host 3"), "{body}");
    for (host, others) in [(1, [2, 4]), (2, [1, 4]), (4, [1, 2])] {
        wait_flood(lab, lab.server(host), &others);
    }
    let hosts = alive[0].json(&["-s", &format!("{API}/api/cluster/hosts")]);
    let three = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"] == 3);
    assert_eq!(
        three.map(|h| &h["lease"]),
        Some(&Value::from("expired")),
        "{hosts}"
    );

    reconnect(lab);
    for (host, others) in [(1, [2, 3, 4]), (2, [1, 3, 4]), (4, [1, 2, 3])] {
        wait_flood(lab, lab.server(host), &others);
    }
    eventually("server 3 is connected again", MEMBERS_SETTLE, || {
        standing(&daemons[2]) == "connected"
    });
    assert_pairs_reach(lab, &[11, 13], "server 3 rejoined");

    let all = [&daemons[0], &daemons[1], &daemons[2], fourth];
    let cluster = reserved(&daemons[2]);
    for (host, d) in (1u64..).zip(all) {
        let held: Vec<u64> = cluster
            .iter()
            .filter(|r| *r.1 == host)
            .map(|r| *r.0)
            .collect();
        assert_eq!(
            listed(d),
            held,
            "host {host}: listed vs reserved {cluster:?}"
        );
    }
    assert!(
        !cluster.contains_key(&30),
        "a refused create is reserved: {cluster:?}"
    );
}

/// Every reservation key in `etcd` (containers, then addresses), sorted.
fn reservations(etcd: &Etcd) -> Vec<String> {
    let keys = Keys::new(DEFAULT_CLUSTER);
    let mut all = etcd.keys(&keys.containers());
    all.extend(etcd.keys(&keys.addresses()));
    all.sort();
    all
}

/// Container `id`'s two reservation keys (at `192.168.2.<id>` on VLAN 2), sorted as
/// [`reservations`] lists them.
fn keys_of(id: u32) -> Vec<String> {
    let keys = Keys::new(DEFAULT_CLUSTER);
    vec![
        format!("{}2/192.168.2.{id}", keys.addresses()),
        format!("{}{id}", keys.containers()),
    ]
}

#[test]
fn releases_wait_for_a_stopped_etcd_and_a_crash_leaves_a_job_with_its_reservation_or_neither() {
    let lab = Lab::new(2);
    let mut etcd = Etcd::start(lab.server(2));
    let server = lab.server(1);
    releases_wait_for_etcd(server, &mut etcd);
    a_crash_before_the_claim_leaves_neither(server, &etcd);
    a_crash_after_both_leaves_the_job_and_its_reservation(server, &etcd);
}

/// etcd frozen: creates answer 503 (never hang), destroys succeed; etcd killed and started
/// again on its data: the destroy's release lands by itself, and creates work again.
fn releases_wait_for_etcd(server: &Server, etcd: &mut Etcd) {
    let mut d = start(server, etcd, None);
    create_ok(&d, 40);
    assert_eq!(reservations(etcd), keys_of(40));

    etcd.freeze(true);
    let (status, body) = create(server, 41);
    let code = &body["code"];
    assert_eq!(
        (status, code),
        (503, &Value::from("cluster_unavailable")),
        "{body}"
    );
    assert_eq!(standing(&d), "unavailable");
    destroy_ok(&d, 40);
    assert_eq!(listed(&d), Vec::<u64>::new());

    etcd.kill();
    etcd.start_again();
    eventually("the destroy's release landed", MEMBERS_SETTLE, || {
        reservations(etcd).is_empty()
    });
    eventually("the daemon is connected again", MEMBERS_SETTLE, || {
        standing(&d) == "connected"
    });
    create_ok(&d, 41);
    assert!(d.sigterm().success(), "{}", d.log());
}

/// A daemon SIGKILLed while its create is queued locally (gated: the worker does not take
/// it) and its etcd claim is not sent: once the daemon is back, no reservation and no job
/// (never one without the other); the ID is free again.
fn a_crash_before_the_claim_leaves_neither(server: &Server, etcd: &Etcd) {
    let held = start(server, etcd, Some(CLAIM));
    let mut request = create_cmd(server, 42, "192.168.2.42/24").spawn().unwrap();
    held.wait_barrier(CLAIM);
    eventually("the gated job is stored", MEMBERS_SETTLE, || {
        jobs_of(&held, 42) == 1
    });
    assert_eq!(reservations(etcd), keys_of(41), "{}", held.log());
    held.kill_at_barrier(CLAIM);
    let _ = request.wait();

    let mut d = start(server, etcd, None);
    eventually("the gated job is removed", MEMBERS_SETTLE, || {
        jobs_of(&d, 42) == 0
    });
    assert_eq!(reservations(etcd), keys_of(41), "{}", d.log());
    create_ok(&d, 42);
    assert!(d.sigterm().success(), "{}", d.log());
}

/// A daemon SIGKILLed once its create is reserved in etcd and queued locally, before the gate
/// opens (the client may have been told 202): once back, the job runs and keeps its keys.
fn a_crash_after_both_leaves_the_job_and_its_reservation(server: &Server, etcd: &Etcd) {
    let held = start(server, etcd, Some(RESERVED));
    let mut request = create_cmd(server, 43, "192.168.2.43/24").spawn().unwrap();
    held.wait_barrier(RESERVED);
    let with_43 = sorted([keys_of(41), keys_of(42), keys_of(43)].concat());
    assert_eq!(reservations(etcd), with_43, "{}", held.log());
    held.kill_at_barrier(RESERVED);
    let _ = request.wait();

    let d = start(server, etcd, None);
    let job = d
        .jobs()
        .into_iter()
        .find(|j| j["container_id"] == 43)
        .unwrap_or_else(|| panic!("no job for 43: {}", d.log()));
    let job = d.wait(job["id"].as_str().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
    assert_eq!(reservations(etcd), with_43);
    assert_eq!(reserved(&d)[&43], 1);
}

/// How many jobs `d` holds for container `id`.
fn jobs_of(d: &Daemon, id: u32) -> usize {
    d.jobs().iter().filter(|j| j["container_id"] == id).count()
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// The reservations' group commit (`cluster/batch.rs`) sends several claims as one request of
/// nested transactions: on a real etcd each stands on its own — one whose keys are taken fails
/// while the others in the same request apply.
#[test]
fn nested_transactions_on_etcd_each_apply_or_fail_on_their_own() {
    use creepy_meow::sys::etcd::EtcdKv;
    use creepy_meow::sys::{Kv, KvCond, KvOp, KvTxn};
    let lab = Lab::new(1);
    let etcd = Etcd::start(lab.server(1));
    let url = etcd.url();
    let (applied, keys) = common::on_server::on_server(lab.server(1), move || async move {
        let kv = EtcdKv::connect(&[url], Duration::from_secs(5))
            .await
            .unwrap();
        let claim = |n: u32| KvTxn {
            when: vec![
                KvCond::Absent(format!("t/c/{n}")),
                KvCond::Absent(format!("t/a/{n}")),
            ],
            then: [format!("t/c/{n}"), format!("t/a/{n}")]
                .map(|key| KvOp::Put {
                    key,
                    value: b"v".to_vec(),
                    lease: 0,
                })
                .to_vec(),
        };
        // Key 2 taken before the batch (etcd answers: `Etcd::start` waited for its health).
        assert!(kv.txn(vec![], claim(2).then).await.unwrap());
        let applied = kv.txns((1..=4).map(claim).collect()).await.unwrap();
        let keys: Vec<String> = kv
            .list("t/")
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect();
        (applied, keys)
    });
    assert_eq!(applied, [true, false, true, true]);
    assert_eq!(keys.len(), 8, "{keys:?}");
}
