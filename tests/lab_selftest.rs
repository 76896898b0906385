//! Self-test of the simulated-server lab in `tests/common/lab.rs`. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::lab::{encode_tag, tag_pid};
use common::layout::{lxc_path, write_empty_net_config};
use common::netns;
use common::ping::{ping_args, size_args};
use common::{sweep_stale, Lab};

fn netns_paths(lab: &Lab) -> Vec<PathBuf> {
    std::iter::once(lab.switch_netns())
        .chain(lab.servers().iter().map(|s| s.netns.as_str()))
        .map(netns::named)
        .collect()
}

fn assert_all_gone(paths: &[PathBuf]) {
    for p in paths {
        assert!(
            !p.exists(),
            "{} still exists after the lab was dropped",
            p.display()
        );
    }
}

#[test]
fn servers_ping_each_other_and_namespaces_are_removed_on_drop() {
    let lab = Lab::new(2);
    let paths = netns_paths(&lab);
    assert_eq!(paths.len(), 3);
    for p in &paths {
        assert!(
            p.exists(),
            "{} should exist while the lab is alive",
            p.display()
        );
    }
    let root = lab.dir().to_path_buf();
    assert!(lab.server(1).dir.is_dir() && lab.server(2).dir.starts_with(&root));
    assert_eq!(lab.server(2).underlay_ip, Ipv4Addr::new(10, 77, 0, 2));
    assert_eq!(lab.server(2).host_id, 2);
    assert!(
        lab.server(1).ping(lab.server(2).underlay_ip),
        "server 1 cannot ping server 2"
    );
    assert!(
        lab.server(2).ping(lab.server(1).underlay_ip),
        "server 2 cannot ping server 1"
    );
    drop(lab);
    assert_all_gone(&paths);
    assert!(
        !root.exists(),
        "{} should be removed on drop",
        root.display()
    );
}

#[test]
fn panic_inside_a_test_still_removes_namespaces() {
    let seen: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(2);
        seen.lock().unwrap().extend(netns_paths(&lab));
        panic!("deliberate panic while a lab is alive");
    }));
    assert!(result.is_err());
    let paths = seen.into_inner().unwrap();
    assert_eq!(paths.len(), 3);
    assert_all_gone(&paths);
}

#[test]
fn cmd_runs_inside_the_server_namespace() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let links = s.run_ok("ip", ["-br", "link"]);
    assert!(links.contains("eth1"), "no eth1 in server ns:\n{links}");
    assert!(
        !links.contains("eth0"),
        "root namespace's eth0 visible in server ns:\n{links}"
    );
    let addrs = String::from_utf8(
        s.cmd("ip", ["-br", "-4", "addr", "show", "dev", "eth1"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(addrs.contains("10.77.0.1/24"), "{addrs}");
    let out = s.run("false", [] as [&str; 0]);
    assert!(!out.status.success());
}

#[test]
fn ping_size_respects_the_1500_mtu() {
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2).underlay_ip);
    assert!(
        s1.ping_size(s2, 1472, true),
        "1472 + 28 = 1500 bytes with DF must pass"
    );
    // One byte over: refused by the sender (EMSGSIZE), not merely lost on the way.
    let over = s1.run(
        "ping",
        ping_args(Ipv4Addr::new(10, 77, 0, 2), &size_args(1473, true)),
    );
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert!(
        !over.status.success() && stderr.contains("message too long, mtu=1500"),
        "1501 bytes with DF must be refused at eth1's MTU of 1500: {over:?}"
    );
    assert!(
        s1.ping_size(s2, 3000, false),
        "fragmentable 3028 bytes must pass"
    );
}

