//! After a storage fault: refuse changes, reopen sled, and probe until the disk takes writes
//! again (issue 17). Runs on the commit thread (`committer.rs`), the one place that syncs, so
//! no flush can run on an instance being replaced.
//!
//! Why reopen rather than exit: sled cannot recover in place (its first failed log write stays
//! its answer to every later write, see `current.rs`), but a new open is what a restart would
//! do, without losing the API, the event streams and the daemon's other state: sled recovers
//! the log up to its last complete write, exactly as after a crash, which the store already
//! survives (`db/open.rs` checks the format marker and every record). Only the one thread that
//! syncs reopens, and only once every handle of the old instance is gone (sled's own file lock
//! says so: `lock.rs`), so two instances never write one log.
//!
//! On the failure the thread closes sled at once (so nothing only in its memory is read again;
//! reads are refused meanwhile). The probe then writes and syncs [`PROBE_BYTES`] to a file of
//! its own in the data directory (then removes it): that fails cleanly on a full disk without
//! touching sled, so sled is reopened only when it can write (its open writes a snapshot);
//! then the reopened instance's own flush (a reopen always writes: the format marker again,
//! `db/open.rs`) must succeed before changes are accepted.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::committer::{flush, open_again, Shared};
use super::QueueError;

/// How often the commit thread probes while the store cannot write.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How much room the probe asks for: about two of sled's 512 KiB log segments, so a reopened
/// store can write a segment before the disk is full again.
const PROBE_BYTES: usize = 1 << 20;

/// The probe's file in the data directory.
const PROBE_FILE: &str = "space-probe";

impl Shared {
    /// A write or flush failed with `cause`: refuses changes from now on, and closes sled at
    /// once, so that what was committed in memory but not on disk is never read (reads are
    /// refused too until the reopen). Returns the refusal.
    ///
    /// Not reopened here: the disk is likely still full, and sled writes when it opens (a
    /// snapshot among other things), which is better not tried on a full disk.
    pub(super) fn failed(&mut self, cause: &str) -> QueueError {
        let refusal = self.current.fail(cause);
        self.poisoned = true;
        drop(self.current.take());
        // Lazy writes not yet flushed went with the instance, as in a crash: no flush is owed
        // (one still owed would take the loop's every wait, and it would never probe).
        self.unflushed = false;
        refusal
    }

    /// While the store cannot write: accepts again once the probe file, a reopen if sled failed
    /// since its last open, and a flush of the open instance all succeed.
    pub(super) fn probe(&mut self) {
        if self.current.unavailable().is_none() {
            return;
        }
        if let Err(cause) = probe_space(&self.dir) {
            self.current.fail(&cause);
            return;
        }
        if self.poisoned || self.current.opened().is_err() {
            if let Err(e) = self.reopen() {
                self.current.fail(&e.to_string());
                return;
            }
        }
        let synced = self
            .current
            .opened()
            .map_err(|e| e.to_string())
            .and_then(|opened| flush(self, &opened));
        match synced {
            Ok(()) => self.current.recovered(),
            Err(cause) => {
                self.failed(&cause);
            }
        }
    }

    /// Closes the open instance and opens the database again.
    ///
    /// # Errors
    /// As the open; the slot then stays empty (reads fail too) until a probe reopens it.
    fn reopen(&mut self) -> Result<(), QueueError> {
        // The last handle of the old instance goes when its readers finish; the open waits for
        // sled's lock until then.
        drop(self.current.take());
        let (trees, log) = open_again(self)?;
        self.generation += 1;
        self.log = (self.make_log)(log);
        self.current.install(trees, self.generation);
        self.poisoned = false;
        tracing::warn!(
            generation = self.generation,
            "job store reopened after a failed write"
        );
        Ok(())
    }
}

/// Writes and syncs [`PROBE_BYTES`] into the probe file in `dir`, then removes it.
///
/// # Errors
/// A sentence naming the directory and the error (`No space left on device`).
fn probe_space(dir: &Path) -> Result<(), String> {
    let path = dir.join(PROBE_FILE);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&path)?;
        let chunk = [0u8; 64 << 10];
        for _ in 0..PROBE_BYTES / chunk.len() {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    };
    let written = write();
    // Removed whatever happened: a half-written probe must not hold the room it tested.
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| {
        format!(
            "a probe of {} KiB in {} failed: {e}",
            PROBE_BYTES >> 10,
            dir.display()
        )
    })
}
