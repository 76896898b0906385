//! The API tests' daemon: the whole daemon (`creepy_meow::daemon::run`: store, worker, engine)
//! in a tokio task of the test, on a fake host, over real HTTP on `127.0.0.1:0`. It stays in
//! process so the API tests need no root; its data dir and LXC path follow the same layout as
//! a real daemon's ([`super::layout`]), and every answer is checked against docs/openapi.json
//! ([`super::openapi`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use creepy_meow::cli::LogFormat;
use creepy_meow::cluster::ClusterConfig;
use creepy_meow::config::DaemonConfig;
use creepy_meow::fabric::FabricConfig;
use creepy_meow::model::{parse_vlan_list, HostId};
use creepy_meow::queue::StoreOptions;
use creepy_meow::sys::fake::FakeNetlink;
use creepy_meow::sys::fake_kv::FakeKv;
use creepy_meow::sys::fake_lxc::FakeLxc;
use creepy_meow::sys::Host;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::layout::{data_path, lxc_path};
use super::openapi;

/// A daemon running in this process; dropping it cancels it and removes its directory.
pub struct Daemon {
    /// `http://<address it bound>` (`https://` with [`Opts::tls`]).
    pub base: String,
    /// The client every request of the test goes through (plain: a test of a TLS daemon puts
    /// one that trusts its CA here).
    pub http: reqwest::Client,
    /// Cancels the daemon (its shutdown signal).
    shutdown: CancellationToken,
    /// The daemon's task, joined by [`Self::stop`].
    task: Option<tokio::task::JoinHandle<()>>,
    /// Its scratch directory (data dir and LXC path inside).
    pub dir: PathBuf,
    /// The fake host's network, to script failures.
    pub net: FakeNetlink,
    /// The fake host's LXC, to change containers behind the daemon's back (stop one by hand,
    /// lose a rootfs, add a foreign one).
    pub lxc: FakeLxc,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the tests vary in a daemon's configuration.
pub struct Opts {
    /// The bearer token, if any.
    pub token: Option<&'static str>,
    /// Start with the worker paused.
    pub paused: bool,
    /// The queue's bound.
    pub max_queued: usize,
    /// Containers cloned from images (`serve --clone=on`, the default).
    pub clone: bool,
    /// HTTPS with this certificate and key; plain HTTP without.
    pub tls: Option<creepy_meow::tls::ServerTls>,
    /// Cluster mode on this fake store (shared by the daemons given clones of it).
    pub cluster: Option<FakeKv>,
    /// The host ID (and the last byte of the fake underlay's address, 10.0.0.N).
    pub host_id: u8,
}

/// No token, worker running, room for 10,000 queued jobs.
pub const DEFAULT: Opts = Opts {
    token: None,
    paused: false,
    max_queued: 10_000,
    clone: true,
    tls: None,
    cluster: None,
    host_id: 1,
};

/// Starts a daemon with `opts` on a fresh fake host and a fresh directory; returns once it
/// listens.
pub async fn start(opts: Opts) -> Daemon {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cm-api-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    start_in(dir, opts).await
}

/// Starts a daemon with `opts` on a fresh fake host, its store in `dir` (kept from a daemon
/// before, or new).
async fn start_in(dir: PathBuf, opts: Opts) -> Daemon {
    let cfg = config(&dir, &opts);
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let (host, net, lxc) = Host::fake();
    if opts.cluster.is_some() {
        underlay(&host, &net, &format!("10.0.0.{}/24", opts.host_id)).await;
    }
    let kv = opts
        .cluster
        .clone()
        .map(|kv| std::sync::Arc::new(kv) as std::sync::Arc<dyn creepy_meow::sys::Kv>);
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        creepy_meow::daemon::run_with(cfg, host, kv, sd, Some(tx))
            .await
            .expect("daemon runs");
    });
    let addr = rx.await.expect("daemon ready");
    Daemon {
        base: format!("{scheme}://{addr}"),
        http: reqwest::Client::new(),
        shutdown,
        task: Some(task),
        dir,
        net,
        lxc,
    }
}