#[test]
fn spawned_processes_and_their_children_are_killed_on_drop() {
    let lab = Lab::new(1);
    // `timeout` forks `sleep` as a child, so this also covers the process group.
    let mut child = lab.server(1).spawn("timeout", ["600", "sleep", "600"]);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let grandchild = loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next() {
            break k.to_string();
        }
        assert!(Instant::now() < deadline, "timeout never forked sleep");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(lab);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "spawned pid {pid} survived the lab"
    );
    assert!(
        child.wait().is_err(),
        "the lab should already have reaped it"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{grandchild}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            break; // killed, waiting for init to reap it
        }
        assert!(
            Instant::now() < deadline,
            "grandchild {grandchild} survived the lab"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn running_lxc_container_is_stopped_and_destroyed_on_drop() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let lxc = lxc_path(&s.dir);
    let conf = write_empty_net_config(&s.dir);
    let p = lxc.to_str().unwrap();
    s.run_ok(
        "lxc-create",
        [
            "-P",
            p,
            "-n",
            "c1",
            "-t",
            "busybox",
            "-f",
            conf.to_str().unwrap(),
        ],
    );
    s.run_ok("lxc-start", ["-P", p, "-n", "c1"]);
    let state = s.run_ok("lxc-info", ["-P", p, "-n", "c1", "-s"]);
    assert!(state.contains("RUNNING"), "{state}");
    drop(lab);
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains(p)),
        "LXC processes for {p} survived:\n{ps}"
    );
    assert!(!lxc.exists());
}

#[test]
fn labs_in_one_process_get_distinct_tags() {
    let (a, b) = (Lab::new(1), Lab::new(1));
    assert_ne!(a.tag(), b.tag());
    assert_ne!(a.server(1).netns, b.server(1).netns);
}

#[test]
fn tags_encode_the_owner_pid_and_decode_back() {
    // Literal tags: "cm" + 6 base36 digits of (pid << 9 | n), n taken modulo 512.
    for (pid, n, tag) in [
        (1, 0, "cm0000e8"),
        (1, 1, "cm0000e9"),
        (1, 511, "cm0000sf"),
        (12345, 7, "cm03rh1j"),
        (12345, 512, "cm03rh1c"),
        (4_194_303, 511, "cmzik0zj"), // the largest pid (pid_max is at most 2^22)
    ] {
        assert_eq!(encode_tag(pid, n), tag, "encode_tag({pid}, {n})");
        assert_eq!(tag_pid(tag), Some(pid), "tag_pid({tag})");
    }
    let me = std::process::id();
    assert_eq!(tag_pid(&encode_tag(me, 3)), Some(me));
    for not_a_tag in ["cm0000E8", "xx0000e8", "cm0000e", "cm0000e8-s1", "cm0000é"] {
        assert_eq!(tag_pid(not_a_tag), None, "{not_a_tag}");
    }
}

#[test]
fn sweep_removes_labs_of_dead_owners_only() {
    common::require_root();
    // Fake labs left by a killed process: tags encoding a dead pid (< pid_max, as
    // real tags are). Only the one with its temp-dir marker counts as ours.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dead = (1..pid_max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let (owned, unowned) = (encode_tag(dead, 510), encode_tag(dead, 511));
    let dir = std::env::temp_dir().join(format!("creepy-meow-lab-{owned}"));
    std::fs::create_dir_all(dir.join("s1")).unwrap();
    let names = [
        format!("{owned}-sw"),
        format!("{owned}-s1"),
        format!("{unowned}-sw"),
    ];
    for n in &names {
        assert!(Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap()
            .success());
    }
    sweep_stale();
    let left: Vec<&String> = names.iter().filter(|n| netns::named(n).exists()).collect();
    let dir_left = dir.exists();
    for n in &left {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        left,
        [&names[2]],
        "only the marker-less namespace must survive the sweep"
    );
    assert!(!dir_left, "{} not removed", dir.display());
}

#[tokio::test]
async fn lab_is_usable_from_tokio_tests() {
    let lab = Lab::new(2);
    let target = lab.server(2).underlay_ip;
    assert!(lab.server(1).ping(target));
    // Blocking helpers can also be moved off the runtime thread.
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    let ok = tokio::task::spawn_blocking(move || l.server(2).ping(l.server(1).underlay_ip));
    assert!(ok.await.unwrap());
}
