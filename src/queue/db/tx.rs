//! [`Tx`]: typed reads and writes inside one sled transaction over every tree.

use std::cell::Cell;
use std::net::Ipv4Addr;

use sled::transaction::TransactionalTree;
use uuid::Uuid;

use super::codec::{
    abort, container_key, decode, decode_u64, decode_uuid, encode, TxResult, META_IMAGE_BUILD,
    META_SEQ,
};
use super::index::View;
use crate::model::{ContainerId, VlanId};
use crate::queue::job::{ContainerRecord, Job, KeyRecord};
use crate::queue::QueueError;

/// Every tree, seen from inside one transaction.
///
/// Its fields are private to the storage layer: its methods are the only way to change the
/// trees, so the rules they keep (the queues, an address held with its record, the
/// list cache's counter bumped on every write of `containers`, the index changed with what it
/// is derived from) cannot be bypassed.
pub(in crate::queue) struct Tx<'t> {
    /// Job ID → job.
    pub(super) jobs: &'t TransactionalTree,
    /// Container ID → record.
    pub(super) containers: &'t TransactionalTree,
    /// Counters.
    pub(super) meta: &'t TransactionalTree,
    /// Events (`events.rs`).
    pub(super) events: &'t TransactionalTree,
    /// The enqueue order, the queues, the address holders and the idempotency keys
    /// (`index.rs`).
    pub(super) index: View<'t>,
    /// Set when this transaction writes `containers`.
    pub(super) touched: &'t Cell<bool>,
    /// The number of the newest event this transaction wrote (0: none).
    pub(super) emitted: &'t Cell<u64>,
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

    /// Adds a new job: the record, its place in the enqueue order, and the idempotency key
    /// that made it, if any (the job carries its request's digest): the key names it from now
    /// on.
    pub fn add_job(&self, job: &Job) -> TxResult<()> {
        self.put_job(job)?;
        self.index.add_job(job);
        Ok(())
    }

    /// Deletes finished job `job`: its record, its place in the enqueue order, and its
    /// idempotency key.
    pub fn remove_job(&self, job: &Job) -> TxResult<()> {
        self.jobs.remove(job.id.as_bytes())?;
        self.index.remove_job(job);
        Ok(())
    }

    /// What idempotency key `key` names, if a retained job was made with it.
    pub fn key(&self, key: &str) -> TxResult<Option<KeyRecord>> {
        Ok(self.index.key(key))
    }

    /// Puts `job` in the worker's queue at its sequence number: an operator's, or the repairs'
    /// (which wait behind every job an operator asked for). Its state says it is queued.
    pub fn push_pending(&self, job: &Job) -> TxResult<()> {
        self.index.push(job);
        Ok(())
    }

    /// Takes `job` out of the worker's queue.
    pub fn remove_pending(&self, job: &Job) -> TxResult<()> {
        self.index.take(job);
        Ok(())
    }

    /// How many jobs are queued for the worker.
    pub fn queued(&self) -> TxResult<u64> {
        Ok(self.index.queued())
    }

    /// Hands out the next sequence number.
    pub fn next_seq(&self) -> TxResult<u64> {
        self.bump(META_SEQ)
    }

    /// Adds one to the counter at `key` in `meta` (absent: 0) and returns the new value.
    pub(super) fn bump(&self, key: &[u8]) -> TxResult<u64> {
        let last = match self.meta.get(key)? {
            Some(b) => {
                let name = String::from_utf8_lossy(key);
                decode_u64("meta", &name, &b).or_else(abort)?
            }
            None => 0,
        };
        let next = last + 1;
        self.meta.insert(key, &next.to_be_bytes())?;
        Ok(next)
    }

    /// The image build job pending or running for template `template`, if any.
    pub fn image_build(&self, template: &str) -> TxResult<Option<Uuid>> {
        let key = [META_IMAGE_BUILD, template.as_bytes()].concat();
        match self.meta.get(key)? {
            Some(b) => Ok(Some(decode_uuid("meta", &template, &b).or_else(abort)?)),
            None => Ok(None),
        }
    }

    /// Makes `job` the image build pending or running for `template` (`None`: there is none).
    pub fn set_image_build(&self, template: &str, job: Option<Uuid>) -> TxResult<()> {
        let key = [META_IMAGE_BUILD, template.as_bytes()].concat();
        match job {
            Some(job) => self.meta.insert(key, job.as_bytes().as_slice())?,
            None => self.meta.remove(key)?,
        };
        Ok(())
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
        self.index.hold(rec);
        Ok(())
    }

    /// Removes `rec` and frees its address.
    pub fn remove_record(&self, rec: &ContainerRecord) -> TxResult<()> {
        self.touched.set(true);
        self.containers.remove(&container_key(rec.id))?;
        self.index.free(rec);
        Ok(())
    }

    /// The container holding `ip` on `vlan`, if any.
    pub fn addr_holder(&self, vlan: VlanId, ip: Ipv4Addr) -> TxResult<Option<ContainerId>> {
        Ok(self.index.holder((vlan, ip)))
    }
}