/// The configuration of a daemon in `dir` with `opts`: host 1, VLANs 2–4, any free port.
pub fn config(dir: &Path, opts: &Opts) -> DaemonConfig {
    DaemonConfig {
        fabric: FabricConfig {
            host_id: HostId::new(u64::from(opts.host_id)).unwrap(),
            underlay: "eth1".into(),
            vlans: parse_vlan_list("2,3,4").unwrap(),
            mtu: None,
            peers: Vec::new(),
            cluster_peers: opts.cluster.is_some(),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_path(dir),
        lxc_path: lxc_path(dir),
        templates: creepy_meow::templates::Templates::single("busybox", vec![]),
        clone: opts.clone,
        token: opts.token.map(String::from),
        tls: opts.tls.clone(),
        log_format: LogFormat::Text,
        paused: opts.paused,
        reconcile_every: std::time::Duration::ZERO,
        step_timeout: creepy_meow::steps::DEFAULT_STEP_TIMEOUT,
        full_copies: None,
        store: StoreOptions {
            max_queued: opts.max_queued,
            ..StoreOptions::default()
        },
        cluster: opts.cluster.as_ref().map(|_| ClusterConfig {
            endpoints: vec!["http://fake-etcd:2379".into()],
            name: "test".into(),
            api_url: format!("http://host-{}.test:8080", opts.host_id),
        }),
    }
}

impl Daemon {
    /// Creates container `id` on VLAN 2 (`192.168.2.<id>/24`) and waits until it runs.
    pub async fn create_running(&self, id: u32) {
        let (s, job) = self
            .form(&format!("id={id}&vlan=2&ip=192.168.2.{id}/24"))
            .await;
        assert_eq!(s, reqwest::StatusCode::ACCEPTED, "{job}");
        assert_eq!(self.wait(&job).await["state"], "succeeded");
    }

    /// Runs the `creepy-meow` client with `args` against this daemon; returns its exit code,
    /// stdout and stderr.
    pub async fn client(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = tokio::process::Command::new(super::serve::BIN)
            .args(args)
            .args(["--server", &self.base])
            .env_remove("CREEPY_MEOW_TOKEN")
            .output()
            .await
            .expect("run the client");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (s, body) = self.get("/metrics").await;
        assert_eq!(s, StatusCode::OK);
        body.as_str().expect("metrics text").to_string()
    }

    /// Panics unless each of `lines` is a whole line of the `/metrics` answer.
    pub async fn assert_metrics(&self, lines: &[&str]) {
        let text = self.metrics().await;
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "no {line:?} in:\n{text}");
        }
    }

    /// The value of metric `name` (a line `name value`) on `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    /// The URL of `path` on this daemon.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `req` and checks the answer against docs/openapi.json; returns its status,
    /// headers and body (JSON, or the text as a JSON string).
    pub async fn send_full(&self, req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
        let req = req.build().expect("request");
        let (method, path) = (
            req.method().as_str().to_lowercase(),
            req.url().path().to_string(),
        );
        let resp = self.http.execute(req).await.expect("request");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        openapi::conform(&method, &path, status.as_u16(), &headers, &body);
        (status, headers, body)
    }

    /// [`Self::send_full`] without the headers.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let (status, _, body) = self.send_full(req).await;
        (status, body)
    }

    /// A create of container `id` on VLAN 2 (`192.168.2.<id>/24`) with `Idempotency-Key: key`;
    /// its status, headers and body.
    pub async fn keyed_create(&self, key: &str, id: u32) -> (StatusCode, HeaderMap, Value) {
        let req = self
            .http
            .post(self.url("/api/container/create"))
            .header("Idempotency-Key", key)
            .form(&[
                ("id", id.to_string()),
                ("vlan", "2".into()),
                ("ip", format!("192.168.2.{id}/24")),
            ]);
        self.send_full(req).await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path))).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    /// A create with the form body `body`, as the original tool sent it.
    pub async fn form(&self, body: &str) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url("/api/container/create"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        self.send(req).await
    }

    /// Waits (10 s at most) for the job of an accepted request's answer `job`; returns it.
    pub async fn wait(&self, job: &Value) -> Value {
        let id = job["job_id"].as_str().expect("job_id");
        let (s, body) = self.get(&format!("/api/jobs/{id}/wait?timeout=10")).await;
        assert_eq!(s, StatusCode::OK);
        body
    }

    /// Cancels the daemon and waits until its task has ended.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Stops the daemon and starts another with `opts` on the same store (a fresh fake host).
    pub async fn restart(mut self, opts: Opts) -> Daemon {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        let dir = std::mem::take(&mut self.dir);
        start_in(dir, opts).await
    }
}

/// What the daemons on this thread log, kept for the test to read (see [`capture_logs`]).
#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Everything logged so far, without ANSI colour sequences (`ESC [ ... m`).
    pub fn text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Keeps [`capture_logs`]'s subscriber this thread's default until dropped.
pub struct LogCapture {
    _default: tracing::subscriber::DefaultGuard,
    _silent: tracing::Dispatch,
}

/// Makes the daemon's log subscriber in `format`, at the default level (info), this thread's
/// default, writing into the buffer returned, until the [`LogCapture`] drops. Only this thread:
/// the test runtime runs the daemon's tasks on it, so other tests' lines stay out.
pub fn capture_logs(format: LogFormat) -> (LogBuffer, LogCapture) {
    let log = LogBuffer::default();
    let writer = log.clone();
    let subscriber = creepy_meow::logging::daemon_subscriber(
        format,
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    // tracing caches at each call site whether anyone listens. While one dispatcher exists it
    // asks only the default of the thread that reaches the site first: another test's thread,
    // which has none, would silence the site for this one too. With a second (silent)
    // dispatcher it asks them all; the rebuild redoes the sites reached before.
    let silent = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let default = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let capture = LogCapture {
        _default: default,
        _silent: silent,
    };
    (log, capture)
}

/// Gives the fake host's `eth1` the underlay address `addr` (cluster mode floods by unicast
/// from it), and forgets the calls that made it.
pub async fn underlay(host: &Host, net: &FakeNetlink, addr: &str) {
    let eth1 = host.net.index_of("eth1").await.expect("fake eth1");
    let addr = addr.parse().expect("an address");
    host.net
        .add_address(eth1, addr)
        .await
        .expect("underlay address");
    net.clear_calls();
}
