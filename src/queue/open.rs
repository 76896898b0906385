//! Opening the store: lock the data directory, open the database (`db/open.rs`), start the
//! commit thread.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::committer::{Committer, LogSync};
use super::current::Current;
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
    /// (nothing is reset); [`QueueError::ReadOnly`] when the directory cannot be written (a
    /// read-only mount, no permission); [`QueueError::Storage`] when it cannot be created or
    /// opened for another reason.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Self, QueueError> {
        #[cfg(not(feature = "test-util"))]
        return Self::open_syncing(dir, opts, |log| Box::new(log));
        #[cfg(feature = "test-util")]
        {
            let dir_owned = dir.to_owned();
            Self::open_syncing(dir, opts, move |log| {
                Box::new(FailWhenTold {
                    log,
                    dir: dir_owned.clone(),
                })
            })
        }
    }

    /// [`Self::open`], with sled's log synced through what `sync` makes of the open file.
    pub(super) fn open_syncing(
        dir: &Path,
        opts: StoreOptions,
        sync: impl Fn(File) -> Box<dyn LogSync> + Send + 'static,
    ) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            super::lock::dir_error(
                format!("cannot create data directory {}", dir.display()),
                &e,
            )
        })?;
        let lock = DirLock::acquire(dir)?;
        let (trees, log) = Trees::open(dir, None)?;
        let current = Arc::new(Current::new(trees));
        let committer =
            Committer::spawn(Arc::clone(&current), dir.to_owned(), log, Box::new(sync))?;
        Ok(Self {
            inner: Arc::new(Inner {
                committer,
                current,
                opts,
                listed: ListCache::default(),
                _lock: lock,
            }),
        })
    }
}

/// The API tests' full disk (`testhook::sync_fails`): the log's sync fails with `ENOSPC` while
/// the test says so. Only in builds with `test-util`.
#[cfg(feature = "test-util")]
struct FailWhenTold {
    /// sled's log.
    log: File,
    /// The data directory, where the test's file appears.
    dir: std::path::PathBuf,
}

#[cfg(feature = "test-util")]
impl LogSync for FailWhenTold {
    fn sync(&mut self) -> std::io::Result<()> {
        if crate::testhook::sync_fails(&self.dir) {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        }
        self.log.sync_data()
    }
}
