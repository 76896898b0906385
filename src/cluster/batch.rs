//! Group commit for reservations: the creates that wait at the same moment send their first
//! claim transactions to etcd as one request of nested transactions (one raft entry, one WAL
//! sync, one round trip), as the job store's commit thread does for the local enqueues. Each
//! stays atomic on its own; none can write another's keys (the in-flight set keeps two creates
//! of one key on this server apart). One batch is in flight at a time: the creates arriving
//! meanwhile make the next.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::sys::{Kv, KvError, KvResult, KvTxn};

/// The most transactions one request carries (etcd's default `--max-txn-ops` is 128; each
/// claim puts two keys).
pub const MAX_BATCH: usize = 32;

/// A claim waiting for its batch.
type Waiting = (KvTxn, oneshot::Sender<KvResult<bool>>);

/// The batcher's handle; its task ends when the last handle is dropped.
pub struct Claims {
    /// Where claims wait.
    tx: mpsc::UnboundedSender<Waiting>,
}

impl Claims {
    /// Starts the batcher over `kv` (needs a tokio runtime).
    pub fn spawn(kv: Arc<dyn Kv>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(kv, rx));
        Self { tx }
    }

    /// Runs `txn` in the next batch; returns whether it applied.
    ///
    /// # Errors
    /// The batch's error ([`KvError::Unavailable`] when etcd does not answer).
    pub async fn run(&self, txn: KvTxn) -> KvResult<bool> {
        let (tx, rx) = oneshot::channel();
        let gone = || KvError::Unavailable("the reservation batcher stopped".into());
        self.tx.send((txn, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(kv: Arc<dyn Kv>, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (txns, replies): (Vec<KvTxn>, Vec<_>) = batch.into_iter().unzip();
        let results = match kv.txns(txns.clone()).await {
            Ok(applied) => applied.into_iter().map(Ok).collect(),
            // One refused request of several (etcd's own limits): each on its own instead.
            Err(KvError::Refused(why)) if txns.len() > 1 => {
                tracing::debug!(reason = %why, n = txns.len(), "a batch of claims was refused; sending them one by one");
                let mut each = Vec::with_capacity(txns.len());
                for t in txns {
                    each.push(kv.txn(t.when, t.then).await);
                }
                each
            }
            Err(e) => vec![Err(e); replies.len()],
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A create that gave up waiting (its 1.5 s) is not told; its keys, if made, go
            // back at the next sync.
            let _ = reply.send(result);
        }
    }
}
