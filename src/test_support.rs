//! Helpers shared by unit tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty, uniquely named directory.
    pub(crate) fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "creepy-meow-test-{}-{label}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A link as the fabric's plans see it: MTU 1450, up.
pub(crate) fn link(
    index: u32,
    name: &str,
    kind: crate::sys::LinkKind,
    master: Option<u32>,
) -> crate::sys::LinkState {
    crate::sys::LinkState {
        index,
        name: name.into(),
        kind,
        mtu: 1450,
        up: true,
        master,
    }
}

/// A fake host whose fabric serves VLAN 2 (host 1, underlay `eth1`), its fakes (call log
/// cleared), and that fabric.
pub(crate) async fn fake_host() -> (
    crate::sys::Host,
    crate::sys::fake::FakeNetlink,
    crate::sys::fake_lxc::FakeLxc,
    crate::fabric::FabricConfig,
) {
    let (host, net, lxc) = crate::sys::Host::fake();
    let fabric = crate::fabric::FabricConfig {
        host_id: crate::model::HostId::new(1).expect("host id"),
        underlay: "eth1".into(),
        vlans: crate::model::parse_vlan_list("2").expect("vlans"),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    };
    crate::fabric::ensure_fabric(&net, &fabric)
        .await
        .expect("fabric");
    net.clear_calls();
    (host, net, lxc, fabric)
}

/// A worker over a store in `dir`, acting on `host` with `fabric`.
pub(crate) fn worker(
    dir: &TempDir,
    host: crate::sys::Host,
    fabric: crate::fabric::FabricConfig,
) -> crate::worker::Worker {
    crate::worker::Worker {
        store: crate::queue::JobStore::open(dir.path(), crate::queue::StoreOptions::default())
            .expect("open store"),
        engine: crate::engine::Engine::new(host, fabric),
        control: crate::worker::QueueControl::new(false),
        metrics: std::sync::Arc::new(crate::metrics::Metrics::default()),
        shutdown: tokio_util::sync::CancellationToken::new(),
    }
}
