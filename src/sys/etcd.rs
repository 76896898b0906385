//! The real [`Kv`]: etcd's v3 gRPC API through the `etcd-client` crate.
//!
//! The client connects lazily (the channel dials when a call needs it), so a daemon starts
//! while etcd is down and its calls fail with [`KvError::Unavailable`] until etcd is back.
//! Every call carries a deadline ([`EtcdKv::connect`]'s `timeout`): a create waiting on a
//! partitioned etcd gets its `503` in bounded time instead of hanging.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};

use tonic::Code as tonic_code;

use super::kv::{Kv, KvCond, KvEntry, KvError, KvListing, KvOp, KvResult, KvTxn};

/// etcd, reached at one or more endpoints.
#[derive(Clone)]
pub struct EtcdKv {
    /// The client (cheap to clone: the channel is shared).
    client: Client,
    /// The longest a call may take.
    timeout: Duration,
}

/// Maps the client's error: transport failures, deadlines and etcd's "unavailable" mean try
/// again later; anything else is a refusal.
fn map_err(e: etcd_client::Error) -> KvError {
    use etcd_client::Error as E;
    match e {
        E::TransportError(t) => KvError::Unavailable(t.to_string()),
        E::IoError(io) => KvError::Unavailable(io.to_string()),
        E::GRpcStatus(s) => match s.code() {
            tonic_code::Unavailable
            | tonic_code::DeadlineExceeded
            | tonic_code::Cancelled
            | tonic_code::Unknown
            | tonic_code::Aborted => KvError::Unavailable(status_text(&s)),
            _ => KvError::Refused(status_text(&s)),
        },
        E::LeaseKeepAliveError(m) | E::WatchError(m) => KvError::Unavailable(m),
        other => KvError::Refused(other.to_string()),
    }
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    }
}

fn entry(kv: &etcd_client::KeyValue) -> KvEntry {
    KvEntry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

/// Our transaction as etcd's.
fn etcd_txn(when: Vec<KvCond>, then: Vec<KvOp>) -> Txn {
    let compares: Vec<Compare> = when
        .into_iter()
        .map(|c| match c {
            KvCond::Absent(k) => Compare::create_revision(k, CompareOp::Equal, 0),
            KvCond::Unchanged(k, rev) => Compare::mod_revision(k, CompareOp::Equal, rev),
            KvCond::Equals(k, v) => Compare::value(k, CompareOp::Equal, v),
        })
        .collect();
    let ops: Vec<TxnOp> = then
        .into_iter()
        .map(|op| match op {
            KvOp::Put { key, value, lease } => {
                let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                TxnOp::put(key, value, opts)
            }
            KvOp::Delete(k) => TxnOp::delete(k, None),
        })
        .collect();
    Txn::new().when(compares).and_then(ops)
}

impl EtcdKv {
    /// A client of the etcd cluster at `endpoints` (`http://host:2379`...), whose calls each
    /// take at most `timeout`. Does not wait for etcd to answer.
    ///
    /// # Errors
    /// [`KvError::Refused`] for an endpoint that is not a URL.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> KvResult<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        Ok(Self { client, timeout })
    }

    /// Runs `call` under the deadline: the client's own deadline covers a request on a
    /// channel, this one also the dial and a stream's first message.
    async fn timed<T>(&self, call: impl std::future::Future<Output = KvResult<T>>) -> KvResult<T> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(KvError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            })
    }
}

#[async_trait]
impl Kv for EtcdKv {
    async fn list(&self, prefix: &str) -> KvResult<KvListing> {
        let mut c = self.client.clone();
        self.timed(async move {
            let resp = c
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(map_err)?;
            Ok(KvListing {
                entries: resp.kvs().iter().map(entry).collect(),
                revision: resp.header().map_or(0, |h| h.revision()),
            })
        })
        .await
    }

    async fn get(&self, key: &str) -> KvResult<Option<KvEntry>> {
        let mut c = self.client.clone();
        self.timed(async move {
            let resp = c.get(key, None).await.map_err(map_err)?;
            Ok(resp.kvs().first().map(entry))
        })
        .await
    }

    async fn txn(&self, when: Vec<KvCond>, then: Vec<KvOp>) -> KvResult<bool> {
        let mut c = self.client.clone();
        self.timed(async move {
            let resp = c.txn(etcd_txn(when, then)).await.map_err(map_err)?;
            Ok(resp.succeeded())
        })
        .await
    }

    /// One request whose success branch holds each transaction nested (etcd 3.3 and later):
    /// one raft entry, one WAL sync for them all.
    async fn txns(&self, txns: Vec<KvTxn>) -> KvResult<Vec<bool>> {
        let n = txns.len();
        let nested: Vec<TxnOp> = txns
            .into_iter()
            .map(|t| TxnOp::txn(etcd_txn(t.when, t.then)))
            .collect();
        let mut c = self.client.clone();
        self.timed(async move {
            let resp = c.txn(Txn::new().and_then(nested)).await.map_err(map_err)?;
            let out: Vec<bool> = resp
                .op_responses()
                .into_iter()
                .map(|r| matches!(r, TxnOpResponse::Txn(t) if t.succeeded()))
                .collect();
            if out.len() != n {
                return Err(KvError::Refused(format!(
                    "{} answers to {n} nested transactions",
                    out.len()
                )));
            }
            Ok(out)
        })
        .await
    }

    async fn grant(&self, ttl_secs: i64) -> KvResult<i64> {
        let mut c = self.client.clone();
        self.timed(async move {
            let resp = c.lease_grant(ttl_secs, None).await.map_err(map_err)?;
            Ok(resp.id())
        })
        .await
    }

    async fn keep_alive(&self, lease: i64) -> KvResult<bool> {
        let mut c = self.client.clone();
        self.timed(async move {
            // Opening the keep-alive stream sends one keep-alive and reads its answer (a TTL
            // above 0, or the error below): that is the refresh.
            match c.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                // etcd answers an expired lease's keep-alive with a TTL of 0, which the crate
                // turns into this error (as it does a failed send): ask etcd how the lease
                // stands. Without this, a server whose lease expired while it was cut off
                // never registers again.
                Err(etcd_client::Error::LeaseKeepAliveError(why)) => {
                    let left = c.lease_time_to_live(lease, None).await.map_err(map_err)?;
                    match left.ttl() {
                        ..=0 => Ok(false),
                        _ => Err(KvError::Unavailable(why)),
                    }
                }
                Err(e) => Err(map_err(e)),
            }
        })
        .await
    }

    async fn revoke(&self, lease: i64) -> KvResult<()> {
        let mut c = self.client.clone();
        self.timed(async move {
            match c.lease_revoke(lease).await {
                Ok(_) => Ok(()),
                // An expired lease is what revoking wanted.
                Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic_code::NotFound => {
                    Ok(())
                }
                Err(e) => Err(map_err(e)),
            }
        })
        .await
    }

    async fn wait_change(&self, prefix: &str, after: i64) -> KvResult<()> {
        let mut c = self.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        // Only the dial is bounded: the wait itself lasts until something changes. A lost
        // connection ends the stream with an error, which the caller retries.
        let mut stream = self
            .timed(async { c.watch(prefix, Some(opts)).await.map_err(map_err) })
            .await?;
        loop {
            match stream.message().await.map_err(map_err)? {
                None => return Err(KvError::Unavailable("the watch ended".into())),
                Some(resp) if resp.canceled() => {
                    // Compacted past `after`: whatever happened, the caller reads anew.
                    return Ok(());
                }
                Some(resp) if !resp.events().is_empty() => return Ok(()),
                Some(_) => {}
            }
        }
    }
}
