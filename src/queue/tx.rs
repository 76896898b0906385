//! The key layout of the trees, JSON encoding, and [`Tx`]: typed reads and writes inside one
//! sled transaction over every tree.
//!
//! Keys are big-endian so sled's byte order is numeric order: `pending` and `order` iterate
//! oldest first, `containers` by ID.

use std::cell::Cell;
use std::fmt::Display;
use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use uuid::Uuid;

use super::job::{ContainerRecord, Job};
use super::QueueError;
use crate::model::{ContainerId, VlanId};

/// The result of a step inside a transaction; `Abort` carries our error out.
pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<QueueError>>;

/// Leaves the transaction with `e`, changing nothing.
pub(super) fn abort<T>(e: QueueError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Key in `meta` of the last sequence number handed out.
pub(super) const META_SEQ: &[u8] = b"seq";
/// Key in `meta` of the number of entries in `pending`.
pub(super) const META_QUEUED: &[u8] = b"queued";

/// Key of a sequence number in `pending` and `order`.
pub(super) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Key of a container in `containers`.
pub(super) fn container_key(id: ContainerId) -> [u8; 4] {
    id.get().to_be_bytes()
}

/// Key of an address in `addrs`: the VLAN byte, then the four address bytes.
pub(super) fn addr_key(vlan: VlanId, ip: Ipv4Addr) -> [u8; 5] {
    let [a, b, c, d] = ip.octets();
    [vlan.get(), a, b, c, d]
}

/// Reads a big-endian `u64` (a counter or a sequence number).
pub(super) fn decode_u64(tree: &str, key: &dyn Display, bytes: &[u8]) -> Result<u64, QueueError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(tree, key, "not an 8-byte number"))?;
    Ok(u64::from_be_bytes(arr))
}

/// Reads a job ID stored as a value.
pub(super) fn decode_uuid(tree: &str, key: &dyn Display, bytes: &[u8]) -> Result<Uuid, QueueError> {
    Uuid::from_slice(bytes).map_err(|e| corrupt(tree, key, e))
}

/// Decodes a JSON record.
pub(super) fn decode<T: DeserializeOwned>(
    tree: &str,
    key: &dyn Display,
    bytes: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(tree, key, e))
}

/// Encodes a record as JSON.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(value)
        .map_err(|e| QueueError::Storage(format!("cannot encode a record: {e}")))
}

/// The error for a record that does not decode, naming tree and key.
pub(super) fn corrupt(tree: &str, key: &dyn Display, why: impl Display) -> QueueError {
    QueueError::Corrupt(format!(
        "the job store's record {tree}/{key} is corrupt ({why}); it was left as it is"
    ))
}

/// Every tree, seen from inside one transaction.
pub(super) struct Tx<'t> {
    /// Job ID → job.
    pub jobs: &'t TransactionalTree,
    /// Sequence number → job ID, queued jobs only.
    pub pending: &'t TransactionalTree,
    /// Sequence number → job ID, every job.
    pub order: &'t TransactionalTree,
    /// Container ID → record.
    pub containers: &'t TransactionalTree,
    /// `(vlan, address)` → container ID.
    pub addrs: &'t TransactionalTree,
    /// Counters.
    pub meta: &'t TransactionalTree,
    /// Set when this transaction writes `containers`.
    pub touched: &'t Cell<bool>,
}

impl Tx<'_> {
    /// The job `id`, or `None`.
    pub fn find_job(&self, id: Uuid) -> TxResult<Option<Job>> {
        match self.jobs.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode("jobs", &id, &bytes).or_else(abort)?)),
            None => Ok(None),
        }
    }

    /// The job `id`.
    pub fn job(&self, id: Uuid) -> TxResult<Job> {
        match self.find_job(id)? {
            Some(job) => Ok(job),
            None => abort(QueueError::NotFound(format!("job {id} does not exist"))),
        }
    }

    /// Stores `job`, new or changed.
    pub fn put_job(&self, job: &Job) -> TxResult<()> {
        self.jobs
            .insert(job.id.as_bytes(), encode(job).or_else(abort)?)?;
        Ok(())
    }

    /// Adds a new job: the record and its place in `order`.
    pub fn add_job(&self, job: &Job) -> TxResult<()> {
        self.put_job(job)?;
        self.order.insert(&seq_key(job.seq), job.id.as_bytes())?;
        Ok(())
    }

    /// Puts `job` in the queue at its sequence number.
    pub fn push_pending(&self, job: &Job) -> TxResult<()> {
        self.pending.insert(&seq_key(job.seq), job.id.as_bytes())?;
        self.add_queued(1)
    }

    /// Takes `job` out of the queue.
    pub fn remove_pending(&self, job: &Job) -> TxResult<()> {
        if self.pending.remove(&seq_key(job.seq))?.is_some() {
            self.add_queued(-1)?;
        }
        Ok(())
    }

    /// How many jobs are queued.
    pub fn queued(&self) -> TxResult<u64> {
        match self.meta.get(META_QUEUED)? {
            Some(b) => Ok(decode_u64("meta", &"queued", &b).or_else(abort)?),
            None => Ok(0),
        }
    }

    fn add_queued(&self, delta: i64) -> TxResult<()> {
        let n = self.queued()?.saturating_add_signed(delta);
        self.meta.insert(META_QUEUED, &n.to_be_bytes())?;
        Ok(())
    }

    /// Hands out the next sequence number.
    pub fn next_seq(&self) -> TxResult<u64> {
        let last = match self.meta.get(META_SEQ)? {
            Some(b) => decode_u64("meta", &"seq", &b).or_else(abort)?,
            None => 0,
        };
        let next = last + 1;
        self.meta.insert(META_SEQ, &next.to_be_bytes())?;
        Ok(next)
    }

    /// The record of container `id`, or `None`.
    pub fn record(&self, id: ContainerId) -> TxResult<Option<ContainerRecord>> {
        match self.containers.get(container_key(id))? {
            Some(bytes) => Ok(Some(decode("containers", &id, &bytes).or_else(abort)?)),
            None => Ok(None),
        }
    }

    /// Stores `rec` and holds its address.
    pub fn put_record(&self, rec: &ContainerRecord) -> TxResult<()> {
        self.touched.set(true);
        self.containers
            .insert(&container_key(rec.id), encode(rec).or_else(abort)?)?;
        self.addrs
            .insert(&addr_key(rec.vlan, rec.ip.addr), &container_key(rec.id))?;
        Ok(())
    }

    /// Removes `rec` and frees its address.
    pub fn remove_record(&self, rec: &ContainerRecord) -> TxResult<()> {
        self.touched.set(true);
        self.containers.remove(&container_key(rec.id))?;
        self.addrs.remove(&addr_key(rec.vlan, rec.ip.addr))?;
        Ok(())
    }

    /// The container holding `ip` on `vlan`, if any.
    pub fn addr_holder(&self, vlan: VlanId, ip: Ipv4Addr) -> TxResult<Option<u32>> {
        match self.addrs.get(addr_key(vlan, ip))? {
            Some(b) => {
                let arr: [u8; 4] = b.as_ref().try_into().or_else(|_| {
                    abort(corrupt("addrs", &format!("{vlan}/{ip}"), "not a 4-byte ID"))
                })?;
                Ok(Some(u32::from_be_bytes(arr)))
            }
            None => Ok(None),
        }
    }
}
