//! The index derived from the stored jobs and records (`db/index.rs`): rebuilt whole at every
//! open, a format-1 store's trees and key entries replaced by it, a transaction that aborts
//! leaving it as it was.

use super::test_support::{cid, created, key, open, raw_sled, refused_as_corrupt, spec, TempDir};
use super::{JobState, JobStore, Lifecycle, Origin, QueueError};

/// The queue in the order the worker takes it (each job cancelled once seen, so the next
/// one shows).
async fn queue(store: &JobStore) -> Vec<uuid::Uuid> {
    let mut taken = Vec::new();
    while let Some(job) = store.next_queued().unwrap() {
        taken.push(job.id);
        store.cancel(job.id).await.unwrap();
    }
    taken
}

#[tokio::test]
async fn a_reopen_rebuilds_the_queues_the_order_and_the_address_holders() {
    let dir = TempDir::new("index-reopen");
    let store = open(&dir);
    created(&store, 1, 2, 1).await;
    let repair = store
        .enqueue_lifecycle(cid(1), Lifecycle::Repair, Origin::Reconcile)
        .await
        .unwrap();
    let running = store.enqueue_create(spec(2, 2, 2)).await.unwrap();
    store.start(running.id).await.unwrap();
    let gated = store
        .enqueue_create_gated(spec(3, 2, 3), None)
        .await
        .unwrap()
        .job;
    let queued = store.enqueue_create(spec(4, 2, 4)).await.unwrap();
    let listed = |s: &JobStore| -> Vec<_> {
        s.list(None, 100)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    let before = listed(&store);
    drop(store);

    let store = open(&dir);
    assert_eq!(listed(&store), before, "every job, in the same order");
    assert_eq!(
        store.queued_count().unwrap(),
        2,
        "neither running nor gated"
    );
    // Every address is still held, by its record.
    for (id, host) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
        let e = store.enqueue_create(spec(10 + id, 2, host)).await;
        assert!(
            matches!(&e, Err(QueueError::Conflict(c)) if c.to_string().contains(&format!("by container {id}"))),
            "{e:?}"
        );
    }
    // The operator's create first, though queued after the repair.
    assert_eq!(queue(&store).await, [queued.id, repair.id]);
    assert!(store.is_gated(gated.id).unwrap());
    assert_eq!(
        store.get(running.id).unwrap().map(|j| j.state),
        Some(JobState::Running)
    );
}

#[tokio::test]
async fn a_format_1_store_is_upgraded_in_place_and_keeps_its_queue_and_keys() {
    let dir = TempDir::new("index-format-1");
    let store = open(&dir);
    let started = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    store.start(started.id).await.unwrap();
    let keyed = store
        .enqueue_create_keyed(spec(2, 2, 2), key("k-2", "create 2"))
        .await
        .unwrap()
        .job;
    let digest = keyed
        .idempotency_digest
        .expect("a keyed job carries its digest");
    drop(store);
    // Format 1: the derived trees and a counter beside the jobs and records, and the key's
    // digest in a `meta` entry rather than in its job.
    {
        let db = raw_sled(&dir);
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format", &1u64.to_be_bytes()).unwrap();
        meta.insert("queued", &7u64.to_be_bytes()).unwrap();
        for name in ["pending", "repairs", "order", "addrs"] {
            db.open_tree(name)
                .unwrap()
                .insert([1u8], [2u8].as_slice())
                .unwrap();
        }
        let entry = [keyed.id.as_bytes().as_slice(), &digest].concat();
        meta.insert("idem/k-2", entry).unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        let mut value: serde_json::Value =
            serde_json::from_slice(&jobs.get(keyed.id.as_bytes()).unwrap().unwrap()).unwrap();
        assert!(value
            .as_object_mut()
            .unwrap()
            .remove("idempotency_digest")
            .is_some());
        jobs.insert(keyed.id.as_bytes(), serde_json::to_vec(&value).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.queued_count().unwrap(), 1);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(keyed.id));
    let e = store.enqueue_create(spec(3, 2, 1)).await;
    assert!(matches!(e, Err(QueueError::Conflict(_))), "{e:?}");
    // The key still names its job: a retry replays it, another request is refused.
    let retry = store
        .enqueue_create_keyed(spec(2, 2, 2), key("k-2", "create 2"))
        .await
        .unwrap();
    assert!(retry.replayed && retry.job.id == keyed.id);
    assert_eq!(retry.job.idempotency_digest, Some(digest));
    let reuse = store
        .enqueue_create_keyed(spec(4, 2, 4), key("k-2", "create 4"))
        .await;
    assert!(
        matches!(reuse, Err(QueueError::KeyReused { .. })),
        "{reuse:?}"
    );
    drop(store);
    let db = raw_sled(&dir);
    let names: Vec<_> = db.tree_names().into_iter().collect();
    for gone in ["pending", "repairs", "order", "addrs"] {
        assert!(
            !names.iter().any(|n| n == gone.as_bytes()),
            "{gone} dropped"
        );
    }
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("format").unwrap().as_deref(),
        Some(2u64.to_be_bytes().as_slice())
    );
    assert_eq!(meta.get("queued").unwrap(), None);
    assert_eq!(meta.scan_prefix("idem/").count(), 0);
}

#[tokio::test]
async fn two_records_holding_one_address_stop_the_open_with_both_names() {
    let dir = TempDir::new("index-twice");
    let store = open(&dir);
    store.enqueue_create(spec(1, 2, 9)).await.unwrap();
    drop(store);
    {
        // Container 1's record again under ID 2: the same address twice.
        let db = raw_sled(&dir);
        let containers = db.open_tree("containers").unwrap();
        let rec = containers.get(1u32.to_be_bytes()).unwrap().unwrap();
        let text = String::from_utf8(rec.to_vec()).unwrap();
        let copy = text.replacen("\"id\":1,", "\"id\":2,", 1);
        assert_ne!(copy, text, "the record names its ID");
        containers
            .insert(2u32.to_be_bytes(), copy.as_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let msg = refused_as_corrupt(&dir);
    assert!(
        msg.contains("containers 1 and 2 both hold 192.168.2.9 on vlan 2"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_transaction_that_aborts_leaves_the_index_as_it_was() {
    let dir = TempDir::new("index-abort");
    let store = open(&dir);
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    let e = store.transact(|tx| {
        let job = tx.job(job.id)?;
        tx.remove_pending(&job)?;
        tx.remove_job(&job)?;
        let rec = tx.record(cid(1))?.expect("its record");
        tx.remove_record(&rec)?;
        super::db::abort::<()>(QueueError::NotFound("on purpose".into()))
    });
    assert!(matches!(e, Err(QueueError::NotFound(_))), "{e:?}");
    assert_eq!(store.queued_count().unwrap(), 1);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(job.id));
    assert_eq!(store.list(None, 10).unwrap().len(), 1);
    let again = store.enqueue_create(spec(2, 2, 1)).await;
    assert!(matches!(again, Err(QueueError::Conflict(_))), "{again:?}");
}
