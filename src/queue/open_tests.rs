//! Opening tests: the directory lock, and damaged databases refused with their names.

use super::test_support::{open, raw_sled, refused_as_corrupt, spec, TempDir};
use super::{JobStore, QueueError, StoreOptions};

#[test]
fn a_second_open_of_the_directory_is_refused() {
    let dir = TempDir::new("inuse");
    let store = open(&dir);
    let err = JobStore::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    let QueueError::InUse(msg) = err else {
        panic!("expected InUse, got {err:?}")
    };
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(store);
    // Once closed, it opens again.
    drop(open(&dir));
}

#[test]
fn a_corrupt_record_is_named_not_reset() {
    let dir = TempDir::new("corrupt");
    drop(open(&dir));
    {
        let db = raw_sled(&dir);
        db.open_tree("jobs")
            .unwrap()
            .insert([7u8; 16], b"not json".as_ref())
            .unwrap();
        db.flush().unwrap();
    }
    let msg = refused_as_corrupt(&dir);
    assert!(
        msg.contains("jobs/07070707-0707-0707-0707-070707070707"),
        "{msg}"
    );
    // Still there: nothing was reset.
    let db = raw_sled(&dir);
    assert!(db
        .open_tree("jobs")
        .unwrap()
        .get([7u8; 16])
        .unwrap()
        .is_some());
}

#[test]
fn an_unreadable_database_is_an_error_naming_the_directory() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.path().join("conf"), b"garbage that is no sled config").unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    let err = JobStore::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, QueueError::Corrupt(_) | QueueError::Storage(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("db")).unwrap(),
        vec![0xAB; 4096]
    );
}

#[tokio::test]
async fn a_database_sled_recovers_empty_is_refused() {
    let dir = TempDir::new("torn");
    {
        let store = open(&dir);
        store.enqueue_create(spec(5, 2, 5)).await.unwrap();
    }
    // Damage the log past its first quarter: sled takes the bad checksum for a torn write
    // and recovers an empty database without a word.
    let db = dir.path().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let from = bytes.len() / 4;
    bytes[from..].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&db, &bytes).unwrap();
    let msg = refused_as_corrupt(&dir);
    assert!(msg.contains("format marker"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    // sled's recovery rewrites the damaged tail in place, so the bytes cannot be kept; what
    // matters is that the store never comes up with an empty ledger, on any later start.
    let again = JobStore::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(matches!(again, QueueError::Corrupt(_)), "{again:?}");
}

#[tokio::test]
async fn a_snapshot_sled_never_finished_is_removed_not_taken_for_damage() {
    let dir = TempDir::new("unfinished-snapshot");
    let store = open(&dir);
    let job = store.enqueue_create(spec(1, 2, 1)).await.unwrap();
    drop(store);
    // What a snapshot write that met a full disk leaves: sled would read it as the newest.
    let unfinished = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"").unwrap();
    let store = open(&dir);
    assert_eq!(store.get(job.id).unwrap().map(|j| j.id), Some(job.id));
    assert!(!unfinished.exists());
}
