//! Reading the events (`event.rs`) for a stream: what is on disk after a number, where the
//! retained events begin, and a receiver that wakes when more reach the disk.

use tokio::sync::watch;

use super::event::{Event, StoredEvent};
use super::store::JobStore;
use super::QueueError;

/// Observations stored per transaction. sled keeps every version of a node that a
/// transaction's writes make until the transaction ends, so one transaction of a pass that saw
/// 2,500 new containers (one `health` event each) held ≈ 19 MiB at once and left the heap
/// fragmented for good (docs/PERFORMANCE.md, section 12: up to 21.8 MiB free at 5,000
/// containers, 2–3 MiB with chunks of 256, the size the prune's chunks have too).
pub(super) const OBSERVATIONS_PER_TX: usize = 256;

impl JobStore {
    /// Up to `limit` events numbered above `after`, oldest first, only those on disk.
    ///
    /// # Errors
    /// When sled fails or a record is damaged.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, QueueError> {
        let durable = self.inner.current.clock().durable();
        self.trees()?.events_between(after, durable, limit)
    }

    /// The number of the newest event on disk (0 when there is none).
    pub fn last_event(&self) -> u64 {
        self.inner.current.clock().durable()
    }

    /// A receiver whose value is [`Self::last_event`], woken when it moves.
    pub fn watch_events(&self) -> watch::Receiver<u64> {
        self.inner.current.clock().subscribe()
    }

    /// Stores `events` (what a reconcile pass observed: no job's change), each under its
    /// number, `OBSERVATIONS_PER_TX` (256) to a transaction, off the reactor; returns once
    /// they are all on disk.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot write. The chunks committed before
    /// the one that failed stay (each event is an observation on its own; the next pass
    /// observes again).
    pub async fn record_observations(&self, events: Vec<Event>) -> Result<(), QueueError> {
        if events.is_empty() {
            return Ok(());
        }
        let store = self.clone();
        let generations = tokio::task::spawn_blocking(move || {
            events
                .chunks(OBSERVATIONS_PER_TX)
                .map(|chunk| {
                    let write = |tx: &super::db::Tx<'_>| {
                        chunk.iter().try_for_each(|e| tx.emit(e.clone()).map(drop))
                    };
                    store.transact_at(write).map(|((), generation)| generation)
                })
                .collect::<Result<Vec<u64>, QueueError>>()
        })
        .await
        .map_err(|e| QueueError::Storage(format!("recording observations failed: {e}")))??;
        // Every instance a chunk was committed on must have it on disk (one, unless the store
        // was reopened in between, and then the older instance's flush fails).
        let mut seen = generations;
        seen.dedup();
        for generation in seen {
            self.flush_at(generation).await?;
        }
        Ok(())
    }

    /// When events numbered above `after` were pruned: the number of the oldest event kept
    /// (or the next to come, when none is kept); `None` when every event after `after` is
    /// still there.
    ///
    /// # Errors
    /// When sled fails or a key is damaged.
    pub fn events_pruned_after(&self, after: u64) -> Result<Option<u64>, QueueError> {
        let last = self.last_event();
        if after >= last {
            return Ok(None);
        }
        // Event numbers have no holes (each is taken in the transaction that writes it), so
        // a first kept above `after + 1` means the ones before it were pruned.
        match self.trees()?.oldest_event()? {
            Some(oldest) if oldest <= after + 1 => Ok(None),
            Some(oldest) => Ok(Some(oldest)),
            None => Ok(Some(last + 1)),
        }
    }
}
