//! Reconciliation on the real kernel and LXC (issue 12): a container's record is its desired
//! state, and the daemon brings the host back to it — after a simulated reboot (`setup`, then
//! `serve`), after an `lxc-stop` or a veth detached by hand, after a SIGKILL in the middle of a
//! restore — through jobs that show in `/api/jobs`. It never recreates a container whose rootfs
//! is gone, and never touches a container or a `vethc_*` link it did not make.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::containers::{in_container, ping_from};
use common::daemon::{Daemon, API};
use common::lab::run_checked;
use common::layout::{lxc_path, write_empty_net_config};
use common::netns;
use common::serve::BIN;
use common::{Lab, Server};
use serde_json::Value;

/// No periodic pass: only the one at start and those the test asks for.
const ON_DEMAND: &[&str] = &["--reconcile-interval", "0"];
/// A periodic pass every second.
const EVERY_SECOND: &[&str] = &["--reconcile-interval", "1"];
/// Server 1's own address on br2 (`setup` gives it `192.168.2.<host id>`).
const BR2: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
/// How long a test waits for the daemon to converge (a deadline, not a timing assert).
const CONVERGE: Duration = Duration::from_secs(60);

/// Container `id`'s address: `192.168.2.<id>` ([`Daemon::create`]).
fn addr(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 2, id as u8)
}

