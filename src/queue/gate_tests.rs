//! Gated creates (`gate.rs`): held back from the worker and the event stream, holding their ID
//! and address, until opened; removed whole when refused; found again after a restart.

use super::test_support::{open, record_ids, spec, TempDir};
use super::{Conflict, IdempotencyKey, QueueError};

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: k.into(),
        fingerprint: "create 5".into(),
    })
}

#[tokio::test]
async fn a_gated_create_holds_its_id_and_address_unseen_by_the_worker_until_opened() {
    let dir = TempDir::new("gate-open");
    let store = open(&dir);
    let gated = store
        .enqueue_create_gated(spec(5, 2, 5), None)
        .await
        .unwrap();
    let id = gated.job.id;
    assert!(store.next_queued().unwrap().is_none(), "the worker sees it");
    assert_eq!(store.queued_count().unwrap(), 0);
    store.flush().await.unwrap();
    let events = store.events_after(0, 10).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(Some(events[0].seq), gated.job.first_event);
    // Its ID and its address are held as for any create.
    let same_id = store.enqueue_create(spec(5, 3, 9)).await.unwrap_err();
    assert!(matches!(
        same_id,
        QueueError::Conflict(Conflict::JobPending { .. })
    ));
    let same_addr = store.enqueue_create(spec(6, 2, 5)).await.unwrap_err();
    assert!(matches!(
        same_addr,
        QueueError::Conflict(Conflict::AddressInUse { .. })
    ));
    let cancel = store.cancel(id).await.unwrap_err();
    assert_eq!(cancel, QueueError::Conflict(Conflict::BeingAccepted(id)));
    assert_eq!(store.gated().unwrap().len(), 1);

    let flushes = store.flushes();
    let opened = store.open_gate(&gated.job).await.unwrap().expect("opened");
    assert_eq!(opened.id, id);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(id));
    assert_eq!(store.queued_count().unwrap(), 1);
    assert!(store.gated().unwrap().is_empty());
    assert!(
        store.open_gate(&gated.job).await.unwrap().is_none(),
        "opened twice"
    );
    assert!(
        !store.refuse_gate(id, "test").await.unwrap(),
        "refused once open"
    );
    // The opening is a lazy write: no sync of its own, but the commit thread flushes it soon
    // even when no other write comes: a restart finds the job queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.flushes() == flushes {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    drop(store);
    let store = open(&dir);
    assert_eq!(store.next_queued().unwrap().map(|j| j.id), Some(id));
    assert!(store.gated().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_gate_leaves_nothing_and_a_restart_finds_the_gates_left() {
    let dir = TempDir::new("gate-refuse");
    let store = open(&dir);
    let gated = store
        .enqueue_create_gated(spec(5, 2, 5), key("k5"))
        .await
        .unwrap();
    let left = store
        .enqueue_create_gated(spec(7, 2, 7), None)
        .await
        .unwrap();
    drop(store);
    let store = open(&dir);
    let mut found: Vec<_> = store.gated().unwrap().iter().map(|j| j.id).collect();
    found.sort();
    let mut want = [gated.job.id, left.job.id];
    want.sort();
    assert_eq!(found, want);

    let before = store.last_event();
    assert!(store
        .refuse_gate(gated.job.id, "held by host 2")
        .await
        .unwrap());
    let ended = store.events_after(before, 10).unwrap();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let text = String::from_utf8_lossy(&ended[0].json);
    assert!(
        text.contains("cancelled") && text.contains("held by host 2"),
        "{text}"
    );
    assert!(
        !store
            .refuse_gate(gated.job.id, "held by host 2")
            .await
            .unwrap(),
        "twice"
    );
    assert_eq!(store.get(gated.job.id).unwrap(), None);
    assert_eq!(record_ids(&store), [7]);
    assert!(store.open_gate(&gated.job).await.unwrap().is_none());
    // The ID, the address and the idempotency key are free again.
    let again = store
        .enqueue_create_keyed(spec(5, 2, 5), key("k5"))
        .await
        .unwrap();
    assert!(!again.replayed);
    assert_ne!(again.job.id, gated.job.id);
    assert_eq!(store.gated().unwrap().len(), 1);
}
