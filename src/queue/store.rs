//! The job store on sled: jobs, the pending index, and the reservation ledger, changed only in
//! transactions and made durable through the group committer before anyone is told "done".
//!
//! Trees: `jobs` (job UUID → Job), `pending` (seq, big-endian → job UUID; the queue in order),
//! `containers` (ID, big-endian → ContainerRecord), `addrs` (VLAN byte + IPv4 bytes → ID),
//! `meta` (`seq`, `queued` counters).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::flusher::Flusher;
use super::job::{ContainerRecord, ContainerRecordState, Job, JobKind, JobRequest, JobState};
use super::QueueError;
use crate::model::{ContainerId, Ipv4Cidr, VlanId};
use crate::steps::{CreateSpec, StepEvent};

/// Limits of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most jobs waiting at once; past it enqueues fail with [`QueueError::QueueFull`].
    pub max_queued: usize,
    /// Finished jobs kept at most (the newest).
    pub keep_finished: usize,
    /// Finished jobs older than this are pruned.
    pub keep_for: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_queued: 10_000,
            keep_finished: 10_000,
            keep_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

struct Inner {
    jobs: Tree,
    pending: Tree,
    containers: Tree,
    addrs: Tree,
    meta: Tree,
    opts: StoreOptions,
    dir: PathBuf,
    /// Declared before `_lock` so the database closes before the lock is released.
    flusher: Flusher,
    _lock: File,
}

/// The durable job store. Clones share it.
#[derive(Clone)]
pub struct JobStore {
    inner: Arc<Inner>,
}

type Abort = ConflictableTransactionError<QueueError>;
type Tx<'a> = &'a TransactionalTree;

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialize")
}

fn dec<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(bytes)
        .map_err(|e| QueueError::Corrupt(format!("{what} cannot be read: {e}")))
}

fn storage(what: &str) -> impl Fn(sled::Error) -> QueueError + '_ {
    move |e| QueueError::Storage(format!("{what}: {e}"))
}

fn id_key(id: ContainerId) -> [u8; 4] {
    id.get().to_be_bytes()
}

fn addr_key(vlan: VlanId, ip: Ipv4Cidr) -> [u8; 5] {
    let o = ip.addr.octets();
    [vlan.get(), o[0], o[1], o[2], o[3]]
}

fn abort(e: QueueError) -> Abort {
    ConflictableTransactionError::Abort(e)
}

fn tx_get<T: DeserializeOwned>(tree: Tx<'_>, key: &[u8], what: &str) -> Result<Option<T>, Abort> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => dec(what, &v).map(Some).map_err(abort),
    }
}

