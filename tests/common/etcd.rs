//! A real etcd (3.4, Debian's `etcd-server`) for the cluster tests, run on a simulated server
//! of its own: clients reach it on the server's underlay address across the lab switch, so
//! cutting a server's port also cuts it from etcd. Its peer URL stays on the namespace's own
//! `127.0.0.1` (a one-member cluster talks to nobody). Its data dir is under the server's dir;
//! dropping it kills etcd and removes the data dir, even when the test failed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{eventually, Server};

/// etcd's client port (its default).
const CLIENT_PORT: u16 = 2379;
/// How long etcd may take to answer its health check after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// etcd's arguments for a one-member cluster named `name` with its data in `data`, serving
/// clients at `url` and its (unused) peer port on the namespace's own `127.0.0.1`: the one
/// command line of the tests' etcd and the cluster bench's.
pub fn args(name: &str, data: &Path, url: &str) -> Vec<OsString> {
    let peer = "http://127.0.0.1:2380";
    let mut args: Vec<OsString> = ["--name", name, "--data-dir"].map(OsString::from).to_vec();
    args.push(data.into());
    args.extend(
        [
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            &format!("{name}={peer}"),
        ]
        .map(OsString::from),
    );
    args
}

/// One etcd member on `server`; killed and its data removed on drop.
pub struct Etcd<'a> {
    /// The server whose namespace it runs in.
    server: &'a Server,
    /// Its member name: unique per lab (the server's namespace name).
    name: String,
    /// Its data dir, kept across [`Self::kill`] and [`Self::start_again`].
    data: PathBuf,
    /// Its stdout and stderr, for failure messages.
    log: PathBuf,
    /// The process (nsenter execs etcd, so this is etcd); `None` while stopped.
    child: Option<Child>,
}

impl<'a> Etcd<'a> {
    /// Starts etcd on `server` with a fresh data dir and waits until it answers.
    pub fn start(server: &'a Server) -> Self {
        let mut etcd = Self {
            server,
            name: format!("{}-etcd", server.netns),
            data: server.dir.join("etcd-data"),
            log: server.dir.join("etcd.log"),
            child: None,
        };
        let _ = std::fs::remove_dir_all(&etcd.data);
        etcd.start_again();
        etcd
    }

    /// The client URL, on the server's underlay address: `http://10.77.0.N:2379`.
    pub fn url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.server.underlay_ip)
    }

    /// Starts etcd on its data dir (after [`Self::kill`]) and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        let args = args(&self.name, &self.data, &self.url());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let mut cmd = self.server.cmd("etcd", args);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log's fd"))
            .stderr(out);
        self.child = Some(self.server.spawn_cmd(cmd));
        eventually(
            &format!("etcd answers at {}", self.url()),
            READY_TIMEOUT,
            || self.ctl(&["endpoint", "health"]).status.success(),
        );
    }

    /// SIGKILLs etcd and reaps it; its data dir stays for [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): etcd freezes, its sockets stay open, so clients
    /// wait on it instead of being refused.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("etcd runs");
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal etcd");
    }

    /// Runs etcdctl (v3 API) with `args` against this etcd, from its namespace.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let endpoints = format!("--endpoints={}", self.url());
        let mut all = vec![endpoints.as_str(), "--command-timeout=2s"];
        all.extend_from_slice(args);
        let mut cmd = self.server.cmd("etcdctl", all);
        cmd.env("ETCDCTL_API", "3");
        cmd.output().expect("run etcdctl")
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.ctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(out.status.success(), "etcdctl get: {out:?}\n{}", self.log());
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        keys.sort();
        keys
    }

    /// What etcd logged, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Etcd<'_> {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen etcd dies of SIGKILL all the same; SIGCONT first keeps that obvious.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
