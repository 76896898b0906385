//! Helpers for the store tests: throwaway data directories and requests.

use super::{JobStore, StoreOptions};
use crate::model::{ContainerId, VlanId};
use crate::spec::CreateSpec;

pub(super) use crate::test_support::TempDir;

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

/// The IDs of every container record (any state), in order.
pub(super) fn record_ids(store: &JobStore) -> Vec<u32> {
    store
        .inner
        .trees
        .records::<super::ContainerRecord>()
        .map(|r| r.unwrap().id.get())
        .collect()
}
