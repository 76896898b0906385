//! The indexes derived from the stored jobs and records, kept in memory: every job in enqueue
//! order, the two queues the worker takes from, who holds each address, and which job each
//! idempotency key made.
//!
//! Each is a function of what is stored — a job's sequence number, state, origin, key and the
//! digest of its request, whether it is gated; a record's `(vlan, address)` — so it is built
//! from the trees when the store opens (`open.rs`) and never written to disk. A transaction
//! changes it through [`Staged`], which its reads see at once and which joins the index only
//! once sled has committed the transaction; the index's lock is held from the transaction's
//! first read to that point, so no other transaction reads it in between. Stored as trees and
//! `meta` entries, these were half the inserts of a create (and one more for a key) in the
//! commit thread's transaction (see PERFORMANCE.md, Limits). What a job or a record
//! contributes is worked out once (`key_of`, `addr_of`), for the build at open and for each
//! transaction alike; a transaction's count of queued jobs is derived from its changes.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Bound;

use uuid::Uuid;

use crate::model::{ContainerId, VlanId};
use crate::queue::job::{ContainerRecord, Job, KeyRecord, Origin};

/// Who may hold an address: the VLAN and the address.
pub(super) type AddrKey = (VlanId, Ipv4Addr);

/// The two queues, by who asked: an operator's jobs run before any repair.
const QUEUES: usize = 2;

/// The queue of jobs from `origin`.
fn queue_of(origin: Origin) -> usize {
    match origin {
        Origin::Operator => 0,
        Origin::Reconcile => 1,
    }
}

/// The address `rec` holds.
fn addr_of(rec: &ContainerRecord) -> AddrKey {
    (rec.vlan, rec.ip.addr)
}

/// The idempotency key that made `job`, if any, and what it names.
fn key_of(job: &Job) -> Option<(&str, KeyRecord)> {
    let key = job.idempotency_key.as_deref()?;
    let digest = job.idempotency_digest?;
    Some((
        key,
        KeyRecord {
            job: job.id,
            digest,
        },
    ))
}

/// The committed indexes.
#[derive(Debug, Default)]
pub(in crate::queue) struct Index {
    /// Sequence number → job ID, every stored job.
    order: BTreeMap<u64, Uuid>,
    /// Sequence number → job ID, queued jobs the worker may take, one map per origin.
    queues: [BTreeMap<u64, Uuid>; QUEUES],
    /// Address → the container whose record holds it.
    addrs: BTreeMap<AddrKey, ContainerId>,
    /// Idempotency key → the job it made, and its request's digest.
    keys: BTreeMap<String, KeyRecord>,
}

/// One transaction's changes to the index, not yet committed: a key mapped to `None` is
/// removed.
#[derive(Debug, Default)]
pub(in crate::queue) struct Staged {
    order: BTreeMap<u64, Option<Uuid>>,
    queues: [BTreeMap<u64, Option<Uuid>>; QUEUES],
    addrs: BTreeMap<AddrKey, Option<ContainerId>>,
    keys: BTreeMap<String, Option<KeyRecord>>,
}

/// Two records claim one address: the store is damaged.
#[derive(Debug)]
pub(super) struct AddressTwice {
    pub(super) addr: AddrKey,
    pub(super) holders: [ContainerId; 2],
}

/// Building at open, from what is stored.
impl Index {
    /// Adds stored `job`; `runnable` when the worker may take it (queued and not gated).
    pub(super) fn insert_job(&mut self, job: &Job, runnable: bool) {
        self.order.insert(job.seq, job.id);
        if runnable {
            self.queues[queue_of(job.origin)].insert(job.seq, job.id);
        }
        if let Some((key, record)) = key_of(job) {
            self.keys.insert(key.to_string(), record);
        }
    }

    /// Adds stored record `rec`, which holds its address.
    pub(super) fn insert_record(&mut self, rec: &ContainerRecord) -> Result<(), AddressTwice> {
        let addr = addr_of(rec);
        match self.addrs.insert(addr, rec.id) {
            Some(other) if other != rec.id => Err(AddressTwice {
                addr,
                holders: [other, rec.id],
            }),
            _ => Ok(()),
        }
    }
}

impl Index {
    /// How many jobs are queued for the worker.
    pub(super) fn queued(&self) -> usize {
        self.queues.iter().map(BTreeMap::len).sum()
    }

    /// The next job for the worker: the oldest an operator asked for, else the oldest repair.
    pub(super) fn first_queued(&self) -> Option<(u64, Uuid)> {
        self.queues
            .iter()
            .find_map(|q| q.first_key_value().map(|(s, id)| (*s, *id)))
    }

