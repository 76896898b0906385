//! Opening sled in the data directory and checking what it recovered.
//!
//! A store that does not read back is an error naming the directory; nothing is ever reset.
//! One case needs care: sled's recovery takes a log entry with a bad checksum for a write torn
//! by a crash, stops there and overwrites the rest, so a database damaged near its start opens
//! *empty*, without an error (measured with sled 0.34.7). An empty ledger would hand out IDs
//! and addresses already in use, so the store writes a format marker when it is created and
//! refuses, on every later start, a database that existed but lost it. Damage further in
//! loses the newest writes the same way, and cannot be told from a crash.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::codec::{corrupt, decode, decode_uuid, encode, hex, META_FORMAT};
use super::index::Index;
use super::{EventClock, Trees};
use crate::queue::job::{ContainerRecord, Job, JobState};
use crate::queue::lock::wait_until_unlocked;
use crate::queue::QueueError;

/// sled's page cache. Its default (1 GiB) never evicts, so every rewrite of a job (about
/// eleven per create) stayed in memory; the working set (queued and running jobs, the
/// ledger) is far smaller, and older pages come back from the OS page cache when read.
const CACHE_BYTES: u64 = 8 << 20;

/// The file in the data directory where sled 0.34 keeps its log (and pages); the commit
/// thread `fdatasync`s it, and its size tells a new store from an existing one.
const SLED_LOG: &str = "db";

/// How long an open waits for a handle of this process, still being closed, to let go of
/// sled's lock (see [`wait_until_unlocked`]).
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The on-disk format this code reads and writes: 2 since the enqueue order, the queues and
/// the address holders are derived in memory (`index.rs`).
const FORMAT: u64 = 2;

/// The format before: it also stored those as trees, which an open of it drops
/// ([`upgrade_from_1`]): a creepy-meow that wrote format 1 refuses the store afterwards.
const FORMAT_1: u64 = 1;

/// The trees format 1 kept and format 2 derives (`keys`: idempotency keys, in a tree of their
/// own in the first stores that had them; dropped if there).
const FORMAT_1_TREES: [&str; 5] = ["pending", "repairs", "order", "addrs", "keys"];

impl Trees {
    /// Opens (or creates) the database in `dir`, whose lock file the caller holds, checks it,
    /// and returns it with its log file (for the commit thread to sync). A reopen passes the
    /// instance it replaces (already closed: only its shared counters are kept), so event
    /// readers and the list cache carry over (see [`EventClock::reopened_at`]).
    ///
    /// # Errors
    /// [`QueueError::Corrupt`] when sled or a record does not read back, or the database came
    /// back without its format marker (nothing is reset); [`QueueError::Storage`] or
    /// [`QueueError::InUse`] when it cannot be opened.
    pub(in crate::queue) fn open(
        dir: &Path,
        previous: Option<Carried>,
    ) -> Result<(Self, File), QueueError> {
        let log_path = dir.join(SLED_LOG);
        wait_until_unlocked(&log_path, SLED_LOCK_WAIT)?;
        let existed = std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 0);
        remove_unfinished_snapshots(dir)?;
        let failed = |e: sled::Error| open_error(dir, e);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(failed)?;
        let mut trees = Trees {
            jobs: db.open_tree("jobs").map_err(failed)?,
            containers: db.open_tree("containers").map_err(failed)?,
            meta: db.open_tree("meta").map_err(failed)?,
            images: db.open_tree("images").map_err(failed)?,
            events: db.open_tree("events").map_err(failed)?,
            // Built from the records, below.
            index: Arc::default(),
            queued: Arc::default(),
            // Set once the counter is read, below.
            clock: Arc::new(EventClock::opened_at(0)),
            containers_gen: Arc::default(),
            dir: dir.to_owned(),
            db,
        };
        check_format(dir, &trees.db, &trees, existed)?;
        // Everything sled recovered is on disk: readers may see every event at once.
        let latest = trees.last_event_seq()?;
        match previous {
            Some(Carried {
                clock,
                containers_gen,
            }) => {
                trees.clock = Arc::new(clock.reopened_at(latest));
                // The records may differ from what the discarded instance showed.
                containers_gen.fetch_add(1, std::sync::atomic::Ordering::Release);
                trees.containers_gen = containers_gen;
            }
            None => trees.clock = Arc::new(EventClock::opened_at(latest)),
        }
        let index = index_records(&trees)?;
        let queued = index.queued();
        trees.index = Arc::new(Mutex::new(index));
        trees.queued = Arc::new(AtomicUsize::new(queued));
        // Every open writes (the marker again): after a storage fault, the reopened instance's
        // first flush then proves that sled can write (`reopen.rs`).
        trees
            .meta
            .insert(META_FORMAT, &FORMAT.to_be_bytes())
            .map_err(failed)?;
        let log = File::open(&log_path).map_err(|e| {
            QueueError::Storage(format!(
                "cannot open the job store's log {}: {e}",
                log_path.display()
            ))
        })?;
        tracing::info!(dir = %dir.display(), queued, jobs = trees.jobs.len(), "job store open");
        Ok((trees, log))
    }
}