/// Runs `tool -P <the server's LXC path> args` in the server's namespace; returns stdout.
fn lxc(s: &Server, tool: &str, args: &[&str]) -> String {
    let path = lxc_path(&s.dir);
    let mut all = vec!["-P", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    s.run_ok(tool, all)
}

/// The containers running from the server's LXC path, sorted.
fn running(s: &Server) -> Vec<String> {
    let mut names: Vec<String> = lxc(s, "lxc-ls", &["--running"])
        .split_whitespace()
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// `lxc-stop -k`, from outside the daemon.
fn kill_container(s: &Server, name: &str) {
    lxc(s, "lxc-stop", &["-n", name, "-k"]);
}

/// Every link in the server's namespace, as `ip -j link show` describes it.
fn links(s: &Server) -> Vec<Value> {
    let out = s.run_ok("ip", ["-j", "link", "show"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}: {out}"))
}

/// The link named `name` in the server's namespace, if any.
fn link(s: &Server, name: &str) -> Option<Value> {
    links(s).into_iter().find(|l| l["ifname"] == name)
}

/// The names of the server's `vethc_*` links, sorted.
fn vethc_links(s: &Server) -> Vec<String> {
    let mut names: Vec<String> = links(s)
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("vethc_"))
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// How many LXC monitors run container `name` from the server's LXC path: one per instance.
fn monitors(s: &Server, name: &str) -> usize {
    let want = format!("[lxc monitor] {} {name}", lxc_path(&s.dir).display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).trim_end_matches('\0') == want)
        .count()
}

/// A reboot of server `s` as the host sees it (its daemon already SIGKILLed): every container
/// stopped hard, every link but `lo` and the underlay gone.
fn reboot(s: &Server) {
    for name in running(s) {
        kill_container(s, &name);
    }
    for l in links(s) {
        let name = l["ifname"].as_str().unwrap();
        if name != "lo" && name != "eth1" {
            // A veth's peer went with it already: a failure here is checked below.
            let _ = s.run("ip", ["link", "del", name]);
        }
    }
    let left: Vec<Value> = links(s).iter().map(|l| l["ifname"].clone()).collect();
    assert_eq!(left, ["lo", "eth1"], "the reboot left links behind");
}

/// `creepy-meow setup` as the boot runs it, for the daemon's VLAN.
fn setup(s: &Server) {
    let host_id = s.host_id.to_string();
    s.run_ok(BIN, ["setup", "--host-id", &host_id, "--vlans", "2"]);
}

/// Polls `check` every 100 ms until it yields a value; panics with the log after [`CONVERGE`].
fn wait_for<T>(d: &Daemon, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {CONVERGE:?} for {what}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for job `id` and asserts it succeeded; returns it.
fn succeeded(d: &Daemon, id: &str) -> Value {
    let job = d.wait(id);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
    job
}

/// The jobs of `kind` a reconcile pass queued for container `id`, newest first.
fn reconcile_jobs(d: &Daemon, id: u32, kind: &str) -> Vec<Value> {
    d.jobs()
        .into_iter()
        .filter(|j| j["container_id"] == id && j["kind"] == kind && j["origin"] == "reconcile")
        .collect()
}

/// Asserts that reconcile passes queued `n` jobs of `kind` for container `id`, all succeeded.
fn assert_repairs(d: &Daemon, id: u32, kind: &str, n: usize) {
    let found = reconcile_jobs(d, id, kind);
    let ok = found.iter().all(|j| j["state"] == "succeeded");
    assert!(
        found.len() == n && ok,
        "want {n} succeeded {kind} jobs for container{id}: {:#}\n{}",
        Value::Array(d.jobs()),
        d.log()
    );
}

/// The kinds of every job about container `id`, newest first.
fn job_kinds(d: &Daemon, id: u32) -> Vec<String> {
    d.jobs()
        .iter()
        .filter(|j| j["container_id"] == id)
        .map(|j| j["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The report's findings, by container ID.
fn findings(report: &Value) -> Vec<(u64, Value)> {
    let drift = report["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("not a report: {report}"));
    let mut out: Vec<(u64, Value)> = drift
        .iter()
        .map(|f| (f["container_id"].as_u64().unwrap(), f.clone()))
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// Container `id` runs once and is healthy: one LXC monitor, its host veth on br2 and up, and
/// in its namespace only `lo` and `eth0`, which holds its address.
fn assert_restored(d: &Daemon, s: &Server, id: u32) {
    let info = d.info(id);
    let seen = (&info["state"], &info["desired_state"], &info["health"]);
    assert_eq!(
        seen,
        (&"RUNNING".into(), &"running".into(), &"ok".into()),
        "{info}"
    );
    assert_eq!(monitors(s, &format!("container{id}")), 1, "container{id}");
    let veth = link(s, &format!("vethc_br{id}")).expect("the host veth");
    assert_eq!(veth["master"], "br2", "{veth}");
    let flags = veth["flags"].as_array().unwrap();
    assert!(flags.contains(&"UP".into()), "{veth}");
    let ns = netns::of_pid(info["pid"].as_u64().unwrap());
    let inside: Value =
        serde_json::from_str(&run_checked(&mut netns::nsenter(&ns, "ip", ["-j", "addr"]))).unwrap();
    let names: Vec<&Value> = inside
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["ifname"])
        .collect();
    assert_eq!(names, ["lo", "eth0"], "container{id}: {inside}");
    let eth0 = &inside[1]["addr_info"];
    let want =
        serde_json::json!({ "family": "inet", "local": addr(id).to_string(), "prefixlen": 24 });
    let has = eth0.as_array().unwrap().iter().any(|a| {
        ["family", "local", "prefixlen"]
            .iter()
            .all(|k| a[k] == want[k])
    });
    assert!(has, "container{id} lacks its address: {eth0}");
}

#[test]
fn after_a_reboot_setup_and_serve_bring_back_what_should_run_and_only_that() {
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let mut d1 = Daemon::start(s1, None, false);
    let d2 = Daemon::start(s2, None, false);
    for (d, id) in [(&d1, 5), (&d1, 6), (&d1, 8), (&d2, 7)] {
        succeeded(d, &d.create(id));
    }
    let stop = d1.lifecycle(6, "stop");
    succeeded(&d1, &stop);
    assert_eq!(running(s1), ["container5", "container8"]);

    d1.kill();
    drop(d1);
    reboot(s1);
    setup(s1);
    let d1 = Daemon::start(s1, None, false);
    // Run again if the SIGKILL came before its end was on disk (see the SIGKILL test below).
    succeeded(&d1, &stop);

    // The pass at start found both stopped and queued their starts, which show as jobs.
    let found = findings(&d1.last_reconcile());
    assert_eq!(found.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 8]);
    let listed: Vec<Value> = found
        .iter()
        .map(|(_, f)| {
            assert_eq!(f["drift"], "stopped", "{f}");
            succeeded(&d1, f["job_id"].as_str().unwrap())
        })
        .collect();
    for job in &listed {
        let all = d1.jobs();
        let shown = all.iter().find(|j| j["id"] == job["id"]).expect("listed");
        assert_eq!(
            (&shown["kind"], &shown["origin"]),
            (&"start".into(), &"reconcile".into())
        );
        assert_eq!(shown["state"], "succeeded");
    }

    for id in [5, 8] {
        assert_restored(&d1, s1, id);
        assert!(s2.ping(addr(id)), "server 2 cannot reach container{id}");
        assert!(ping_from(s2, "container7", addr(id)), "container7 → {id}");
        assert!(ping_from(s1, &format!("container{id}"), addr(7)));
    }
    let info = d1.info(6);
    let seen = (&info["state"], &info["desired_state"], &info["health"]);
    assert_eq!(
        seen,
        (&"STOPPED".into(), &"stopped".into(), &"stopped".into()),
        "{info}"
    );
    assert_eq!(running(s1), ["container5", "container8"]);
    assert_eq!(vethc_links(s1), ["vethc_br5", "vethc_br8"]);
    assert_eq!(
        job_kinds(&d1, 6),
        ["stop", "create"],
        "the stopped one was touched"
    );
    // Converged: a second pass finds nothing to do.
    assert_eq!(findings(&d1.reconcile()), []);
}

#[test]
fn the_periodic_pass_restarts_a_container_stopped_by_hand_and_reattaches_its_veth() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start_with(s, None, EVERY_SECOND);
    succeeded(&d, &d.create(5));
    let before = d.info(5)["pid"].clone();

    kill_container(s, "container5");
    let since = Instant::now();
    let info = wait_for(&d, "container5 to run again", || {
        let info = d.info(5);
        (info["state"] == "RUNNING" && info["health"] == "ok").then_some(info)
    });
    eprintln!(
        "container5 ran again {:?} after lxc-stop -k",
        since.elapsed()
    );
    assert_ne!(info["pid"], before, "{info}");
    assert_repairs(&d, 5, "start", 1);
    assert_repairs(&d, 5, "repair", 0);
    assert_restored(&d, s, 5);
    assert!(s.ping(addr(5)), "container5 does not answer");

    // The server's ARP entry for container5 is now fresh: see `after_a_repair_a_neighbour_...`.
    s.run_ok("ip", ["link", "set", "vethc_br5", "nomaster"]);
    wait_for(&d, "vethc_br5 back on br2", || {
        let ok = d.info(5)["health"] == "ok";
        let master = link(s, "vethc_br5").and_then(|l| l.get("master").cloned());
        (ok && master == Some("br2".into())).then_some(())
    });
    assert_repairs(&d, 5, "repair", 1);
    assert_eq!(d.info(5)["pid"], info["pid"], "a repair does not restart");
    assert_restored(&d, s, 5);
    // Its new eth0 has the MAC the old one had (see `after_a_repair_a_neighbour_...`); the
    // container speaking first works either way.
    assert!(
        ping_from(s, "container5", BR2),
        "container5 cannot ping out"
    );
    assert!(s.ping(addr(5)), "container5 does not answer");
}

#[test]
fn a_veth_moved_off_its_bridge_is_put_back_by_a_pass_on_demand() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start_with(s, None, ON_DEMAND);
    succeeded(&d, &d.create(5));
    let pid = d.info(5)["pid"].clone();

    s.run_ok("ip", ["link", "set", "vethc_br5", "nomaster"]);
    let info = d.info(5);
    assert_eq!(info["health"], "degraded", "{info}");
    assert_eq!(
        info["problems"],
        serde_json::json!(["vethc_br5 is not on br2"])
    );
    let found = findings(&d.reconcile());
    assert_eq!(found.len(), 1, "{found:?}");
    let (id, f) = &found[0];
    assert_eq!((*id, &f["drift"]), (5, &"network".into()), "{f}");
    let job = succeeded(&d, f["job_id"].as_str().unwrap());
    assert_eq!(
        (&job["kind"], &job["origin"]),
        (&"repair".into(), &"reconcile".into())
    );
    assert_eq!(d.info(5)["pid"], pid, "a repair does not restart");
    assert_restored(&d, s, 5);
    assert!(s.ping(addr(5)), "container5 does not answer");
}

#[test]
fn a_container_whose_rootfs_is_gone_is_reported_missing_never_recreated_and_destroyable() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start_with(s, None, ON_DEMAND);
    succeeded(&d, &d.create(5));
    succeeded(&d, &d.create(6));
    // One stopped through the API (desired stopped), one by hand (desired running).
    succeeded(&d, &d.lifecycle(5, "stop"));
    kill_container(s, "container6");
    let rootfs = |id: u32| lxc_path(&s.dir).join(format!("container{id}/rootfs"));
    for id in [5, 6] {
        std::fs::remove_dir_all(rootfs(id)).unwrap();
    }

    let report = d.reconcile();
    let found = findings(&report);
    assert_eq!(found.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6]);
    for (_, f) in &found {
        let seen = (&f["drift"], &f["health"], &f["job_id"]);
        assert_eq!(
            seen,
            (&"missing".into(), &"missing".into(), &Value::Null),
            "{f}"
        );
    }
    assert_eq!(d.last_reconcile()["drift"], report["drift"]);
    for id in [5, 6] {
        let info = d.info(id);
        let seen = (&info["record_state"], &info["health"]);
        assert_eq!(seen, (&"missing".into(), &"missing".into()), "{info}");
    }
    // Already known missing: nothing more to do, and nothing is made again.
    assert_eq!(findings(&d.reconcile()), []);
    for id in [5, 6] {
        assert!(!rootfs(id).exists(), "container{id}'s rootfs was recreated");
    }
    assert_eq!(running(s), Vec::<String>::new());
    assert_eq!(job_kinds(&d, 5), ["stop", "create"]);
    assert_eq!(job_kinds(&d, 6), ["create"]);

    for id in [5, 6] {
        succeeded(&d, &d.destroy(id));
        assert!(!lxc_path(&s.dir).join(format!("container{id}")).exists());
    }
    let listed = d.json(&["-s", &format!("{API}/api/container/list")]);
    assert_eq!(listed["containers_id"], serde_json::json!([]));
}

/// The report lists exactly `container77` and `vethc_br77` as foreign, and no drift.
fn assert_reported_foreign(report: &Value) {
    assert_eq!(
        report["foreign"]["containers"],
        serde_json::json!(["container77"])
    );
    assert_eq!(
        report["foreign"]["links"],
        serde_json::json!(["vethc_br77"])
    );
    assert_eq!(findings(report), [], "{report}");
}

/// `container77` still runs as `pid`, and `vethc_br77` is exactly as `veth` described it.
fn assert_untouched(d: &Daemon, s: &Server, pid: &str, veth: &Value) {
    assert_eq!(common::containers::pid_of(s, "container77"), pid);
    assert_eq!(link(s, "vethc_br77").as_ref(), Some(veth));
    let code = d.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{API}/api/container/info/77"),
    ]);
    assert_eq!(String::from_utf8_lossy(&code.stdout), "404");
    assert_eq!(job_kinds(d, 77), Vec::<String>::new());
}

