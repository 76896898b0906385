//! Builds a job store through the library (`creepy_meow::queue::JobStore`), far faster than
//! through the daemon: no LXC, and many writes share each group-committed flush.

use std::path::Path;
use std::time::Instant;

use creepy_meow::model::{ContainerId, VlanId};
use creepy_meow::queue::{JobStore, StoreOptions};
use creepy_meow::spec::CreateSpec;
use futures::future::join_all;
use uuid::Uuid;

/// Writes in flight at once while filling.
const IN_FLIGHT: usize = 256;

/// What [`fill`] made.
pub struct Filled {
    /// IDs of the finished jobs, oldest first.
    pub finished_jobs: Vec<Uuid>,
    /// How long it took.
    pub took: std::time::Duration,
}

/// The create of container `id`, on VLAN 2, 3 or 4 by `id`, with [`super::addr_of`].
pub fn spec(id: u32) -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(u64::from(id)).expect("container id"),
        vlan: VlanId::new(u64::from(2 + id % 3)).expect("vlan"),
        ip: super::addr_of(id).parse().expect("address"),
        gateway: None,
        template: None,
    }
}

/// Fills a new store in `dir` with creates of containers `1..=succeeded` that succeeded (their
/// records stay, `active`), then `failed` creates that failed (records released), then `queued`
/// creates left waiting. The store is closed (and its directory unlocked) on return.
pub async fn fill(dir: &Path, succeeded: u32, failed: u32, queued: u32) -> Filled {
    let started = Instant::now();
    let opts = StoreOptions {
        max_queued: (queued as usize).max(1) + IN_FLIGHT,
        keep_finished: usize::MAX,
        ..StoreOptions::default()
    };
    let store = JobStore::open(dir, opts).expect("open the store");
    let ids: Vec<u32> = (1..=succeeded + failed + queued).collect();
    let mut finished_jobs = Vec::new();
    for chunk in ids.chunks(IN_FLIGHT) {
        let done = join_all(chunk.iter().map(|&id| {
            let store = store.clone();
            async move {
                let job = store.enqueue_create(spec(id)).await.expect("enqueue");
                if id > succeeded + failed {
                    return None;
                }
                store.start(job.id).await.expect("start");
                let result = if id <= succeeded {
                    Ok(())
                } else {
                    Err("bench: a failed create".to_string())
                };
                store.finish(job.id, result).await.expect("finish");
                Some(job.id)
            }
        }))
        .await;
        finished_jobs.extend(done.into_iter().flatten());
    }
    drop(store);
    Filled {
        finished_jobs,
        took: started.elapsed(),
    }
}