    /// Up to `n` jobs in enqueue order after `from` (before it, newest first, if asked).
    pub(super) fn jobs_after(
        &self,
        from: Bound<u64>,
        newest_first: bool,
        n: usize,
    ) -> Vec<(u64, Uuid)> {
        let pair = |(s, id): (&u64, &Uuid)| (*s, *id);
        if newest_first {
            let range = self.order.range((Bound::Unbounded, from));
            range.rev().take(n).map(pair).collect()
        } else {
            let range = self.order.range((from, Bound::Unbounded));
            range.take(n).map(pair).collect()
        }
    }

    /// Makes `staged` part of the index (its transaction committed).
    pub(super) fn apply(&mut self, staged: Staged) {
        apply(&mut self.order, staged.order);
        for (queue, changes) in self.queues.iter_mut().zip(staged.queues) {
            apply(queue, changes);
        }
        apply(&mut self.addrs, staged.addrs);
        apply(&mut self.keys, staged.keys);
    }
}

/// Puts `changes` into `map`.
fn apply<K: Ord, V>(map: &mut BTreeMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

/// `key` as `staged` says it now is, else as `committed` has it.
fn seen<Q, K, V>(staged: &BTreeMap<K, Option<V>>, committed: &BTreeMap<K, V>, key: &Q) -> Option<V>
where
    Q: Ord + ?Sized,
    K: Borrow<Q> + Ord,
    V: Clone,
{
    match staged.get(key) {
        Some(v) => v.clone(),
        None => committed.get(key).cloned(),
    }
}

/// The index as one transaction sees it: the committed index under its changes so far.
pub(in crate::queue) struct View<'t> {
    pub(super) index: &'t Index,
    pub(super) staged: &'t RefCell<Staged>,
}

impl View<'_> {
    /// Adds new `job` to the enqueue order, and the idempotency key that made it.
    pub(super) fn add_job(&self, job: &Job) {
        let mut staged = self.staged.borrow_mut();
        staged.order.insert(job.seq, Some(job.id));
        if let Some((key, record)) = key_of(job) {
            staged.keys.insert(key.to_string(), Some(record));
        }
    }

    /// Takes `job` out of the enqueue order, and its idempotency key if the key names it.
    pub(super) fn remove_job(&self, job: &Job) {
        let key = key_of(job).filter(|(k, _)| self.key(k).is_some_and(|n| n.job == job.id));
        let mut staged = self.staged.borrow_mut();
        staged.order.insert(job.seq, None);
        if let Some((key, _)) = key {
            staged.keys.insert(key.to_string(), None);
        }
    }

    /// Queues `job` for the worker.
    pub(super) fn push(&self, job: &Job) {
        let queue = &mut self.staged.borrow_mut().queues[queue_of(job.origin)];
        queue.insert(job.seq, Some(job.id));
    }

    /// Takes `job` out of the worker's queue.
    pub(super) fn take(&self, job: &Job) {
        let queue = &mut self.staged.borrow_mut().queues[queue_of(job.origin)];
        queue.insert(job.seq, None);
    }

    /// How many jobs are queued for the worker.
    pub(super) fn queued(&self) -> u64 {
        let staged = self.staged.borrow();
        let committed = &self.index.queues;
        let change: i64 = (staged.queues.iter().zip(committed))
            .flat_map(|(changes, queue)| {
                changes.iter().map(move |(seq, v)| {
                    i64::from(v.is_some()) - i64::from(queue.contains_key(seq))
                })
            })
            .sum();
        (self.index.queued() as i64 + change).max(0) as u64
    }

    /// Makes `rec` the holder of its address.
    pub(super) fn hold(&self, rec: &ContainerRecord) {
        let addrs = &mut self.staged.borrow_mut().addrs;
        addrs.insert(addr_of(rec), Some(rec.id));
    }

    /// Frees the address `rec` held.
    pub(super) fn free(&self, rec: &ContainerRecord) {
        self.staged.borrow_mut().addrs.insert(addr_of(rec), None);
    }

    /// The container holding `addr`, if any.
    pub(super) fn holder(&self, addr: AddrKey) -> Option<ContainerId> {
        seen(&self.staged.borrow().addrs, &self.index.addrs, &addr)
    }

    /// What idempotency key `key` names, if anything.
    pub(super) fn key(&self, key: &str) -> Option<KeyRecord> {
        seen(&self.staged.borrow().keys, &self.index.keys, key)
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
