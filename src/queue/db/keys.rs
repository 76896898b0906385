//! The hashes of the idempotency keys stored, filled at open (see [`Trees`]'s `key_hashes`).

use super::codec::META_IDEMPOTENCY;
use super::Trees;
use crate::queue::QueueError;

/// FNV-1a of `key`: stable across builds (the hashes are made again at each open anyway).
pub(super) fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Trees {
    /// Fills the hashes of the idempotency keys stored (`Tx::key`): one walk of `meta`'s
    /// `idem/` entries, at open.
    ///
    /// # Errors
    /// When sled fails.
    pub(in crate::queue) fn load_key_hashes(&self) -> Result<(), QueueError> {
        let mut hashes = self.key_hashes.lock().unwrap_or_else(|e| e.into_inner());
        for item in self.meta.scan_prefix(META_IDEMPOTENCY) {
            let (k, _) = item.map_err(|e| self.storage("read idempotency keys", e))?;
            hashes.insert(key_hash(&k[META_IDEMPOTENCY.len()..]));
        }
        Ok(())
    }
}
