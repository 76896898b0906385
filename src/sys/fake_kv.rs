//! An in-memory [`Kv`] with etcd's semantics where cluster mode relies on them: one revision
//! counter bumped by every write, all-or-nothing transactions, leases whose keys vanish when
//! they expire (on tokio's clock, so tests can pause and advance it), and an outage switch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::kv::{Kv, KvCond, KvEntry, KvError, KvListing, KvOp, KvResult};

#[derive(Default)]
struct State {
    keys: BTreeMap<String, KvEntry>,
    revision: i64,
    /// Lease ID → (TTL, expiry).
    leases: HashMap<i64, (Duration, Instant)>,
    next_lease: i64,
    down: bool,
    /// Every change: (revision, key), for [`Kv::wait_change`].
    log: Vec<(i64, String)>,
}

impl State {
    /// Drops the leases that have expired, with their keys.
    fn expire(&mut self, changed: &watch::Sender<i64>) {
        let now = Instant::now();
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.leases.remove(&id);
            self.drop_lease_keys(id, changed);
        }
    }

    fn drop_lease_keys(&mut self, id: i64, changed: &watch::Sender<i64>) {
        let gone: Vec<String> = self
            .keys
            .values()
            .filter(|e| e.lease == id)
            .map(|e| e.key.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        self.revision += 1;
        for key in gone {
            self.keys.remove(&key);
            self.log.push((self.revision, key));
        }
        changed.send_replace(self.revision);
    }
}

/// The fake store; clones share it.
#[derive(Clone)]
pub struct FakeKv {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<i64>>,
}

impl Default for FakeKv {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKv {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_lease: 1,
                ..State::default()
            })),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// Makes every call fail with [`KvError::Unavailable`] (`true`) or answer again.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("fake kv").down = down;
        // Wakes the waiters, which then see the outage.
        self.changed.send_modify(|_| {});
    }

    /// Every key and value, for assertions.
    pub fn dump(&self) -> BTreeMap<String, String> {
        let st = self.state.lock().expect("fake kv");
        st.keys
            .iter()
            .map(|(k, e)| (k.clone(), String::from_utf8_lossy(&e.value).into_owned()))
            .collect()
    }

    /// Runs `f` on the state once the store is up and expired leases are gone.
    fn with<T>(&self, f: impl FnOnce(&mut State, &watch::Sender<i64>) -> T) -> KvResult<T> {
        let mut st = self.state.lock().expect("fake kv");
        if st.down {
            return Err(KvError::Unavailable("the fake store is down".into()));
        }
        st.expire(&self.changed);
        Ok(f(&mut st, &self.changed))
    }
}

fn holds(st: &State, cond: &KvCond) -> bool {
    match cond {
        KvCond::Absent(k) => !st.keys.contains_key(k),
        KvCond::Unchanged(k, rev) => st.keys.get(k).is_some_and(|e| e.mod_revision == *rev),
        KvCond::Equals(k, v) => st.keys.get(k).is_some_and(|e| e.value == *v),
    }
}

#[async_trait]
impl Kv for FakeKv {
    async fn list(&self, prefix: &str) -> KvResult<KvListing> {
        self.with(|st, _| KvListing {
            entries: st
                .keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, e)| e.clone())
                .collect(),
            revision: st.revision,
        })
    }

    async fn get(&self, key: &str) -> KvResult<Option<KvEntry>> {
        self.with(|st, _| st.keys.get(key).cloned())
    }

    async fn txn(&self, when: Vec<KvCond>, then: Vec<KvOp>) -> KvResult<bool> {
        self.with(|st, changed| {
            if !when.iter().all(|c| holds(st, c)) {
                return Err(KvError::Refused("compare failed".into()));
            }
            if let Some(lease) = then.iter().find_map(|op| match op {
                KvOp::Put { lease, .. } if *lease != 0 && !st.leases.contains_key(lease) => {
                    Some(*lease)
                }
                _ => None,
            }) {
                return Err(KvError::Refused(format!("lease {lease} not found")));
            }
            st.revision += 1;
            let rev = st.revision;
            for op in then {
                match op {
                    KvOp::Put { key, value, lease } => {
                        st.log.push((rev, key.clone()));
                        st.keys.insert(
                            key.clone(),
                            KvEntry {
                                key,
                                value,
                                mod_revision: rev,
                                lease,
                            },
                        );
                    }
                    KvOp::Delete(k) => {
                        st.keys.remove(&k);
                        st.log.push((rev, k));
                    }
                }
            }
            changed.send_replace(rev);
            Ok(())
        })
        .map(|applied| applied.is_ok())
    }

    async fn grant(&self, ttl_secs: i64) -> KvResult<i64> {
        self.with(|st, _| {
            let id = st.next_lease;
            st.next_lease += 1;
            let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
            st.leases.insert(id, (ttl, Instant::now() + ttl));
            id
        })
    }

    async fn keep_alive(&self, lease: i64) -> KvResult<bool> {
        self.with(|st, _| match st.leases.get_mut(&lease) {
            Some((ttl, until)) => {
                *until = Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke(&self, lease: i64) -> KvResult<()> {
        self.with(|st, changed| {
            if st.leases.remove(&lease).is_some() {
                st.drop_lease_keys(lease, changed);
            }
        })
    }

    async fn wait_change(&self, prefix: &str, after: i64) -> KvResult<()> {
        let mut rx = self.changed.subscribe();
        loop {
            let newer = self.with(|st, _| {
                st.log
                    .iter()
                    .any(|(rev, k)| *rev > after && k.starts_with(prefix))
            })?;
            if newer {
                return Ok(());
            }
            // A lease may expire with no call to notice it: look again every 100 ms.
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }
}