/// What a reopened instance keeps of the one it replaces: the event clock's readers and the
/// list cache's counter.
#[derive(Clone)]
pub(in crate::queue) struct Carried {
    /// The replaced instance's clock.
    clock: Arc<EventClock>,
    /// The counter the list cache is keyed by.
    containers_gen: Arc<std::sync::atomic::AtomicU64>,
}

impl Trees {
    /// What a reopen of this instance carries over.
    pub(in crate::queue) fn carried(&self) -> Carried {
        Carried {
            clock: Arc::clone(&self.clock),
            containers_gen: Arc::clone(&self.containers_gen),
        }
    }
}

/// Removes the snapshot files sled began and never finished (`snap.<lsn>.generating`).
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, syncs it, then renames it to
/// `snap.<lsn>`; a write that fails (a full disk) leaves the `.generating` file behind. Its
/// open takes every `snap.*` but `.in___motion` files as a candidate and reads the last in
/// order, which is the unfinished one, so it refuses the database as corrupt ("empty/corrupt
/// snapshot file found"), on every later start too (measured: a soak run that filled the disk
/// while sled reopened). The file never held anything the log does not: without it sled uses
/// the last finished snapshot and replays its log from there.
///
/// # Errors
/// [`QueueError::Storage`] when the directory cannot be read or a file removed.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), QueueError> {
    let failed = |e: std::io::Error| {
        QueueError::Storage(format!(
            "cannot remove sled's unfinished snapshots in {}: {e}",
            dir.display()
        ))
    };
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let path = entry.map_err(failed)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %path.display(), "removing a snapshot sled never finished");
            std::fs::remove_file(&path).map_err(failed)?;
        }
    }
    Ok(())
}

/// Checks the format marker, writing it (durably) into a new store.
fn check_format(dir: &Path, db: &sled::Db, trees: &Trees, existed: bool) -> Result<(), QueueError> {
    let failed = |e: sled::Error| open_error(dir, e);
    let dir = dir.display();
    match trees.meta.get(META_FORMAT).map_err(failed)? {
        Some(v) if v.as_ref() == FORMAT.to_be_bytes() => Ok(()),
        Some(v) if v.as_ref() == FORMAT_1.to_be_bytes() => upgrade_from_1(db, trees),
        Some(v) => Err(QueueError::Corrupt(format!(
            "the job store in {dir} has format {}, not {FORMAT}; it was left as it is: run the creepy-meow that wrote it",
            hex(&v)
        ))),
        None if existed => Err(QueueError::Corrupt(format!(
            "the job store in {dir} came back without its format marker: its database is damaged and sled recovered it empty or nearly; restore it from a backup or move it aside (if its first start never completed, remove it)"
        ))),
        None => {
            trees
                .meta
                .insert(META_FORMAT, &FORMAT.to_be_bytes())
                .map_err(failed)?;
            db.flush().map_err(failed)?;
            Ok(())
        }
    }
}

