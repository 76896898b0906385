//! The list of existing containers (`GET /api/container/list`), cached between writes.
//!
//! Listing reads every container record; at a thousand containers that is a millisecond of
//! CPU per request. The list only changes when a transaction writes the `containers` tree,
//! which bumps [`Trees::containers_gen`](super::store::Trees); the cache is kept under the
//! counter's value read *before* its scan, so a write that lands during a scan makes the next
//! reader scan again, never serves a stale list.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;

use super::job::ContainerRecordState;
use super::store::{hex, JobStore};
use super::tx::decode;
use super::QueueError;
use crate::model::ContainerId;

/// The IDs listed, and the counter value they were read under.
type Cached = Option<(u64, Arc<[ContainerId]>)>;

/// The cache, in the store.
pub(super) type Listed = Mutex<Cached>;

/// The fields of a container record that listing needs.
#[derive(Deserialize)]
struct RecordHead {
    id: ContainerId,
    state: ContainerRecordState,
}

impl JobStore {
    /// The IDs of the containers that exist (created and not destroyed: every record not
    /// `creating`), by ID; from the cache when no write touched the records since it was
    /// filled, else read now (a scan of every record: call it off the reactor).
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub fn listed(&self) -> Result<Arc<[ContainerId]>, QueueError> {
        let gen = self.inner.trees.containers_gen.load(Ordering::Acquire);
        if let Some(ids) = self.cached_listed_at(gen) {
            return Ok(ids);
        }
        let mut ids = Vec::new();
        for item in self.inner.trees.containers.iter() {
            let (key, bytes) = item.map_err(|e| self.storage("read containers", e))?;
            let head: RecordHead = decode("containers", &hex(&key), &bytes)?;
            if head.state != ContainerRecordState::Creating {
                ids.push(head.id);
            }
        }
        let ids: Arc<[ContainerId]> = ids.into();
        *self.lock_listed() = Some((gen, Arc::clone(&ids)));
        Ok(ids)
    }

    /// The cached list if it is current, without reading the trees: cheap enough for the
    /// reactor.
    pub fn cached_listed(&self) -> Option<Arc<[ContainerId]>> {
        self.cached_listed_at(self.inner.trees.containers_gen.load(Ordering::Acquire))
    }

    fn cached_listed_at(&self, gen: u64) -> Option<Arc<[ContainerId]>> {
        match &*self.lock_listed() {
            Some((at, ids)) if *at == gen => Some(Arc::clone(ids)),
            _ => None,
        }
    }

    fn lock_listed(&self) -> MutexGuard<'_, Cached> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it torn.
        self.inner
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
