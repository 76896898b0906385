//! The open database, replaceable, and whether the store can write now.
//!
//! sled 0.34 remembers the first failed write to its log (a full disk: `ENOSPC`) as a "global
//! error" and fails every later write of that handle; only a new open clears it (measured, and
//! read in sled's `PageCache::start`). A failed batch also leaves its changes in sled's memory,
//! where reads would show jobs that are not on disk. So after a failure the commit thread
//! closes the database at once and opens it again once the disk takes writes (`reopen.rs`):
//! what is read afterwards is what the disk holds, and the counters derived from the trees
//! (the queued count, the list) agree with it.
//!
//! [`Current`] holds the instance open now, numbered: a change committed on one instance must
//! be synced by that same instance, so a flush names the generation its change was made on and
//! is refused when the instance was replaced meanwhile (the change went with the old one).
//! While the slot is empty (from a failure until the reopen) reads fail as writes do.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;

use super::db::{EventClock, Trees};
use super::QueueError;

/// An open instance of the database and its generation.
#[derive(Clone)]
pub(super) struct Opened {
    /// The trees.
    pub(super) trees: Trees,
    /// Bumped by every reopen.
    pub(super) generation: u64,
}

/// The instance open now, the store's health, and the clock readers watch.
pub(super) struct Current {
    /// `None` from a failure until the reopen.
    open: RwLock<Option<Opened>>,
    /// `None` while the store can write; else why it cannot, as a sentence.
    health: watch::Sender<Option<String>>,
    /// The event clock of the first instance: its `durable` watch is every instance's.
    first_clock: Arc<EventClock>,
}

impl Current {
    /// The slot holding `trees`, generation 0, healthy.
    pub(super) fn new(trees: Trees) -> Self {
        Self {
            first_clock: trees.clock_arc(),
            open: RwLock::new(Some(Opened {
                trees,
                generation: 0,
            })),
            health: watch::Sender::new(None),
        }
    }

    /// The instance open now.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] while there is none.
    pub(super) fn opened(&self) -> Result<Opened, QueueError> {
        let slot = self.open.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or_else(|| self.refusal())
    }

    /// Takes the instance out of the slot (to close it before a reopen).
    pub(super) fn take(&self) -> Option<Opened> {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Puts a new instance, `generation`, in the empty slot.
    pub(super) fn install(&self, trees: Trees, generation: u64) {
        *self.open.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Opened { trees, generation });
    }

    /// The clock readers watch (its `durable` mark is shared by every instance).
    pub(super) fn clock(&self) -> &EventClock {
        &self.first_clock
    }

    /// Why the store cannot write now, or `None` when it can.
    pub(super) fn unavailable(&self) -> Option<String> {
        self.health.borrow().clone()
    }

    /// `Ok` while the store can write.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] with the reason.
    pub(super) fn check(&self) -> Result<(), QueueError> {
        match self.unavailable() {
            None => Ok(()),
            Some(_) => Err(self.refusal()),
        }
    }

    /// Marks the store unable to write because of `cause`; returns the refusal to answer.
    pub(super) fn fail(&self, cause: &str) -> QueueError {
        let reason = format!("the job store cannot write: {cause}");
        self.health.send_if_modified(|h| {
            let changed = h.as_deref() != Some(reason.as_str());
            if h.is_none() {
                tracing::error!(%reason, "the job store stopped accepting changes");
            }
            *h = Some(reason.clone());
            changed
        });
        self.refusal()
    }

    /// Marks the store able to write again.
    pub(super) fn recovered(&self) {
        if self.health.send_replace(None).is_some() {
            tracing::warn!("the job store writes again; accepting changes");
        }
    }

    /// Waits until the store can write.
    pub(super) async fn writable(&self) {
        let mut rx = self.health.subscribe();
        // The sender lives as long as `self`, so this only ends when the store is healthy.
        let _ = rx.wait_for(Option::is_none).await;
    }

    /// The refusal answered while the store cannot write.
    fn refusal(&self) -> QueueError {
        let why = self
            .unavailable()
            .unwrap_or_else(|| "the job store is closed until it can write again".to_owned());
        QueueError::Unavailable(format!(
            "{why}; not accepted: retry later (with the same Idempotency-Key, if one was sent)"
        ))
    }
}
