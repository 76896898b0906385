//! Membership: `<prefix>/hosts/<host-id>` under a lease, kept alive.
//!
//! A host ID is the last byte of a server's bridge addresses, so two servers with one ID
//! would answer for the same addresses. The node UUID (kept in the data directory) tells a
//! restarted server, which reclaims its key at once, from another server given the same ID,
//! which is refused while the first one's lease lives.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Cluster, ClusterError, Member, Standing, KEEP_ALIVE_EVERY, LEASE_TTL_SECS};
use crate::sys::{KvCond, KvEntry, KvOp};

/// The file in the data directory that holds the node UUID.
pub const NODE_FILE: &str = "node-id";

/// This server's node UUID: read from `data_dir`, or made and stored there (written to a
/// temporary file, synced, renamed) the first time.
///
/// # Errors
/// When the file cannot be read or written, or holds no UUID.
pub fn node_id(data_dir: &Path) -> std::io::Result<Uuid> {
    let path = data_dir.join(NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds no node UUID: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            std::fs::create_dir_all(data_dir)?;
            let tmp = data_dir.join(format!("{NODE_FILE}.tmp"));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Cluster {
    /// Checks, without writing, that no other live node holds this server's host ID: run
    /// before the host is touched, so a server given another's ID changes nothing. (The
    /// registration checks again, atomically.)
    ///
    /// # Errors
    /// [`ClusterError::Refused`] when another node holds it; [`ClusterError::Unavailable`].
    pub async fn check_host_id(&self) -> Result<(), ClusterError> {
        let key = self.keys.host(self.me.host_id);
        let held = self.kv.get(&key).await?;
        self.owner_cond(key, held.as_ref()).map(drop)
    }

    /// The condition under which this server may write its host key, `held` as read: absent,
    /// or unchanged since it read its own registration there.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] when another node holds it.
    fn owner_cond(&self, key: String, held: Option<&KvEntry>) -> Result<KvCond, ClusterError> {
        match held {
            None => Ok(KvCond::Absent(key)),
            Some(e) => match Member::from_value(&e.value) {
                Some(m) if m.node == self.me.node => Ok(KvCond::Unchanged(key, e.mod_revision)),
                other => Err(ClusterError::Refused(refusal(&self.me, other.as_ref()))),
            },
        }
    }

    /// Registers this server under a new lease; returns the lease.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] when another live node holds the host ID;
    /// [`ClusterError::Unavailable`] when etcd does not answer.
    pub async fn register(&self) -> Result<i64, ClusterError> {
        let key = self.keys.host(self.me.host_id);
        for _ in 0..5 {
            let held = self.kv.get(&key).await?;
            let cond = self.owner_cond(key.clone(), held.as_ref())?;
            let lease = self.kv.grant(LEASE_TTL_SECS).await?;
            let me = Member {
                registered_at: time::OffsetDateTime::now_utc(),
                ..self.me.clone()
            };
            let put = KvOp::Put {
                key: key.clone(),
                value: me.to_value(),
                lease,
            };
            if self.kv.txn(vec![cond], vec![put]).await? {
                // The key left the old lease for the new one: the old one holds nothing now.
                if let Some(old) = held.map(|e| e.lease).filter(|&l| l != 0 && l != lease) {
                    let _ = self.kv.revoke(old).await;
                }
                return Ok(lease);
            }
            // Someone wrote the key between the read and the write: look again.
            let _ = self.kv.revoke(lease).await;
        }
        Err(ClusterError::Unavailable(format!(
            "{key} kept changing while this server registered"
        )))
    }

    /// Registers, then keeps the lease alive until `shutdown`; registers again when the lease
    /// was lost (etcd unreachable for longer than its TTL) and keeps trying while etcd is
    /// down. The lease is not revoked at shutdown: a restart reclaims the key at once, and a
    /// server that does not come back drops out when it expires.
    pub async fn run_membership(
        self: Arc<Self>,
        mut lease: Option<i64>,
        shutdown: CancellationToken,
    ) {
        loop {
            let wait = match lease {
                None => match self.register().await {
                    Ok(l) => {
                        lease = Some(l);
                        self.set_standing(Standing::Connected);
                        KEEP_ALIVE_EVERY
                    }
                    Err(e) => {
                        self.set_standing(standing_of(&e));
                        std::time::Duration::from_secs(1)
                    }
                },
                Some(l) => match self.kv.keep_alive(l).await {
                    Ok(true) => {
                        self.set_standing(Standing::Connected);
                        KEEP_ALIVE_EVERY
                    }
                    Ok(false) => {
                        tracing::warn!(lease = l, "the cluster lease expired: registering again");
                        lease = None;
                        std::time::Duration::ZERO
                    }
                    Err(e) => {
                        self.set_standing(standing_of(&ClusterError::from(e)));
                        std::time::Duration::from_secs(1)
                    }
                },
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The standing an error leaves this server in.
pub(super) fn standing_of(e: &ClusterError) -> Standing {
    match e {
        ClusterError::Refused(why) => Standing::Refused(why.clone()),
        ClusterError::Unavailable(why) | ClusterError::Held(why) => {
            Standing::Unavailable(why.clone())
        }
    }
}

/// The sentence refusing `me` because `holder` (a live member, or a value that is not one)
/// has its host ID.
fn refusal(me: &Member, holder: Option<&Member>) -> String {
    match holder {
        Some(h) => format!(
            "host ID {} is held by another live server (node {}, underlay {}, API {}, registered {}): give this server another --host-id, or stop that one and wait {LEASE_TTL_SECS} s",
            me.host_id, h.node, h.underlay, h.api_url,
            h.registered_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
        ),
        None => format!(
            "host ID {}'s key holds something that is not a member record: remove it from etcd or give this server another --host-id",
            me.host_id
        ),
    }
}
