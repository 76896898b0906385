//! Group commit: one thread makes the store's writes durable, many at a time.
//!
//! Two kinds of work reach it. A *flush* waiter committed its own transaction and waits for it
//! to be on disk. A *write* (queueing a job: `enqueue.rs`) hands over the write itself: the
//! thread takes every write waiting at that moment and runs them in **one** sled transaction,
//! in order, each with its own outcome (a refused one writes nothing), so N concurrent requests
//! cost one log write instead of N. Then one flush answers everybody: sled's
//! `Db::flush`, followed by an `fdatasync` of sled's log file, because sled makes its writes
//! stable with `sync_file_range`, which flushes neither the file's size nor the disk's write
//! cache (an accepted job must survive a power cut, not only a crash of the daemon).
//!
//! Why a thread of our own: sled 0.34.7's `flush_async` deadlocks when several tasks call it at
//! once (spacejam/sled#1308), and the blocking `Db::flush` must not run on the reactor.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::db::{Trees, Tx, TxResult};
use super::enqueue::Enqueued;
use super::QueueError;

/// Most pieces of work one round takes, so one transaction stays small.
const MAX_BATCH: usize = 512;

/// How a flush ended: `Ok`, or the error (shared by every waiter of that flush).
type FlushResult = Result<(), QueueError>;

/// A write run inside a batch's transaction. It sees the writes before it in the batch, and
/// returns its own outcome: `Ok(Err(_))` is a refusal that wrote nothing; an `Err` is sled's
/// and fails the whole batch. sled may run it more than once (on a conflict), so it must only
/// read and write through the transaction.
pub(super) type BatchedWrite =
    Box<dyn Fn(&Tx<'_>) -> TxResult<Result<Enqueued, QueueError>> + Send>;

/// Makes sled's log file stable on disk once sled has flushed it: `fdatasync` in production;
/// tests put a recorder in its place that counts the syncs and can fail them, so that what
/// "accepted means durable" rests on is observable.
pub(super) trait LogSync: Send {
    /// Syncs the log's data to the disk.
    ///
    /// # Errors
    /// The file system's error.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl LogSync for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// What a batched write answers: its job, or why not.
type WriteResult = Result<Enqueued, QueueError>;

/// What the thread is asked to do.
enum Work {
    /// Answer once everything committed before is on disk.
    Flush(oneshot::Sender<FlushResult>),
    /// Run this write with the others waiting, and answer once it is on disk.
    Write(BatchedWrite, oneshot::Sender<WriteResult>),
}

/// What the thread works on.
struct Shared {
    trees: Trees,
    /// Syncs sled's log file after every flush.
    log: Box<dyn LogSync>,
    flushes: Arc<AtomicU64>,
}

/// The handle on the committer thread. Dropping it closes the channel and joins the thread.
pub(super) struct Committer {
    /// Where work goes; `None` once dropping.
    tx: Option<mpsc::Sender<Work>>,
    /// The thread, joined on drop so the database is closed when the store is.
    thread: Option<JoinHandle<()>>,
    /// Flushes done so far.
    flushes: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the thread `creepy-meow-commit` for the store of `trees`, whose sled log `log`
    /// syncs.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub(super) fn spawn(trees: Trees, log: Box<dyn LogSync>) -> Result<Self, QueueError> {
        let (tx, rx) = mpsc::channel();
        let flushes = Arc::new(AtomicU64::new(0));
        let mut shared = Shared {
            trees,
            log,
            flushes: Arc::clone(&flushes),
        };
        let thread = std::thread::Builder::new()
            .name("creepy-meow-commit".into())
            .spawn(move || run(&mut shared, &rx))
            .map_err(|e| {
                QueueError::Storage(format!("cannot start the job store's commit thread: {e}"))
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            flushes,
        })
    }

    /// Waits until everything committed before the call is on disk.
    ///
    /// # Errors
    /// [`QueueError::Storage`] when the flush fails or the thread has stopped.
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(Work::Flush(done_tx))?;
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `write` with whatever other writes are waiting, and answers once it is on disk.
    ///
    /// # Errors
    /// The write's own refusal, or [`QueueError::Storage`].
    pub(super) async fn write(&self, write: BatchedWrite) -> WriteResult {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(Work::Write(write, done_tx))?;
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// How many flushes the thread has done.
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn send(&self, work: Work) -> Result<(), QueueError> {
        match &self.tx {
            Some(tx) => tx.send(work).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered whoever was queued.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the job store's commit thread panicked");
            }
        }
    }
}

fn stopped() -> QueueError {
    QueueError::Storage("the job store's commit thread has stopped".into())
}

/// The thread's loop: wait for one piece of work, take the others already queued, run the
/// writes among them in one transaction, flush once, answer them all. Ends when every sender
/// is gone.
fn run(shared: &mut Shared, rx: &mpsc::Receiver<Work>) {
    while let Ok(first) = rx.recv() {
        let mut flush_waiters = Vec::new();
        let (mut writes, mut write_waiters) = (Vec::new(), Vec::new());
        for work in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)) {
            match work {
                Work::Flush(w) => flush_waiters.push(w),
                Work::Write(write, w) => {
                    writes.push(write);
                    write_waiters.push(w);
                }
            }
        }
        let written = if writes.is_empty() {
            Vec::new()
        } else {
            commit_batch(&shared.trees, &writes).unwrap_or_else(|e| vec![Err(e); writes.len()])
        };
        let started = Instant::now();
        // A batch of refusals only wrote nothing: no disk sync for it.
        let flushed = if flush_waiters.is_empty() && !written.iter().any(Result::is_ok) {
            Ok(())
        } else {
            flush(shared)
        };
        tracing::trace!(
            flush_waiters = flush_waiters.len(),
            writes = writes.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "job store flushed"
        );
        for waiter in flush_waiters {
            // A waiter that went away (its request was dropped) needs no answer.
            let _ = waiter.send(flushed.clone());
        }
        for (waiter, result) in write_waiters.into_iter().zip(written) {
            // A refused write wrote nothing: its refusal stands whatever the flush did.
            let answer = match (result, &flushed) {
                (Ok(_), Err(e)) => Err(e.clone()),
                (result, _) => result,
            };
            let _ = waiter.send(answer);
        }
    }
}

/// Runs `writes` in order in one transaction; each gets its own outcome, the outer error is
/// sled's, for the whole batch.
pub(super) fn commit_batch(
    trees: &Trees,
    writes: &[BatchedWrite],
) -> Result<Vec<WriteResult>, QueueError> {
    trees.transact(|tx| writes.iter().map(|write| write(tx)).collect())
}

/// Makes every committed write durable: sled's flush, then an `fdatasync` of its log.
fn flush(shared: &mut Shared) -> FlushResult {
    // Every event committed before the flush starts is on disk once it ends.
    let events = shared.trees.clock().committed();
    let result = shared
        .trees
        .flush()
        .and_then(|()| shared.log.sync().map_err(|e| e.to_string()));
    shared.flushes.fetch_add(1, Ordering::Relaxed);
    if result.is_ok() {
        shared.trees.clock().synced(events);
    }
    result.map_err(|e| {
        tracing::error!(error = %e, "cannot flush the job store");
        QueueError::Storage(format!(
            "cannot flush the job store in {} to disk: {e}",
            shared.trees.dir().display()
        ))
    })
}
