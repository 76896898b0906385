//! A single-member etcd for the cluster bench, started as a child in the calling thread's
//! network namespace (after [`super::lab::Lab::enter`]), its data under the lab's directory;
//! dropping it kills it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use creepy_meow::sys::etcd::EtcdKv;
use creepy_meow::sys::Kv;

/// The running etcd.
pub struct Etcd {
    /// The process.
    child: Child,
    /// Its client URL.
    pub url: String,
}

impl Etcd {
    /// Starts etcd listening for clients on `addr:2379` (peers on 127.0.0.1:2380), its data in
    /// `dir`; returns once it answers.
    pub async fn start(dir: &Path, addr: &str) -> Self {
        let url = format!("http://{addr}:2379");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(super::harness::etcd::args("bench", &dir.join("data"), &url))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server)");
        let etcd = Self { child, url };
        let kv = etcd.client().await;
        let start = Instant::now();
        while kv.list("bench-ready").await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        etcd
    }

    /// A client of it.
    pub async fn client(&self) -> Arc<dyn Kv> {
        let kv = EtcdKv::connect(std::slice::from_ref(&self.url), Duration::from_secs(5));
        Arc::new(kv.await.expect("etcd client"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