fn tx_counter(meta: Tx<'_>, key: &str, delta: i64) -> Result<u64, Abort> {
    let now = meta.get(key)?.map_or(0, |v| {
        u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
    });
    let next = now.saturating_add_signed(delta);
    meta.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

fn tx_job(jobs: Tx<'_>, id: Uuid) -> Result<Job, Abort> {
    tx_get(jobs, id.as_bytes(), &format!("job {id}"))?
        .ok_or_else(|| abort(QueueError::NotFound(format!("job {id} does not exist"))))
}

fn tx_transition(job: &mut Job, to: JobState) -> Result<(), Abort> {
    if !job.state.can_become(to) {
        return Err(abort(QueueError::BadTransition {
            from: job.state,
            to,
        }));
    }
    job.state = to;
    Ok(())
}

/// Releases or confirms the ledger entry of a job that ended (or was cancelled).
fn tx_settle(containers: Tx<'_>, addrs: Tx<'_>, job: &Job, ok: bool) -> Result<(), Abort> {
    let key = id_key(job.container_id);
    let Some(mut rec) = tx_get::<ContainerRecord>(containers, &key, "container record")? else {
        return Ok(());
    };
    let release = matches!(
        (job.kind, ok),
        (JobKind::Create, false) | (JobKind::Destroy, true)
    );
    if release {
        containers.remove(&key)?;
        addrs.remove(&addr_key(rec.vlan, rec.ip))?;
    } else {
        rec.state = ContainerRecordState::Active;
        rec.job_id = None;
        containers.insert(&key, enc(&rec))?;
    }
    Ok(())
}

impl JobStore {
    /// Opens (or creates) the store in `dir`, taking an exclusive lock on it.
    ///
    /// # Errors
    /// [`QueueError::InUse`] when another process holds the directory; [`QueueError::Storage`]
    /// or [`QueueError::Corrupt`] when it cannot be opened or read. Never resets anything.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Self, QueueError> {
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| {
            QueueError::Storage(format!("cannot create data directory {shown}: {e}"))
        })?;
        let lock = lock_dir(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .map_err(|e| match e {
                sled::Error::Corruption { .. } => {
                    QueueError::Corrupt(format!("the job store in {shown} is corrupt: {e}"))
                }
                other => {
                    QueueError::Storage(format!("cannot open the job store in {shown}: {other}"))
                }
            })?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(storage("open the job store's trees"))
        };
        let (jobs, pending, containers, addrs, meta) = (
            tree("jobs")?,
            tree("pending")?,
            tree("containers")?,
            tree("addrs")?,
            tree("meta")?,
        );
        for item in jobs.iter() {
            let (k, v) = item.map_err(storage("read jobs"))?;
            dec::<Job>(&format!("job record {} in {shown}", hex(&k)), &v)?;
        }
        let flusher = Flusher::start(db)
            .map_err(|e| QueueError::Storage(format!("start the flusher thread: {e}")))?;
        let inner = Inner {
            jobs,
            pending,
            containers,
            addrs,
            meta,
            opts,
            dir: dir.to_path_buf(),
            flusher,
            _lock: lock,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes that ran so far (group commit serves many writes with one).
    pub fn flushes(&self) -> u64 {
        self.inner.flusher.flushes()
    }

    async fn durable(&self) -> Result<(), QueueError> {
        self.inner
            .flusher
            .flush()
            .await
            .map_err(QueueError::Storage)
    }

    fn trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree) {
        let i = &self.inner;
        (&i.jobs, &i.pending, &i.containers, &i.addrs, &i.meta)
    }

    /// Runs `f` as one transaction over all trees.
    fn transact<T>(
        &self,
        f: impl Fn(Tx<'_>, Tx<'_>, Tx<'_>, Tx<'_>, Tx<'_>) -> Result<T, Abort>,
    ) -> Result<T, QueueError> {
        self.trees()
            .transaction(|(jobs, pending, containers, addrs, meta)| {
                f(jobs, pending, containers, addrs, meta)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => {
                    QueueError::Storage(format!("job store transaction: {e}"))
                }
            })
    }

    fn enqueue(
        &self,
        make: impl Fn(Tx<'_>, Tx<'_>, u64) -> Result<JobRequest, Abort>,
    ) -> Result<Job, QueueError> {
        let max = self.inner.opts.max_queued;
        self.transact(|jobs, pending, containers, addrs, meta| {
            if tx_counter(meta, "queued", 0)? >= max as u64 {
                return Err(abort(QueueError::QueueFull { max }));
            }
            let seq = tx_counter(meta, "seq", 1)?;
            let request = make(containers, addrs, seq)?;
            let job = Job::new(seq, request);
            let key = id_key(job.container_id);
            if let Some(mut rec) = tx_get::<ContainerRecord>(containers, &key, "container record")?
            {
                rec.job_id = Some(job.id);
                containers.insert(&key, enc(&rec))?;
            }
            jobs.insert(job.id.as_bytes(), enc(&job))?;
            pending.insert(&seq.to_be_bytes(), job.id.as_bytes())?;
            tx_counter(meta, "queued", 1)?;
            Ok(job)
        })
    }

    /// Stores a create job with its reservations (ID, and address within the VLAN), durably.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the ID or address is taken, [`QueueError::QueueFull`].
    pub async fn enqueue_create(&self, spec: CreateSpec) -> Result<Job, QueueError> {
        let job = self.enqueue(|containers, addrs, _| {
            let key = id_key(spec.id);
            if let Some(rec) = tx_get::<ContainerRecord>(containers, &key, "container record")? {
                return Err(abort(QueueError::Conflict(match rec.job_id {
                    Some(j) => format!("container {} has a job pending (job {j})", spec.id),
                    None => format!("container {} already exists", spec.id),
                })));
            }
            let akey = addr_key(spec.vlan, spec.ip);
            if let Some(owner) = addrs.get(akey)? {
                let owner = u32::from_be_bytes(owner.as_ref().try_into().unwrap_or([0; 4]));
                return Err(abort(QueueError::Conflict(format!(
                    "{} is already used on vlan {} by container {owner}",
                    spec.ip.addr, spec.vlan
                ))));
            }
            let rec = ContainerRecord {
                id: spec.id,
                vlan: spec.vlan,
                ip: spec.ip,
                gateway: spec.gateway,
                state: ContainerRecordState::Creating,
                job_id: None,
                created_at: OffsetDateTime::now_utc(),
            };
            containers.insert(&key, enc(&rec))?;
            addrs.insert(&akey, &key)?;
            Ok(JobRequest::Create(spec.clone()))
        })?;
        self.durable().await?;
        Ok(job)
    }

    /// Stores a destroy job, holding the container against other jobs, durably.
    ///
    /// # Errors
    /// [`QueueError::NotFound`], [`QueueError::Conflict`] while another job holds it,
    /// [`QueueError::QueueFull`].
    pub async fn enqueue_destroy(&self, id: ContainerId) -> Result<Job, QueueError> {
        let job = self.enqueue(|containers, _, _| {
            let key = id_key(id);
            let mut rec: ContainerRecord = tx_get(containers, &key, "container record")?
                .ok_or_else(|| {
                    abort(QueueError::NotFound(format!(
                        "container {id} does not exist"
                    )))
                })?;
            if let Some(j) = rec.job_id {
                return Err(abort(QueueError::Conflict(format!(
                    "container {id} has a job pending (job {j})"
                ))));
            }
            rec.state = ContainerRecordState::Destroying;
            containers.insert(&key, enc(&rec))?;
            Ok(JobRequest::Destroy { id })
        })?;
        self.durable().await?;
        Ok(job)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes `dir/LOCK` exclusively (flock), writing our pid into it.
fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| QueueError::Storage(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(QueueError::InUse(format!(
            "data directory {} is in use by another creepy-meow (pid {}); stop it or pass another --data-dir",
            dir.display(),
            holder.trim()
        )));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

#[path = "store_ops.rs"]
mod ops;
