//! The cluster's key-value store, as the daemon uses it: ranges by prefix, all-or-nothing
//! transactions with compare conditions, leases, and waiting for a change. [`Kv`] is the
//! trait; [`super::etcd`] is the real one over etcd's v3 gRPC API, and a fake in memory
//! (`fake_kv.rs`) serves the unit tests.
//!
//! Only what cluster mode needs is here: a reservation is a transaction "create these keys if
//! none exists"; a release is "delete this key if it is still the one I read"; membership is a
//! key under a lease kept alive.

use async_trait::async_trait;

/// One key as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// The store revision of its last change: a condition can require it unchanged.
    pub mod_revision: i64,
    /// The lease it is attached to; 0 for none.
    pub lease: i64,
}

/// Every key under a prefix, and the store revision the read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvListing {
    /// The keys, sorted.
    pub entries: Vec<KvEntry>,
    /// The store's revision at the read: changes after it are newer than the listing.
    pub revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCond {
    /// The key does not exist.
    Absent(String),
    /// The key exists, unchanged since the revision given.
    Unchanged(String, i64),
    /// The key exists and holds exactly this value.
    Equals(String, Vec<u8>),
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`, attached to `lease` (0: none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease; 0 for none.
        lease: i64,
    },
    /// Delete the key (nothing if absent).
    Delete(String),
}

/// A transaction: its writes apply if every condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvTxn {
    /// The conditions.
    pub when: Vec<KvCond>,
    /// The writes.
    pub then: Vec<KvOp>,
}

/// Why the store did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// It cannot be reached, or did not answer in time: try again later.
    #[error("the cluster store is unavailable: {0}")]
    Unavailable(String),
    /// It answered with an error.
    #[error("the cluster store refused: {0}")]
    Refused(String),
}

/// The result of a call to the store.
pub type KvResult<T> = Result<T, KvError>;

/// The cluster's key-value store. Every call either answers within the client's time limit or
/// fails with [`KvError::Unavailable`]: none hangs.
#[async_trait]
pub trait Kv: Send + Sync {
    /// Every key starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> KvResult<KvListing>;

    /// One key.
    async fn get(&self, key: &str) -> KvResult<Option<KvEntry>>;

    /// Applies every op of `then` if every condition of `when` holds, else none; returns
    /// whether it applied them. Atomic: no other write comes between check and writes.
    async fn txn(&self, when: Vec<KvCond>, then: Vec<KvOp>) -> KvResult<bool>;

    /// Runs several independent transactions in one request, each atomic on its own (no two
    /// may write one key); returns whether each applied, in order. The default runs them one
    /// after another.
    async fn txns(&self, txns: Vec<KvTxn>) -> KvResult<Vec<bool>> {
        let mut out = Vec::with_capacity(txns.len());
        for t in txns {
            out.push(self.txn(t.when, t.then).await?);
        }
        Ok(out)
    }

    /// A new lease that expires `ttl_secs` seconds after its last keep-alive; returns its ID.
    async fn grant(&self, ttl_secs: i64) -> KvResult<i64>;

    /// Refreshes `lease`; returns false when it has already expired (its keys are gone).
    async fn keep_alive(&self, lease: i64) -> KvResult<bool>;

    /// Ends `lease` now, deleting its keys (nothing if it has expired).
    async fn revoke(&self, lease: i64) -> KvResult<()>;

    /// Returns once a key under `prefix` changes after revision `after` (at once if one has),
    /// or with [`KvError::Unavailable`] when the store goes away meanwhile.
    async fn wait_change(&self, prefix: &str, after: i64) -> KvResult<()>;
}
