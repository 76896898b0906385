//! The list of existing containers (`GET /api/container/list`), cached between writes.
//!
//! Listing reads every container record; at a thousand containers that is a millisecond of
//! CPU per request. The list only changes when a transaction writes the `containers` tree,
//! which bumps the trees' counter ([`Trees::containers_gen`]); the cache is kept under the
//! counter's value read *before* its scan, so a write that lands during a scan makes the next
//! reader scan again, never serves a stale list.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;

use super::db::Trees;
use super::job::ContainerRecordState;
use super::QueueError;
use crate::model::ContainerId;

/// The IDs listed, and the counter value they were read under.
type Cached = Option<(u64, Arc<[ContainerId]>)>;

/// The cache, in the store.
#[derive(Default)]
pub(super) struct ListCache(Mutex<Cached>);

/// The fields of a container record that listing needs.
#[derive(Deserialize)]
struct RecordHead {
    id: ContainerId,
    state: ContainerRecordState,
}

impl ListCache {
    /// The list from `trees`: cached if current, else read now.
    pub(super) fn get(&self, trees: &Trees) -> Result<Arc<[ContainerId]>, QueueError> {
        let gen = trees.containers_gen();
        if let Some(ids) = self.at(gen) {
            return Ok(ids);
        }
        let mut ids = Vec::new();
        for head in trees.records::<RecordHead>() {
            let head = head?;
            if head.state != ContainerRecordState::Creating {
                ids.push(head.id);
            }
        }
        let ids: Arc<[ContainerId]> = ids.into();
        *self.lock() = Some((gen, Arc::clone(&ids)));
        Ok(ids)
    }

    /// The list if it was read under counter value `gen`.
    pub(super) fn at(&self, gen: u64) -> Option<Arc<[ContainerId]>> {
        match &*self.lock() {
            Some((at, ids)) if *at == gen => Some(Arc::clone(ids)),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
