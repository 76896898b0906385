//! Group commit: one thread makes the store's writes durable, many at a time.
//!
//! Two kinds of work reach it. A *flush* waiter committed its own transaction and waits for it
//! to be on disk. A *write* (queueing a job: `enqueue.rs`) hands over the write itself: the
//! thread takes every write waiting at that moment and runs them in **one** sled transaction,
//! in order, each with its own outcome (a refused one writes nothing), so N concurrent requests
//! cost one log write instead of N. Then one flush answers everybody: sled's
//! `Db::flush`, followed by an `fdatasync` of sled's log file, because sled makes its writes
//! stable with `sync_file_range`, which flushes neither the file's size nor the disk's write
//! cache (an accepted job must survive a power cut, not only a crash of the daemon). A change
//! committed elsewhere that nobody waits to see on disk (a step's start with nothing of its
//! own to undo) may ask for a flush *soon*: within [`LAZY_FLUSH_AFTER`], unless another comes
//! first, so that its events reach the streams.
//!
//! A failed write or flush (a full disk) makes the store refuse changes until a probe write
//! succeeds; the thread closes sled at once, before it answers, and probes every
//! [`PROBE_EVERY`] meanwhile (`reopen.rs`).
//!
//! Why a thread of our own: sled 0.34.7's `flush_async` deadlocks when several tasks call it at
//! once (spacejam/sled#1308), and the blocking `Db::flush` must not run on the reactor.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::current::{Current, Opened};
use super::db::{Carried, Trees, Tx, TxResult};
use super::enqueue::Enqueued;
use super::reopen::PROBE_EVERY;
use super::QueueError;

/// Most pieces of work one round takes, so one transaction stays small.
const MAX_BATCH: usize = 512;

/// The longest a lazy write waits for a flush when nothing else asks for one.
pub(super) const LAZY_FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

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

/// Makes the [`LogSync`] of a newly opened log file (at open, and after every reopen).
pub(super) type MakeLogSync = Box<dyn Fn(File) -> Box<dyn LogSync> + Send>;

/// What a batched write answers: its job, or why not.
type WriteResult = Result<Enqueued, QueueError>;

/// What the thread is asked to do.
enum Work {
    /// Answer once everything committed on instance `generation` before is on disk.
    Flush(u64, oneshot::Sender<FlushResult>),
    /// Run this write with the others waiting, and answer once it is on disk.
    Write(BatchedWrite, oneshot::Sender<WriteResult>),
    /// Run this write with the others waiting, and answer once it is committed: it goes to
    /// disk with the next flush, which it does not cause (within [`LAZY_FLUSH_AFTER`] if no
    /// other comes).
    Lazy(BatchedWrite, oneshot::Sender<WriteResult>),
    /// A change was committed outside the thread that nobody waits to see on disk: flush
    /// within [`LAZY_FLUSH_AFTER`] if nothing else does (so its events reach the streams).
    Soon,
    /// A write outside the thread failed: close sled now.
    Failed(String),
}

