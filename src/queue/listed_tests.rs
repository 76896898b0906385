//! The cached container list follows every write to the records.

use super::test_support::{open, spec, TempDir};
use super::JobStore;
use crate::spec::{StepEvent, StepName};

fn listed(store: &JobStore) -> Vec<u32> {
    store.listed().unwrap().iter().map(|id| id.get()).collect()
}

#[tokio::test]
async fn the_list_follows_creates_failures_and_destroys() {
    let dir = TempDir::new("listed");
    let store = open(&dir);
    assert!(listed(&store).is_empty());
    assert!(store.cached_listed().is_some(), "a read fills the cache");

    // Queued: reserved, but not listed (it does not exist yet).
    let a = store.enqueue_create(spec(7, 2, 7)).await.unwrap();
    let b = store.enqueue_create(spec(3, 2, 3)).await.unwrap();
    assert!(listed(&store).is_empty());

    // Succeeded: listed. The write that made it so invalidated the cache.
    store.start(a.id).await.unwrap();
    store.finish(a.id, Ok(())).await.unwrap();
    assert!(
        store.cached_listed().is_none(),
        "a finished create invalidates the list"
    );
    assert_eq!(listed(&store), [7]);

    // A job write that does not touch the records keeps the cache.
    store.start(b.id).await.unwrap();
    store
        .record_step(b.id, StepName::CreateContainer, StepEvent::Started)
        .await
        .unwrap();
    assert_eq!(store.cached_listed().as_deref().map(<[_]>::len), Some(1));

    // Failed: released, never listed; succeeded ones stay, in ID order.
    store.finish(b.id, Err("boom".into())).await.unwrap();
    let c = store.enqueue_create(spec(2, 3, 2)).await.unwrap();
    store.start(c.id).await.unwrap();
    store.finish(c.id, Ok(())).await.unwrap();
    assert_eq!(listed(&store), [2, 7]);

    // Destroying: still listed until the destroy succeeds.
    let d = store
        .enqueue_destroy(c.container_id.unwrap())
        .await
        .unwrap();
    assert_eq!(listed(&store), [2, 7]);
    store.start(d.id).await.unwrap();
    store.finish(d.id, Ok(())).await.unwrap();
    assert_eq!(listed(&store), [7]);
}