#[test]
fn a_container_and_a_veth_the_daemon_never_made_are_left_alone_and_reported_foreign() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let mut d = Daemon::start_with(s, None, ON_DEMAND);
    succeeded(&d, &d.create(5));
    let conf = write_empty_net_config(&s.dir);
    let conf = conf.to_str().unwrap();
    let create = ["-n", "container77", "-t", "busybox", "-f", conf];
    lxc(s, "lxc-create", &create);
    lxc(s, "lxc-start", &["-n", "container77"]);
    let pid = common::containers::pid_of(s, "container77");
    let pair = "link add vethc_br77 type veth peer name byhand77";
    s.run_ok("ip", pair.split(' '));
    let veth = link(s, "vethc_br77").unwrap();

    assert_reported_foreign(&d.reconcile());
    assert_untouched(&d, s, &pid, &veth);
    assert_eq!(d.info(5)["health"], "ok");

    // The pass at start leaves them alone too.
    d.sigterm();
    drop(d);
    let d = Daemon::start_with(s, None, ON_DEMAND);
    assert_reported_foreign(&d.last_reconcile());
    assert_untouched(&d, s, &pid, &veth);
    assert_eq!(running(s), ["container5", "container77"]);
}

#[test]
fn sigkill_during_a_restore_then_restart_leaves_the_container_running_once() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let mut d = Daemon::start(s, None, false);
    succeeded(&d, &d.create(5));
    let points = [
        "tool_spawned:lxc-start",
        "before_action:create_veth",
        "before_done:configure_network",
    ];
    for (reboots, point) in (1..).zip(points) {
        // A clean stop before the reboot: the SIGKILL under test is the one at `point`. A SIGKILL
        // right after a job was reported finished may land before that end is on disk (it is
        // answered before its flush), and the job would run again on restart.
        d.sigterm();
        drop(d);
        reboot(s);
        setup(s);
        // The pass at start queues the restore; the worker takes it and is killed at `point`.
        Daemon::spawn(s, Some(point), false).kill_at_barrier(point);
        d = Daemon::start(s, None, false);
        let restore = reconcile_jobs(&d, 5, "start").into_iter().next();
        let restore = restore.unwrap_or_else(|| panic!("no restore queued:\n{}", d.log()));
        let job = succeeded(&d, restore["id"].as_str().unwrap());
        let attempts = job["attempts"].as_u64().unwrap();
        assert!(attempts >= 2, "killed at {point}, not run again: {job}");
        // One restore per reboot: the one killed was run again, not queued a second time.
        assert_repairs(&d, 5, "start", reboots);
        assert_eq!(running(s), ["container5"], "killed at {point}");
        assert_eq!(vethc_links(s), ["vethc_br5"], "killed at {point}");
        assert_restored(&d, s, 5);
        assert!(
            s.ping(addr(5)),
            "killed at {point}: container5 does not answer"
        );
    }
}