/// What the thread works on.
pub(super) struct Shared {
    /// The instance open now, and the store's health.
    pub(super) current: Arc<Current>,
    /// Syncs sled's log file after every flush.
    pub(super) log: Box<dyn LogSync>,
    /// Makes `log` for a reopened instance.
    pub(super) make_log: MakeLogSync,
    /// What every reopen carries over (the event readers, the list cache's counter).
    pub(super) carried: Carried,
    /// The data directory.
    pub(super) dir: PathBuf,
    /// Whether the open instance failed a write since it was opened (sled keeps the error).
    pub(super) poisoned: bool,
    /// The open instance's generation.
    pub(super) generation: u64,
    /// Whether lazy writes were committed since the last flush.
    pub(super) unflushed: bool,
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
    /// Starts the thread `creepy-meow-commit` for the store `current` (in `dir`), whose sled
    /// log `log` syncs; `make_log` makes the sync of a reopened log.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub(super) fn spawn(
        current: Arc<Current>,
        dir: PathBuf,
        log: File,
        make_log: MakeLogSync,
    ) -> Result<Self, QueueError> {
        let (tx, rx) = mpsc::channel();
        let flushes = Arc::new(AtomicU64::new(0));
        let opened = current.opened()?;
        let mut shared = Shared {
            carried: opened.trees.carried(),
            log: make_log(log),
            make_log,
            current,
            dir,
            poisoned: false,
            generation: opened.generation,
            unflushed: false,
            flushes: Arc::clone(&flushes),
        };
        drop(opened);
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

    /// Waits until everything committed on instance `generation` before the call is on disk.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the flush fails, the store cannot write, or the
    /// instance was replaced (the change went with it); [`QueueError::Storage`] when the
    /// thread has stopped.
    pub(super) async fn flush(&self, generation: u64) -> Result<(), QueueError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(Work::Flush(generation, done_tx))?;
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `write` with whatever other writes are waiting, and answers once it is on disk.
    ///
    /// # Errors
    /// The write's own refusal, [`QueueError::Unavailable`], or [`QueueError::Storage`].
    pub(super) async fn write(&self, write: BatchedWrite) -> WriteResult {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(Work::Write(write, done_tx))?;
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `write` with whatever other writes are waiting, and answers once it is committed,
    /// not waiting for the disk (see [`Work::Lazy`]).
    ///
    /// # Errors
    /// As [`Self::write`].
    pub(super) async fn write_lazy(&self, write: BatchedWrite) -> WriteResult {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(Work::Lazy(write, done_tx))?;
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Asks for a flush within [`LAZY_FLUSH_AFTER`] of a change committed outside the thread
    /// that nobody waits for (see [`Work::Soon`]); returns at once.
    pub(super) fn flush_soon(&self) {
        // A stopped thread has nothing to flush.
        let _ = self.send(Work::Soon);
    }

    /// Tells the thread that a write outside it failed with `cause`, so it closes sled now.
    pub(super) fn failed(&self, cause: String) {
        // A stopped thread has nothing left to reopen.
        let _ = self.send(Work::Failed(cause));
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

/// One round's work, sorted.
#[derive(Default)]
struct Round {
    /// Flush waiters, with the generation each change was made on.
    flushes: Vec<(u64, oneshot::Sender<FlushResult>)>,
    /// The writes to run.
    writes: Vec<BatchedWrite>,
    /// Their waiters, in the same order.
    write_waiters: Vec<oneshot::Sender<WriteResult>>,
    /// The lazy writes, run after the others in the same transaction.
    lazy: Vec<BatchedWrite>,
    /// Their waiters.
    lazy_waiters: Vec<oneshot::Sender<WriteResult>>,
    /// Whether a change committed outside the thread asked for a flush soon.
    soon: bool,
    /// Failures reported from outside the thread.
    failures: Vec<String>,
}

/// The thread's loop: wait for one piece of work, take the others already queued, run the
/// writes among them in one transaction, flush once, answer them all; while the store cannot
/// write, probe every [`PROBE_EVERY`]. Ends when every sender is gone.
fn run(shared: &mut Shared, rx: &mpsc::Receiver<Work>) {
    loop {
        let wait = if shared.unflushed {
            LAZY_FLUSH_AFTER
        } else {
            PROBE_EVERY
        };
        let first = match rx.recv_timeout(wait) {
            Ok(work) => work,
            Err(mpsc::RecvTimeoutError::Timeout) if shared.unflushed => {
                commit_round(shared, Round::default());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                shared.probe();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut round = Round::default();
        for work in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)) {
            match work {
                Work::Flush(generation, w) => round.flushes.push((generation, w)),
                Work::Write(write, w) => {
                    round.writes.push(write);
                    round.write_waiters.push(w);
                }
                Work::Lazy(write, w) => {
                    round.lazy.push(write);
                    round.lazy_waiters.push(w);
                }
                Work::Soon => round.soon = true,
                Work::Failed(cause) => round.failures.push(cause),
            }
        }
        if let Some(cause) = round.failures.first() {
            shared.failed(cause);
        }
        commit_round(shared, round);
    }
}

/// Runs one round's writes, flushes if anything durable was asked (or lazy writes wait for
/// a flush: an empty round after [`LAZY_FLUSH_AFTER`]), and answers every waiter.
fn commit_round(shared: &mut Shared, round: Round) {
    let opened = match shared
        .current
        .check()
        .and_then(|()| shared.current.opened())
    {
        Ok(opened) => opened,
        Err(refusal) => return answer_all(round, &refusal),
    };
    let started = Instant::now();
    let eager = round.writes.len();
    let mut writes = round.writes;
    writes.extend(round.lazy);
    let mut written = if writes.is_empty() {
        Vec::new()
    } else {
        commit_batch(&opened.trees, &writes).unwrap_or_else(|e| vec![Err(e); writes.len()])
    };
    let batch_failed = written.iter().find_map(|r| match r {
        Err(QueueError::Storage(e)) => Some(e.clone()),
        _ => None,
    });
    let lazy_wrote = written[eager..].iter().any(Result::is_ok);
    let asked = !round.flushes.is_empty()
        || written[..eager].iter().any(Result::is_ok)
        || (writes.is_empty() && shared.unflushed);
    // A batch of refusals only wrote nothing, and lazy writes wait: no disk sync for them.
    let flushed = match batch_failed {
        Some(cause) => Some(Err(cause)),
        None if asked => Some(flush(shared, &opened)),
        None => None,
    };
    shared.unflushed |= flushed.is_none() && (lazy_wrote || round.soon);
    drop(opened);
    tracing::trace!(
        flush_waiters = round.flushes.len(),
        writes = writes.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "job store round"
    );
    // Reopened before anyone is answered: a client told 503 reads the disk's state at once.
    let flushed = flushed
        .unwrap_or(Ok(()))
        .map_err(|cause| shared.failed(&cause));
    for (generation, waiter) in round.flushes {
        // A change made on a replaced instance went with it.
        let answer = match &flushed {
            Ok(()) if generation != shared.generation => Err(replaced()),
            other => other.clone(),
        };
        // A waiter that went away (its request was dropped) needs no answer.
        let _ = waiter.send(answer);
    }
    let waiters = round.write_waiters.into_iter().chain(round.lazy_waiters);
    for (i, waiter) in waiters.enumerate() {
        let result = std::mem::replace(&mut written[i], Err(replaced()));
        // A refused write wrote nothing: its refusal stands whatever the flush did.
        let answer = match (result, &flushed) {
            (Ok(_) | Err(QueueError::Storage(_)), Err(e)) => Err(e.clone()),
            (result, _) => result,
        };
        let _ = waiter.send(answer);
    }
}

/// Answers every waiter of `round` with `refusal`.
fn answer_all(round: Round, refusal: &QueueError) {
    for (_, waiter) in round.flushes {
        let _ = waiter.send(Err(refusal.clone()));
    }
    for waiter in round.write_waiters.into_iter().chain(round.lazy_waiters) {
        let _ = waiter.send(Err(refusal.clone()));
    }
}

/// The refusal of a change made on an instance that was replaced before its flush.
fn replaced() -> QueueError {
    QueueError::Unavailable(
        "the job store was reopened after a failed write before this change was synced: it was not accepted; retry it (with the same Idempotency-Key, if one was sent)".into(),
    )
}

/// Runs `writes` in order in one transaction; each gets its own outcome, the outer error is
/// sled's, for the whole batch.
pub(super) fn commit_batch(
    trees: &Trees,
    writes: &[BatchedWrite],
) -> Result<Vec<WriteResult>, QueueError> {
    trees.transact(|tx| writes.iter().map(|write| write(tx)).collect())
}

/// Makes every write committed on `opened` durable: sled's flush, then an `fdatasync` of its
/// log; the error is a sentence naming the directory.
pub(super) fn flush(shared: &mut Shared, opened: &Opened) -> Result<(), String> {
    // Every event committed before the flush starts is on disk once it ends; lazy writes
    // wait no more (on a failure, the instance that held them is dropped).
    let events = opened.trees.clock().committed();
    shared.unflushed = false;
    let result = opened
        .trees
        .flush()
        .and_then(|()| shared.log.sync().map_err(|e| e.to_string()));
    shared.flushes.fetch_add(1, Ordering::Relaxed);
    if result.is_ok() {
        opened.trees.clock().synced(events);
    }
    result.map_err(|e| {
        tracing::error!(error = %e, "cannot flush the job store");
        format!(
            "cannot flush the job store in {} to disk: {e}",
            opened.trees.dir().display()
        )
    })
}

/// Opens the database in `shared.dir` again, with what every reopen carries over.
///
/// # Errors
/// As [`Trees::open`].
pub(super) fn open_again(shared: &Shared) -> Result<(Trees, File), QueueError> {
    Trees::open(&shared.dir, Some(shared.carried.clone()))
}
