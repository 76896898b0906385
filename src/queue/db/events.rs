//! The `events` tree (event number, u64 BE → a type byte, then the event's JSON) and the
//! [`EventClock`] that tells readers how far they may read.
//!
//! An event is written by [`Tx::emit`] inside the transaction of the change it describes, so
//! the two commit (and reach the disk) together. Readers stop at [`EventClock::durable`]: the
//! newest event the commit thread has synced. An event committed but not yet synced could
//! still be lost in a crash, and its number handed out again to another event; a client must
//! never have seen it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::codec::{abort, decode_u64, encode, seq_key, TxResult, META_EVENT_SEQ};
use super::{Trees, Tx};
use crate::queue::event::{Event, EventType, StoredEvent};
use crate::queue::QueueError;

/// How far events go: the newest committed, and the newest on disk (which readers watch).
///
/// Each open of the database has a clock of its own, but every clock of one store shares the
/// `durable` watch, so a reader keeps its receiver across a reopen (`queue/reopen.rs`). The
/// committed mark is the instance's own: a transaction that still ran on a discarded instance
/// can move only that instance's mark, never let the new one publish numbers it has not
/// written.
pub(in crate::queue) struct EventClock {
    /// The newest event whose transaction has committed on this instance.
    committed: AtomicU64,
    /// The newest event known to be on disk, shared by every instance of the store.
    durable: Arc<watch::Sender<u64>>,
}

impl EventClock {
    /// A clock for a store whose newest event (all of it on disk: it was just opened) is
    /// `latest`.
    pub(super) fn opened_at(latest: u64) -> Self {
        Self {
            committed: AtomicU64::new(latest),
            durable: Arc::new(watch::Sender::new(latest)),
        }
    }

    /// The clock of a reopened instance whose newest event (on disk) is `latest`, sharing
    /// `self`'s readers. Numbers above `latest` that a failed batch took were never published
    /// (only a successful sync publishes), so they are handed out again, and no reader can have
    /// seen them; numbers up to `latest` that the failed batch got to the disk after all are
    /// published now, with the changes they describe (a transaction reaches sled's log whole
    /// or not at all).
    pub(super) fn reopened_at(&self, latest: u64) -> Self {
        let clock = Self {
            committed: AtomicU64::new(latest),
            durable: Arc::clone(&self.durable),
        };
        clock.synced(latest);
        clock
    }

    /// The newest event committed so far.
    pub(in crate::queue) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Records that a transaction with events up to `seq` has committed.
    pub(super) fn saw_commit(&self, seq: u64) {
        self.committed.fetch_max(seq, Ordering::AcqRel);
    }

    /// Publishes that every event up to `seq` is on disk (never moves back).
    pub(in crate::queue) fn synced(&self, seq: u64) {
        self.durable.send_if_modified(|d| {
            let newer = seq > *d;
            if newer {
                *d = seq;
            }
            newer
        });
    }

    /// The newest event on disk.
    pub(in crate::queue) fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// A receiver that wakes when [`Self::durable`] moves.
    pub(in crate::queue) fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

impl EventType {
    fn byte(self) -> u8 {
        match self {
            Self::Job => b'j',
            Self::Step => b's',
            Self::Container => b'c',
            Self::Health => b'h',
            Self::Reconcile => b'r',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'j' => Self::Job,
            b's' => Self::Step,
            b'c' => Self::Container,
            b'h' => Self::Health,
            b'r' => Self::Reconcile,
            _ => return None,
        })
    }
}

impl Tx<'_> {
    /// Stores `event` under the next event number, in this transaction; returns the number.
    pub fn emit(&self, mut event: Event) -> TxResult<u64> {
        let seq = self.bump(META_EVENT_SEQ)?;
        event.seq = seq;
        let json = encode(&event).or_else(abort)?;
        let mut value = Vec::with_capacity(json.len() + 1);
        value.push(event.kind.byte());
        value.extend_from_slice(&json);
        self.events.insert(&seq_key(seq), value)?;
        self.emitted.set(self.emitted.get().max(seq));
        Ok(seq)
    }

    /// Deletes event `seq` (pruning).
    pub fn remove_event(&self, seq: u64) -> TxResult<()> {
        self.events.remove(&seq_key(seq))?;
        Ok(())
    }
}

impl Trees {
    /// The number of the newest event stored (0 if none ever was), read at open.
    pub(super) fn last_event_seq(&self) -> Result<u64, QueueError> {
        match self
            .meta
            .get(META_EVENT_SEQ)
            .map_err(|e| self.storage("read the event counter", e))?
        {
            Some(b) => decode_u64("meta", &"event-seq", &b),
            None => Ok(0),
        }
    }

    /// The event clock.
    pub(in crate::queue) fn clock(&self) -> &EventClock {
        &self.clock
    }

    /// The event clock, shared.
    pub(in crate::queue) fn clock_arc(&self) -> Arc<EventClock> {
        Arc::clone(&self.clock)
    }

    /// Up to `limit` events numbered above `after` and at most `upto`, oldest first.
    ///
    /// # Errors
    /// When sled fails or a record is damaged.
    pub(in crate::queue) fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, QueueError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self
            .events
            .range(seq_key(after + 1)..=seq_key(upto))
            .take(limit)
        {
            let (key, value) = item.map_err(|e| self.storage("read events", e))?;
            let seq = decode_u64("events", &"key", &key)?;
            let kind = value.first().copied().and_then(EventType::from_byte);
            let Some(kind) = kind else {
                return Err(super::codec::corrupt("events", &seq, "no event type"));
            };
            out.push(StoredEvent {
                seq,
                kind,
                json: bytes::Bytes::copy_from_slice(&value[1..]),
            });
        }
        Ok(out)
    }

    /// The number of the oldest event kept, if any is.
    ///
    /// # Errors
    /// When sled fails or the key is damaged.
    pub(in crate::queue) fn oldest_event(&self) -> Result<Option<u64>, QueueError> {
        match self
            .events
            .first()
            .map_err(|e| self.storage("read events", e))?
        {
            Some((key, _)) => Ok(Some(decode_u64("events", &"first", &key)?)),
            None => Ok(None),
        }
    }
}
