//! Group commit: one thread flushes sled for every waiter queued at that moment.
//!
//! sled 0.34.7's `flush_async` deadlocks when several tasks call it at once (upstream
//! spacejam/sled#1308; 3 hangs in 3 runs here), and the blocking `flush()` must not run on the
//! reactor. So waiters hand a oneshot to this thread, which drains every waiter present, calls
//! `flush()` once (one fsync) and answers them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

/// The flusher thread's handle. Dropping it ends the thread (after answering what it holds).
pub struct Flusher {
    tx: Option<mpsc::Sender<Waiter>>,
    flushes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread for `db`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flushes = Arc::new(AtomicU64::new(0));
        let count = flushes.clone();
        let thread = std::thread::Builder::new()
            .name("creepy-meow-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db
                        .flush()
                        .map(drop)
                        .map_err(|e| format!("flush the job store: {e}"));
                    count.fetch_add(1, Ordering::Relaxed);
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            flushes,
            thread: Some(thread),
        })
    }

    /// Waits until everything written before the call is on disk.
    ///
    /// # Errors
    /// When the flush fails or the thread is gone.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or("the flusher is stopped")?
            .send(tx)
            .map_err(|_| "the flusher thread is gone".to_string())?;
        rx.await
            .map_err(|_| "the flusher thread ended".to_string())?
    }

    /// How many flushes ran (each may serve many waiters).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
