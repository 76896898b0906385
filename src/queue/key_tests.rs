//! Idempotency keys: a retry finds the job its key made, racing retries make one job, another
//! request with the key is refused, and the key lives as long as its job.

use std::sync::Arc;

use super::test_support::{key, open, open_with, spec, TempDir};
use super::{JobStore, QueueError, StoreOptions};

#[tokio::test]
async fn a_retry_with_the_key_answers_the_first_job_and_another_request_is_refused() {
    let dir = TempDir::new("keys-retry");
    let store = open(&dir);
    let first = store
        .enqueue_create_keyed(spec(5, 2, 5), key("k1", "create 5"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.job.idempotency_key.as_deref(), Some("k1"));
    let again = store
        .enqueue_create_keyed(spec(5, 2, 5), key("k1", "create 5"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(store.queued_count().unwrap(), 1, "one job");
    let other = store
        .enqueue_create_keyed(spec(6, 2, 6), key("k1", "create 6"))
        .await
        .unwrap_err();
    assert_eq!(
        other,
        QueueError::KeyReused {
            key: "k1".into(),
            job: first.job.id
        }
    );
    // Without a key, the same request is a new request: here a conflict with the first.
    assert!(matches!(
        store.enqueue_create(spec(5, 2, 5)).await,
        Err(QueueError::Conflict(_))
    ));
}

#[tokio::test]
async fn twenty_racing_retries_of_one_key_make_one_job() {
    let dir = TempDir::new("keys-race");
    let store = open(&dir);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, barrier): (JobStore, _) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .enqueue_create_keyed(spec(7, 2, 7), key("race", "create 7"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let first = answers.iter().find(|a| !a.replayed).expect("one made it");
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert!(answers.iter().all(|a| a.job.id == first.job.id));
    assert_eq!(store.queued_count().unwrap(), 1);
}

#[tokio::test]
async fn a_key_survives_a_reopen_and_goes_with_its_job() {
    let dir = TempDir::new("keys-life");
    let opts = StoreOptions {
        keep_finished: 0,
        ..StoreOptions::default()
    };
    let store = open_with(&dir, opts.clone());
    let made = store
        .enqueue_create_keyed(spec(8, 2, 8), key("life", "create 8"))
        .await
        .unwrap();
    drop(store);
    let store = open_with(&dir, opts);
    let again = store
        .enqueue_create_keyed(spec(8, 2, 8), key("life", "create 8"))
        .await
        .unwrap();
    assert!(again.replayed && again.job.id == made.job.id);
    // The job ends and is pruned: its key goes with it and may be used anew.
    store.start(made.job.id).await.unwrap();
    store.finish(made.job.id, Err("no".into())).await.unwrap();
    assert_eq!(store.prune().unwrap(), 1);
    let fresh = store
        .enqueue_create_keyed(spec(9, 2, 9), key("life", "create 9"))
        .await
        .unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.job.id, made.job.id);
}
