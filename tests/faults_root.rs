//! Faults of the machine under a real daemon (issue 17) on a simulated server: an `lxc-*` tool
//! that never returns, LXC tools missing from `PATH` at start, a full disk under the data
//! directory (a small tmpfs), and a read-only data directory.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{serve_on, Answer, Daemon};
use common::disk::{fill, Tmpfs, FILLER};
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

/// Waits (30 s at most) until `/healthz` answers `status`.
fn wait_health(d: &Daemon<'_>, status: u16) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = d.ask("/healthz", &[]);
        if health.status == status {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}: {}",
            d.own_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_gets_503_with_the_reason_and_the_daemon_accepts_again_once_space_returns() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let data = data_path(&s.dir);
    let _tmpfs = Tmpfs::mount(&data, "size=3m");
    let mut d = Daemon::start_with(s, None, &["--paused", "--clone", "off"]);
    let mut accepted = Vec::new();
    for id in 10..=11 {
        let a = d.ask_create(id);
        assert_eq!(a.status, 202, "{}", a.body);
        accepted.push(a.body["job_id"].as_str().unwrap().to_owned());
    }

    fill(&data);
    // Until sled's buffers meet the full disk, creates may still be accepted (each on disk).
    let mut refused = None;
    for id in 12..=240 {
        let a = d.ask_create(id);
        match a.status {
            202 => accepted.push(a.body["job_id"].as_str().unwrap().to_owned()),
            503 => {
                refused = Some(a);
                break;
            }
            other => panic!("create {id} on a full disk answered {other}: {}", a.body),
        }
    }
    let refused = refused.expect("no create was refused on a full disk");
    assert_eq!(
        refused.body["code"], "storage_unavailable",
        "{}",
        refused.body
    );
    assert!(
        refused.headers.contains("\nretry-after: 5"),
        "{}",
        refused.headers
    );
    let health = wait_health(&d, 503);
    assert_eq!(
        health.body["status"], "storage_unavailable",
        "{}",
        health.body
    );
    assert!(
        health.headers.contains("\nretry-after: 5"),
        "{}",
        health.headers
    );
    let reason = health.body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("No space left on device"),
        "{}",
        health.body
    );
    // Still refused. sled cannot even be reopened on a full disk, so reads are refused too
    // rather than answered from what sled held in memory (the failed batch among it).
    assert_eq!(d.ask_create(241).status, 503);
    let queue = d.ask("/api/queue", &[]);
    assert_eq!(queue.status, 503, "{}", queue.body);
    assert_eq!(queue.body["code"], "storage_unavailable", "{}", queue.body);

    std::fs::remove_file(data.join(FILLER)).unwrap();
    wait_health(&d, 200);
    let a = d.ask_create(242);
    assert_eq!(a.status, 202, "{}", a.body);
    accepted.push(a.body["job_id"].as_str().unwrap().to_owned());
    let queue = d.ask("/api/queue", &[]);
    assert_eq!(queue.body["queued"], accepted.len(), "{}", queue.body);

    // A restart finds exactly what the daemon counted, and every accepted job.
    assert!(d.sigterm().success());
    drop(d);
    let d = Daemon::start_with(s, None, &["--paused", "--clone", "off"]);
    let queue = d.ask("/api/queue", &[]);
    assert_eq!(queue.body["queued"], accepted.len(), "{}", queue.body);
    for job in &accepted {
        assert_eq!(d.job(job)["state"], "queued");
    }
}

#[test]
fn a_read_only_data_directory_stops_serve_with_one_sentence_and_exit_2() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let data = data_path(&s.dir);
    let _tmpfs = Tmpfs::mount(&data, "size=1m,ro");
    let mut cmd = s.cmd(BIN, serve_on(s, &["--clone", "off"]).args());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = s.spawn_cmd(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "serve ran on a read-only data directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("creepy-meow: "))
        .collect();
    assert_eq!(
        refusals,
        [format!(
            "creepy-meow: cannot open {}/LOCK: Read-only file system (os error 30); the job store must write there: make it writable (a read-write mount, owned by the daemon's user) or choose another data directory (--data-dir)",
            data.display()
        )],
        "{stderr}"
    );
    assert_eq!(our_links(s), Vec::<String>::new(), "a fabric was made");
}

#[test]
fn a_disk_full_under_a_running_create_rolls_it_back_and_it_runs_again_once_space_returns() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let data = data_path(&s.dir);
    let _tmpfs = Tmpfs::mount(&data, "size=3m");
    let flags = ["--clone", "off"];
    let d = Daemon::start_with(s, Some("before_action:start_container"), &flags);
    let job = d.create(7);
    // The step's start is on disk; the disk fills before the next record.
    d.wait_barrier("before_action:start_container");
    fill(&data);
    d.release_barrier();
    let health = wait_health(&d, 503);
    assert!(
        health.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{}",
        health.body
    );
    std::fs::remove_file(data.join(FILLER)).unwrap();
    wait_health(&d, 200);
    // Reconciled as after a crash (rolled back, queued again), then run to the end.
    let done = d.wait(&job);
    assert_eq!(done["state"], "succeeded", "{done}\n{}", d.own_log());
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(d.info(7)["state"], "RUNNING");
    let links = our_links(s);
    assert_eq!(
        links
            .iter()
            .filter_map(|l| l.split('@').next().filter(|n| n.starts_with("vethc")))
            .collect::<Vec<_>>(),
        ["vethc_br7"],
        "{links:?}"
    );
}
