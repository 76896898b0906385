//! Opening the store: lock the data directory, open the database (`db/open.rs`), start the
//! commit thread.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::committer::{Committer, LogSync};
use super::db::Trees;
use super::listed::ListCache;
use super::lock::DirLock;
use super::store::{Inner, JobStore, StoreOptions};
use super::QueueError;

impl JobStore {
    /// Opens (or creates) the store in `dir`, locking the directory for this store's life.
    ///
    /// # Errors
    /// [`QueueError::InUse`] when another store holds `dir`; [`QueueError::Corrupt`] when sled
    /// or a record does not read back, or the database came back without its format marker
    /// (nothing is reset); [`QueueError::Storage`] when the directory cannot be created or
    /// opened.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Self, QueueError> {
        Self::open_syncing(dir, opts, |log| Box::new(log))
    }

    /// [`Self::open`], with sled's log synced through what `sync` makes of the open file.
    pub(super) fn open_syncing(
        dir: &Path,
        opts: StoreOptions,
        sync: impl FnOnce(File) -> Box<dyn LogSync>,
    ) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            QueueError::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = DirLock::acquire(dir)?;
        let (trees, log) = Trees::open(dir)?;
        let committer = Committer::spawn(trees.clone(), sync(log))?;
        Ok(Self {
            inner: Arc::new(Inner {
                committer,
                trees,
                opts,
                listed: ListCache::default(),
                _lock: lock,
            }),
        })
    }
}
