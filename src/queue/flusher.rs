//! Group commit: one thread flushes sled for every waiter that queued up while it was busy.
//!
//! Why a thread of our own: sled 0.34.7's `flush_async` deadlocks when several tasks call it at
//! once (spacejam/sled#1308), and the blocking `Db::flush` must not run on the reactor. The
//! thread takes every waiter queued at that moment, calls `flush` once, and answers them all, so
//! N concurrent writers share one `fsync`. A waiter is only queued after its transaction
//! committed, so the flush that answers it covers its write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

/// How a flush ended: `Ok`, or sled's error as text (shared by every waiter of that flush).
type FlushResult = Result<(), String>;

/// The handle on the flusher thread. Dropping it closes the channel and joins the thread.
pub(super) struct Flusher {
    /// Where waiters go; `None` once dropping.
    tx: Option<mpsc::Sender<oneshot::Sender<FlushResult>>>,
    /// The thread, joined on drop so the database is closed when the store is.
    thread: Option<JoinHandle<()>>,
    /// Flushes done so far.
    flushes: Arc<AtomicU64>,
}

impl Flusher {
    /// Starts the thread `creepy-meow-flusher` for `db`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub(super) fn spawn(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&flushes);
        let thread = std::thread::Builder::new()
            .name("creepy-meow-flusher".into())
            .spawn(move || run(&db, &rx, &counter))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            flushes,
        })
    }

    /// Waits until everything committed before the call is on disk.
    ///
    /// # Errors
    /// sled's flush error as text, or a note that the flusher has stopped.
    pub(super) async fn flush(&self) -> Result<(), String> {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.tx.as_ref().map(|tx| tx.send(done_tx));
        if !matches!(sent, Some(Ok(()))) {
            return Err("the flusher thread has stopped".into());
        }
        done_rx
            .await
            .unwrap_or_else(|_| Err("the flusher thread stopped before answering".into()))
    }

    /// How many flushes the thread has done.
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered whoever was queued.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the job store flusher thread panicked");
            }
        }
    }
}

/// The thread's loop: wait for one waiter, take all the others already queued, flush once,
/// answer them all. Ends when every sender is gone.
fn run(db: &sled::Db, rx: &mpsc::Receiver<oneshot::Sender<FlushResult>>, flushes: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let started = Instant::now();
        let result = db.flush().map(drop).map_err(|e| e.to_string());
        flushes.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(
            waiters = waiters.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "job store flushed"
        );
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot flush the job store");
        }
        for waiter in waiters {
            // A waiter that went away (its request was dropped) needs no answer.
            let _ = waiter.send(result.clone());
        }
    }
}
