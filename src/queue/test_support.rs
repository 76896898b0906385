//! Helpers for the store tests: throwaway data directories and requests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{JobStore, StoreOptions};
use crate::model::{ContainerId, VlanId};
use crate::steps::CreateSpec;

/// A directory under the system temp dir, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty, uniquely named directory.
    pub(super) fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "creepy-meow-queue-{}-{label}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The path.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens a store in `dir` with default limits.
pub(super) fn open(dir: &TempDir) -> JobStore {
    JobStore::open(dir.path(), StoreOptions::default()).expect("open store")
}

/// Opens a store in `dir` with these limits.
pub(super) fn open_with(dir: &TempDir, opts: StoreOptions) -> JobStore {
    JobStore::open(dir.path(), opts).expect("open store")
}

/// A container ID.
pub(super) fn cid(n: u64) -> ContainerId {
    ContainerId::new(n).unwrap()
}

/// A create of container `id` at `192.168.<vlan>.<host>/24`.
pub(super) fn spec(id: u64, vlan: u8, host: u8) -> CreateSpec {
    CreateSpec {
        id: cid(id),
        vlan: VlanId::new(u64::from(vlan)).unwrap(),
        ip: format!("192.168.{vlan}.{host}/24").parse().unwrap(),
        gateway: None,
    }
}
