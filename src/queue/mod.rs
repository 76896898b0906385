//! The durable job queue: jobs and their steps, the reservation ledger of container IDs and
//! addresses, stored in sled and made durable by group commit before anything is acknowledged.
//!
//! - [`job`]: the types and the one function that decides state transitions;
//! - [`store`]: the sled store and its transactions;
//! - [`flusher`]: one thread that serves every waiting flush with one fsync.

mod flusher;
pub mod job;
mod store;

pub use job::{
    ContainerRecord, ContainerRecordState, Job, JobKind, JobRequest, JobState, StepRecord,
    StepState,
};
pub use store::{JobStore, StoreOptions};

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The ID or address is taken, or another job holds the container.
    #[error("{0}")]
    Conflict(String),
    /// No such job or container.
    #[error("{0}")]
    NotFound(String),
    /// Too many jobs waiting.
    #[error("the queue is full ({max} jobs waiting)")]
    QueueFull {
        /// The bound.
        max: usize,
    },
    /// The job already started.
    #[error("the job is {state}; only a queued job can be cancelled")]
    NotCancellable {
        /// Its state.
        state: JobState,
    },
    /// A transition the lifecycle does not allow.
    #[error("a {from} job cannot become {to}")]
    BadTransition {
        /// From.
        from: JobState,
        /// To.
        to: JobState,
    },
    /// sled failed.
    #[error("job store: {0}")]
    Storage(String),
    /// Another process holds the data directory.
    #[error("{0}")]
    InUse(String),
    /// A record cannot be read.
    #[error("job store is corrupt: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests;