/// Upgrades a format-1 store: each idempotency key's digest moves from its `meta` entry into
/// the job it made; the trees now derived in memory, the queued counter and the key entries are
/// dropped; the store is marked format 2, durably. Jobs and records are otherwise the same.
fn upgrade_from_1(db: &sled::Db, trees: &Trees) -> Result<(), QueueError> {
    let failed = |e: sled::Error| open_error(&trees.dir, e);
    for item in trees.meta.scan_prefix(META_IDEMPOTENCY_1) {
        let (k, v) = item.map_err(failed)?;
        let key = String::from_utf8_lossy(&k[META_IDEMPOTENCY_1.len()..]).into_owned();
        let (job, digest) = v.split_at(16.min(v.len()));
        let id = decode_uuid("meta", &key, job)?;
        let digest = <[u8; 16]>::try_from(digest)
            .map_err(|_| corrupt("meta", &key, "not a 16-byte digest after the job"))?;
        // A key outlives its job only if pruning was cut short: then it names nothing.
        if let Some(bytes) = trees.jobs.get(id.as_bytes()).map_err(failed)? {
            let mut job: Job = decode("jobs", &id, &bytes)?;
            job.idempotency_digest = Some(digest);
            let bytes = encode(&job)?;
            trees.jobs.insert(id.as_bytes(), bytes).map_err(failed)?;
        }
        trees.meta.remove(k).map_err(failed)?;
    }
    for name in FORMAT_1_TREES {
        db.drop_tree(name).map_err(failed)?;
    }
    trees.meta.remove(META_QUEUED_1).map_err(failed)?;
    trees
        .meta
        .insert(META_FORMAT, &FORMAT.to_be_bytes())
        .map_err(failed)?;
    db.flush().map_err(failed)?;
    tracing::info!(dir = %trees.dir.display(), "job store upgraded from format 1 to 2");
    Ok(())
}

/// Format 1's count of queued jobs in `meta`.
const META_QUEUED_1: &[u8] = b"queued";

/// Format 1's idempotency keys in `meta`: `idem/<key>` → the job's 16 bytes, then the digest.
const META_IDEMPOTENCY_1: &[u8] = b"idem/";

/// Decodes every job and container once, so a corrupt record stops the daemon at start, with
/// its name, rather than in the middle of a request; and builds the index from them.
fn index_records(trees: &Trees) -> Result<Index, QueueError> {
    let gated: HashSet<Uuid> = trees.gated()?.into_iter().collect();
    let mut index = Index::default();
    for item in trees.jobs.iter() {
        let (key, bytes) =
            item.map_err(|e| QueueError::Corrupt(format!("cannot read jobs: {e}")))?;
        let id = decode_uuid("jobs", &hex(&key), &key)?;
        let job = decode::<Job>("jobs", &id, &bytes)?;
        index.insert_job(&job, job.state == JobState::Queued && !gated.contains(&id));
    }
    for item in trees.containers.iter() {
        let (key, bytes) =
            item.map_err(|e| QueueError::Corrupt(format!("cannot read containers: {e}")))?;
        let rec = decode::<ContainerRecord>("containers", &hex(&key), &bytes)?;
        index.insert_record(&rec).map_err(|twice| {
            let [a, b] = twice.holders;
            let (vlan, ip) = twice.addr;
            QueueError::Corrupt(format!(
                "the job store in {} is damaged: containers {a} and {b} both hold {ip} on vlan {vlan}; it was left as it is: restore it from a backup or move it aside",
                trees.dir.display()
            ))
        })?;
    }
    Ok(index)
}

/// Why sled would not open `dir`.
fn open_error(dir: &Path, e: sled::Error) -> QueueError {
    let dir = dir.display();
    match e {
        sled::Error::Corruption { .. } => QueueError::Corrupt(format!(
            "the job store in {dir} is corrupt ({e}); it was left as it is: restore it from a backup or move it aside"
        )),
        e => QueueError::Storage(format!("cannot open the job store in {dir}: {e}")),
    }
}
