//! Faults of the machine under a real daemon (issue 17) on a simulated server: an `lxc-*` tool
//! that never returns, and LXC tools missing from `PATH` at start.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{serve_on, Daemon};
use common::lab::bin;
use common::layout::{data_path, lxc_path};
use common::serve::BIN;
use common::{Lab, Server};

/// Writes an `lxc-start` into `dir` that, while `dir/hang` exists, records its PID and its
/// child's in `dir/pids` and waits on that child forever (an `lxc-start` stuck on a
/// container's init); otherwise it runs the real `lxc-start`.
fn fake_lxc_start(dir: &Path) {
    let real = bin("lxc-start");
    assert!(real.is_absolute(), "lxc-start is not installed");
    let script = format!(
        "#!/bin/sh\nif [ -e {hang} ]; then\n  echo $$ >> {pids}\n  sleep 3600 &\n  echo $! >> {pids}\n  wait\nfi\nexec {real} \"$@\"\n",
        hang = dir.join("hang").display(),
        pids = dir.join("pids").display(),
        real = real.display(),
    );
    let file = dir.join("lxc-start");
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `dir` first, then the test's own `PATH`.
fn path_with_first(dir: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

/// Whether process `pid` runs: it exists and is not a zombie (killed, not yet reaped).
fn runs(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

/// Waits (10 s at most) until none of `pids` runs; panics naming those that still do.
fn assert_all_die(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| runs(p)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the hung tool's processes {alive:?} outlived its step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fabric's links and the containers' host veths on `server`.
fn our_links(server: &Server) -> Vec<String> {
    server
        .run_ok("ip", ["-br", "link"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ["br", "vxlan", "vethc"].iter().any(|p| n.starts_with(p)))
        .map(String::from)
        .collect()
}

#[test]
fn a_hung_lxc_start_times_out_rolls_back_and_the_daemon_goes_on() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let fake: PathBuf = s.dir.join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    fake_lxc_start(&fake);
    std::fs::write(fake.join("hang"), "").unwrap();
    let env = [("PATH", path_with_first(&fake))];
    let flags = ["--step-timeout", "10", "--clone", "off"];
    let d = Daemon::start_env(s, None, &flags, &env);

    let job = d.wait(&d.create(5));
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    // The step's limit or the tool's (the same `--step-timeout`), whichever fires first.
    assert!(error.contains("step start_container failed: "), "{job}");
    assert!(error.contains("timed out after 10s"), "{job}");
    assert!(error.contains("rolled back, nothing left behind"), "{job}");
    let pids: Vec<i32> = std::fs::read_to_string(fake.join("pids"))
        .expect("the fake lxc-start never ran")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the fake and its child: {pids:?}");
    assert_all_die(&pids);
    assert!(
        !lxc_path(&s.dir).join("container5").exists(),
        "the rolled-back container's directory is left"
    );
    assert!(!our_links(s).contains(&"vethc_br5".to_string()));

    // The worker is free and the daemon serves: with the tool well again, a create succeeds.
    std::fs::remove_file(fake.join("hang")).unwrap();
    let job = d.wait(&d.create(6));
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.own_log());
    assert_eq!(d.info(6)["state"], "RUNNING");
}

#[test]
fn without_the_lxc_tools_serve_says_so_and_exits_2_before_touching_the_host() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let empty = s.dir.join("emptybin");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = s.cmd(BIN, serve_on(s, &[]).args());
    cmd.env("PATH", &empty)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Tracked by the lab: a daemon that serves instead of refusing is killed when it drops.
    let mut child = s.spawn_cmd(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve ran without the LXC tools");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let refusal = stderr
        .lines()
        .find(|l| l.starts_with("creepy-meow: "))
        .unwrap_or_else(|| panic!("no refusal: {stderr}"));
    assert_eq!(
        refusal,
        format!(
            "creepy-meow: serve cannot run here: lxc-create, lxc-start, lxc-stop, lxc-info, lxc-destroy, lxc-copy not found on PATH ({}): install LXC (apt-get install lxc)",
            empty.display()
        )
    );
    assert_eq!(our_links(s), Vec::<String>::new(), "a fabric was made");
    assert!(!lxc_path(&s.dir).exists(), "the LXC path was made");
    assert!(!data_path(&s.dir).exists(), "the store was opened");
}
