//! Helpers for the store tests: throwaway data directories and requests.

use super::{JobStore, StoreOptions};
use crate::model::{ContainerId, VlanId};
use crate::spec::CreateSpec;

pub(super) use crate::test_support::TempDir;

/// Opens a store in `dir` with default limits.
pub(super) fn open(dir: &TempDir) -> JobStore {
    JobStore::open(dir.path(), StoreOptions::default()).expect("open store")
}

/// The message of an open of `dir` refused as corrupt (it panics on any other answer).
pub(super) fn refused_as_corrupt(dir: &TempDir) -> String {
    let err = JobStore::open(dir.path(), StoreOptions::default())
        .err()
        .expect("the open is refused");
    let super::QueueError::Corrupt(msg) = err else {
        panic!("expected Corrupt, got {err:?}")
    };
    msg
}

/// Opens a store in `dir` with these limits.
pub(super) fn open_with(dir: &TempDir, opts: StoreOptions) -> JobStore {
    JobStore::open(dir.path(), opts).expect("open store")
}

/// Idempotency key `k` on a request whose fingerprint is `fingerprint`.
pub(super) fn key(k: &str, fingerprint: &str) -> Option<super::IdempotencyKey> {
    Some(super::IdempotencyKey {
        key: k.into(),
        fingerprint: fingerprint.into(),
    })
}

/// Runs a create of container `id` at `192.168.<vlan>.<host>` through the worker's path to
/// success, leaving an active container.
pub(super) async fn created(store: &JobStore, id: u64, vlan: u8, host: u8) {
    let job = store.enqueue_create(spec(id, vlan, host)).await.unwrap();
    store.start(job.id).await.unwrap();
    store.finish(job.id, Ok(())).await.unwrap();
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
        template: None,
    }
}

/// The IDs of every container record (any state), in order.
pub(super) fn record_ids(store: &JobStore) -> Vec<u32> {
    store
        .trees()
        .unwrap()
        .records::<super::ContainerRecord>()
        .map(|r| r.unwrap().id.get())
        .collect()
}

/// Opens the sled database in `dir` directly (to damage it), once a store of this process
/// closed a moment ago has let go of sled's lock (its flusher thread releases it late).
pub(super) fn raw_sled(dir: &TempDir) -> sled::Db {
    super::lock::wait_until_unlocked(&dir.path().join("db"), std::time::Duration::from_secs(10))
        .expect("the store's lock is released");
    sled::open(dir.path()).expect("open sled")
}