/// Found by the periodic test above: a repair (and a start or restart) makes the veth pair
/// again, and the container's `eth0` got a new random MAC. A neighbour that talked to the
/// container kept the old MAC in its ARP cache (REACHABLE for 15-45 s, then DELAY and PROBE:
/// ip-neighbour(8)) and could not reach it meanwhile. `eth0` now gets the MAC its address
/// gives (`model::container_mac`), the same in every pair made for it.
#[test]
fn after_a_repair_a_neighbour_that_talked_to_the_container_reaches_it_at_once() {
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let d1 = Daemon::start_with(s1, None, ON_DEMAND);
    let d2 = Daemon::start_with(s2, None, ON_DEMAND);
    succeeded(&d1, &d1.create(5));
    succeeded(&d2, &d2.create(7));
    assert!(ping_from(s2, "container7", addr(5)), "container7 → 5");

    s1.run_ok("ip", ["link", "set", "vethc_br5", "nomaster"]);
    let found = findings(&d1.reconcile());
    succeeded(&d1, found[0].1["job_id"].as_str().unwrap());
    assert_restored(&d1, s1, 5);
    let reached = ping_from(s2, "container7", addr(5));
    let text = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let neigh = text(in_container(s2, "container7", "ip", &["neigh"]));
    let eth0 = text(in_container(
        s1,
        "container5",
        "ip",
        &["-br", "link", "show", "eth0"],
    ));
    assert!(
        reached,
        "container7 cannot reach container5 after its repair: container7's ARP cache:\n{neigh}\ncontainer5: {eth0}"
    );
}
