//! The levers and signals shared by the API and the worker: pause/resume, "a job was queued",
//! and "some job changed" (for waiters).

use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Cheap to clone; every clone controls the same worker.
#[derive(Clone)]
pub struct QueueControl {
    paused: Arc<watch::Sender<bool>>,
    wake: Arc<Notify>,
    changes: Arc<watch::Sender<u64>>,
}

impl QueueControl {
    /// Controls for a worker that starts paused or not.
    pub fn new(paused: bool) -> Self {
        Self {
            paused: Arc::new(watch::channel(paused).0),
            wake: Arc::new(Notify::new()),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Stops the worker from taking new jobs (a running job finishes first).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Lets the worker take jobs again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
        self.wake.notify_one();
    }

    /// Whether the worker is paused.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// A receiver that sees pause changes.
    pub fn paused_rx(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Tells the worker a job was queued.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Self::wake_worker`] is called (a call made before the wait counts).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Tells waiters some job changed state.
    pub fn job_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every job change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
