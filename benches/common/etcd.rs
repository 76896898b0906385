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
    /// A directory of its own to remove when it stops (its tmpfs data).
    scratch: Option<std::path::PathBuf>,
}

impl Etcd {
    /// Starts etcd listening for clients on `addr:2379` (peers on 127.0.0.1:2380), its data in
    /// `dir`; returns once it answers.
    pub async fn start(dir: &Path, addr: &str) -> Self {
        Self::start_with(Command::new("etcd"), dir, &dir.join("data"), addr, None).await
    }

    /// [`Self::start`] in `server`'s namespace, its data in a fresh directory on tmpfs
    /// (`/dev/shm`), removed on drop: etcd on another machine whose disk costs nothing, so a
    /// comparison shows what the daemon itself adds.
    pub async fn start_elsewhere(server: &super::harness::Server, dir: &Path) -> Self {
        let shm = Path::new("/dev/shm").join(format!("cm-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&shm);
        std::fs::create_dir_all(&shm).expect("tmpfs dir");
        let addr = server.underlay_ip.to_string();
        let cmd = server.cmd("etcd", std::iter::empty::<&str>());
        Self::start_with(cmd, dir, &shm.join("data"), &addr, Some(shm)).await
    }

    async fn start_with(
        mut cmd: Command,
        dir: &Path,
        data: &Path,
        addr: &str,
        scratch: Option<std::path::PathBuf>,
    ) -> Self {
        let url = format!("http://{addr}:2379");
        let log_name = format!("etcd-{addr}.log");
        let log = std::fs::File::create(dir.join(log_name)).expect("etcd log");
        let child = cmd
            .args(super::harness::etcd::args("bench", data, &url))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server)");
        let etcd = Self {
            child,
            url,
            scratch,
        };
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

    /// Its process ID (nsenter execs etcd: the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
