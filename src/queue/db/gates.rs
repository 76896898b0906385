//! Gates: in cluster mode a create is queued locally while its etcd reservation is being made,
//! not after it (the two durable commits overlap instead of adding up). Until the reservation
//! is known the job is *gated*: stored with its `queued` event, holding its ID and address in
//! the ledger, but not in the queue the worker takes from. A `meta` entry per gated job marks
//! it, so a restart finds every gate a crash left (`JobStore::gated`).

use uuid::Uuid;

use super::codec::{decode_uuid, TxResult, META_GATE};
use super::{Trees, Tx};
use crate::queue::QueueError;

/// `meta`'s key of job `id`'s gate.
fn gate_key(id: Uuid) -> Vec<u8> {
    [META_GATE, id.as_bytes().as_slice()].concat()
}

impl Tx<'_> {
    /// Marks job `id` gated.
    pub fn set_gate(&self, id: Uuid) -> TxResult<()> {
        self.meta.insert(gate_key(id), &[])?;
        Ok(())
    }

    /// Whether job `id` is gated.
    pub fn is_gated(&self, id: Uuid) -> TxResult<bool> {
        Ok(self.meta.get(gate_key(id))?.is_some())
    }

    /// Removes job `id`'s gate; returns whether there was one.
    pub fn clear_gate(&self, id: Uuid) -> TxResult<bool> {
        Ok(self.meta.remove(gate_key(id))?.is_some())
    }
}

impl Trees {
    /// Whether job `id` is gated.
    ///
    /// # Errors
    /// When sled fails.
    pub(in crate::queue) fn is_gated(&self, id: Uuid) -> Result<bool, QueueError> {
        let found = self.meta.get(gate_key(id));
        Ok(found.map_err(|e| self.storage("read a gate", e))?.is_some())
    }

    /// The IDs of every gated job.
    ///
    /// # Errors
    /// When sled fails or a key does not decode.
    pub(in crate::queue) fn gated(&self) -> Result<Vec<Uuid>, QueueError> {
        self.meta
            .scan_prefix(META_GATE)
            .map(|item| {
                let (k, _) = item.map_err(|e| self.storage("read the gated jobs", e))?;
                decode_uuid("meta", &"gate", &k[META_GATE.len()..])
            })
            .collect()
    }
}
