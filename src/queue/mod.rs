//! The durable job queue: jobs, their steps, and the container reservation ledger, on sled.
//!
//! In layers, each importing only those below it:
//!
//! 1. `job.rs`: the stored types and the job lifecycle ([`JobState::can_become`] is the one
//!    place that says which moves are allowed); `lock.rs`: the data directory's lock;
//! 2. `db/`: the storage layer, the only code that knows sled's trees (`jobs`, `containers`,
//!    `meta`, `images`, `events`), their keys and the encoding, and the indexes derived from
//!    them in memory (the enqueue order, the worker's queues, the address holders, the
//!    idempotency keys); its
//!    transaction type `Tx` is the only way to write, so its rules (counters, the list cache,
//!    the indexes) hold;
//! 3. `committer.rs`: the commit thread (group commit, below), with `current.rs` (the open
//!    database, replaced after a storage fault, and the store's health) and `reopen.rs` (the
//!    probe and the reopen after a fault);
//! 4. [`JobStore`] (`store.rs`, `open.rs`, `listed.rs`) and its operations (`enqueue.rs`,
//!    `write.rs`, `prune.rs`). Every change is one sled transaction over the trees it
//!    touches, so a job and the reservations it holds (container ID, `(vlan, address)`) never
//!    disagree;
//! - group commit: a change is acknowledged only once it is on disk ("accepted means
//!   durable"); one commit thread answers every waiter queued while it was busy with a single
//!   flush and `fdatasync`, and runs every enqueue waiting at that moment in one
//!   transaction, so many concurrent requests share one disk sync;
//! - a lock file in the data directory keeps a second daemon out;
//! - storage faults (issue 17): once a write cannot be made durable (a full disk), sled keeps
//!   failing for the life of its handle, so the store refuses changes
//!   ([`QueueError::Unavailable`]), closes sled (dropping what it held in memory only), probes
//!   the disk until a write succeeds, then opens it again (`current.rs` holds the open
//!   instance and the health; `reopen.rs` probes and reopens);
//! - pruning drops old finished jobs, never a queued or running one, and the events older than
//!   the oldest job kept;
//! - events (`event.rs`): every job, step and container change is also written as a numbered
//!   event in its own transaction; readers see them once they are on disk.
//!
//! Reservations follow the job: a create reserves the ID and address when it is queued; they
//! become the container's when it succeeds and are released when it fails or is cancelled. A
//! destroy marks the container `destroying`; success releases it, failure or cancellation
//! gives it back as `active`.

mod committer;
mod current;
mod db;
mod enqueue;
mod event;
mod feed;
mod gate;
mod images;
mod job;
mod listed;
mod lock;
mod open;
mod prune;
mod reopen;
mod store;
mod write;

pub use enqueue::{Enqueued, IdempotencyKey};
pub use event::{Event, EventType, StoredEvent};
pub use job::{
    ContainerRecord, ContainerRecordState, DesiredState, Job, JobKind, JobRequest, JobState,
    KeyRecord, Lifecycle, Origin, StepRecord, StepState,
};
pub use store::{JobStore, StoreOptions};

/// What a request clashed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A destroy of a container that a job holds.
    #[error("container {id} is {doing} (job {job})")]
    Busy {
        /// The container.
        id: ContainerId,
        /// What the job does to it, as words.
        doing: &'static str,
        /// The job.
        job: Uuid,
    },
    /// A build of an image that has a build pending or running.
    #[error("image {template} has a build pending (job {job})")]
    BuildPending {
        /// The template.
        template: String,
        /// The job.
        job: Uuid,
    },
    /// A create of a container that has a job pending or running.
    #[error("container {id} has a job pending (job {job})")]
    JobPending {
        /// The container.
        id: ContainerId,
        /// The job.
        job: Uuid,
    },
    /// A start, stop or restart of a container that is not in service.
    #[error("container {id} is {state}: only a destroy applies to it")]
    NotInService {
        /// The container.
        id: ContainerId,
        /// Its record's state.
        state: ContainerRecordState,
    },
    /// A cancel of a create whose cluster reservation is still being made (`gate.rs`).
    #[error("job {0} is still being accepted (its cluster reservation is not made yet); cancel it once it is queued")]
    BeingAccepted(Uuid),
    /// A create of a container that exists.
    #[error("container {0} already exists")]
    Exists(ContainerId),
    /// The address is held by another container on that VLAN.
    #[error("{ip} is already used on vlan {vlan} by container {holder}")]
    AddressInUse {
        /// The address.
        ip: Ipv4Addr,
        /// Its VLAN.
        vlan: VlanId,
        /// The container holding it.
        holder: u32,
    },
    /// A step record for a job that is not running.
    #[error("job {job} is {state}, not running; step {step} was not recorded")]
    NotRunning {
        /// The job.
        job: Uuid,
        /// Its state.
        state: JobState,
        /// The step.
        step: StepName,
    },
}

/// Why the store refused or failed. Each text is a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The request clashes with a container or a job already there.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// No such job or container.
    #[error("{0}")]
    NotFound(String),
    /// Too many jobs are waiting.
    #[error("the queue is full: {max} jobs are waiting")]
    QueueFull {
        /// The limit reached.
        max: usize,
    },
    /// An idempotency key sent again with another request than the one that made its job.
    #[error("Idempotency-Key {key:?} was used for another request (job {job}); use a new key for a new request")]
    KeyReused {
        /// The key.
        key: String,
        /// The job its first request made.
        job: Uuid,
    },
    /// Only a queued job can be cancelled.
    #[error("only a queued job can be cancelled; this one is {state}")]
    NotCancellable {
        /// The job's state.
        state: JobState,
    },
    /// The lifecycle does not allow this move.
    #[error("a job cannot go from {from} to {to}")]
    BadTransition {
        /// The job's state.
        from: JobState,
        /// The state asked for.
        to: JobState,
    },
    /// sled or the file system failed.
    #[error("{0}")]
    Storage(String),
    /// The store cannot make changes durable now (a full disk, an I/O error): nothing was
    /// accepted; it accepts again by itself once a probe write succeeds (`reopen.rs`).
    #[error("{0}")]
    Unavailable(String),
    /// The data directory cannot be written at all (a read-only mount, no permission).
    #[error("{0}")]
    ReadOnly(String),
    /// Another process (or another store in this one) holds the data directory.
    #[error("{0}")]
    InUse(String),
    /// A stored record does not decode; the text names it.
    #[error("{0}")]
    Corrupt(String),
}

use std::net::Ipv4Addr;

use uuid::Uuid;

use crate::model::{ContainerId, VlanId};
use crate::spec::StepName;

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod key_tests;
#[cfg(test)]
mod listed_tests;
#[cfg(test)]
mod open_tests;
#[cfg(test)]
mod prune_tests;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod test_support;
