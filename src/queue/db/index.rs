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
//! commit thread's transaction (see PERFORMANCE.md, Limits).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Bound;

use uuid::Uuid;

use crate::model::{ContainerId, VlanId};
use crate::queue::job::{KeyRecord, Origin};

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

/// The committed indexes.
#[derive(Debug, Default)]
pub(in crate::queue) struct Index {
    /// Sequence number → job ID, every stored job.
    order: BTreeMap<u64, Uuid>,
    /// Sequence number → job ID, queued jobs the worker may take, one map per origin.
    queues: [BTreeMap<u64, Uuid>; QUEUES],
    /// Address → the container whose record holds it.
    addrs: HashMap<AddrKey, ContainerId>,
    /// Idempotency key → the job it made, and its request's digest.
    keys: HashMap<String, KeyRecord>,
}

/// One transaction's changes to the index, not yet committed: a key mapped to `None` is
/// removed.
#[derive(Debug, Default)]
pub(in crate::queue) struct Staged {
    order: BTreeMap<u64, Option<Uuid>>,
    queues: [BTreeMap<u64, Option<Uuid>>; QUEUES],
    addrs: HashMap<AddrKey, Option<ContainerId>>,
    keys: HashMap<String, Option<KeyRecord>>,
    /// How many jobs this transaction queued, less those it took out.
    queued: i64,
}

/// Builds an [`Index`] from the stored jobs and records, one at a time.
#[derive(Debug, Default)]
pub(super) struct IndexBuilder {
    index: Index,
}

/// Two records claim one address: the store is damaged.
#[derive(Debug)]
pub(super) struct AddressTwice {
    pub(super) addr: AddrKey,
    pub(super) holders: [ContainerId; 2],
}

impl IndexBuilder {
    /// Adds stored job `id`; `queued` when the worker may take it (queued and not gated).
    pub(super) fn job(&mut self, id: Uuid, seq: u64, queued: Option<Origin>) {
        self.index.order.insert(seq, id);
        if let Some(origin) = queued {
            self.index.queues[queue_of(origin)].insert(seq, id);
        }
    }

    /// Adds idempotency key `key`, which made `record.job`.
    pub(super) fn key(&mut self, key: String, record: KeyRecord) {
        self.index.keys.insert(key, record);
    }

    /// Adds the record of container `id`, which holds `addr`.
    pub(super) fn record(&mut self, id: ContainerId, addr: AddrKey) -> Result<(), AddressTwice> {
        match self.index.addrs.insert(addr, id) {
            Some(other) if other != id => Err(AddressTwice {
                addr,
                holders: [other, id],
            }),
            _ => Ok(()),
        }
    }

    /// The index.
    pub(super) fn build(self) -> Index {
        self.index
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
fn apply<M, K, V>(map: &mut M, changes: impl IntoIterator<Item = (K, Option<V>)>)
where
    M: MapOps<K, V>,
{
    for (k, v) in changes {
        match v {
            Some(v) => map.put(k, v),
            None => map.take(&k),
        }
    }
}

/// What [`apply`] needs of a map.
trait MapOps<K, V> {
    fn put(&mut self, k: K, v: V);
    fn take(&mut self, k: &K);
}

impl<K: Ord, V> MapOps<K, V> for BTreeMap<K, V> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
    fn take(&mut self, k: &K) {
        self.remove(k);
    }
}

impl<K: std::hash::Hash + Eq, V> MapOps<K, V> for HashMap<K, V> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
    fn take(&mut self, k: &K) {
        self.remove(k);
    }
}

/// The index as one transaction sees it: the committed index under its changes so far.
pub(in crate::queue) struct View<'t> {
    pub(super) index: &'t Index,
    pub(super) staged: &'t RefCell<Staged>,
}

impl View<'_> {
    /// Adds job `id` at `seq` to the enqueue order.
    pub(super) fn add_job(&self, seq: u64, id: Uuid) {
        self.staged.borrow_mut().order.insert(seq, Some(id));
    }

    /// Takes the job at `seq` out of the enqueue order.
    pub(super) fn remove_job(&self, seq: u64) {
        self.staged.borrow_mut().order.insert(seq, None);
    }

    /// Queues job `id` at `seq` for the worker.
    pub(super) fn push(&self, origin: Origin, seq: u64, id: Uuid) {
        let q = queue_of(origin);
        let was = self.in_queue(q, seq);
        let mut staged = self.staged.borrow_mut();
        staged.queues[q].insert(seq, Some(id));
        if !was {
            staged.queued += 1;
        }
    }

    /// Takes the job at `seq` out of its queue; returns whether it was there.
    pub(super) fn take(&self, origin: Origin, seq: u64) -> bool {
        let q = queue_of(origin);
        if !self.in_queue(q, seq) {
            return false;
        }
        let mut staged = self.staged.borrow_mut();
        staged.queues[q].insert(seq, None);
        staged.queued -= 1;
        true
    }

    fn in_queue(&self, q: usize, seq: u64) -> bool {
        match self.staged.borrow().queues[q].get(&seq) {
            Some(v) => v.is_some(),
            None => self.index.queues[q].contains_key(&seq),
        }
    }

    /// How many jobs are queued for the worker.
    pub(super) fn queued(&self) -> u64 {
        let n = self.index.queued() as i64 + self.staged.borrow().queued;
        n.max(0) as u64
    }

    /// Makes container `id` the holder of `addr`.
    pub(super) fn hold(&self, addr: AddrKey, id: ContainerId) {
        self.staged.borrow_mut().addrs.insert(addr, Some(id));
    }

    /// Frees `addr`.
    pub(super) fn free(&self, addr: AddrKey) {
        self.staged.borrow_mut().addrs.insert(addr, None);
    }

    /// The container holding `addr`, if any.
    pub(super) fn holder(&self, addr: AddrKey) -> Option<ContainerId> {
        match self.staged.borrow().addrs.get(&addr) {
            Some(v) => *v,
            None => self.index.addrs.get(&addr).copied(),
        }
    }

    /// Records that idempotency key `key` made `record.job`.
    pub(super) fn put_key(&self, key: &str, record: KeyRecord) {
        self.staged
            .borrow_mut()
            .keys
            .insert(key.to_string(), Some(record));
    }

    /// Forgets idempotency key `key`.
    pub(super) fn remove_key(&self, key: &str) {
        self.staged.borrow_mut().keys.insert(key.to_string(), None);
    }

    /// What idempotency key `key` names, if anything.
    pub(super) fn key(&self, key: &str) -> Option<KeyRecord> {
        match self.staged.borrow().keys.get(key) {
            Some(v) => v.clone(),
            None => self.index.keys.get(key).cloned(),
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
