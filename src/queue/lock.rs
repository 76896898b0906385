//! The data directory's lock: an exclusive `flock(2)` on `<dir>/LOCK`, held for the store's
//! life, with the holder's PID written inside so a second daemon can say who has it.
//!
//! sled 0.34 also `flock`s its own `db` file, but its error ("could not acquire lock") names
//! neither the directory nor the holder. `flock` locks belong to the open file description, so
//! a second open of the same directory conflicts even within one process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::QueueError;

/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "LOCK";

/// The held lock; released when dropped (the file is closed).
pub(super) struct DirLock {
    /// The locked file.
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock on `dir` without waiting, and writes our PID into it.
    ///
    /// # Errors
    /// [`QueueError::InUse`] naming the holder's PID when another store holds it;
    /// [`QueueError::Storage`] when the file cannot be opened or written.
    pub(super) fn acquire(dir: &Path) -> Result<Self, QueueError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |what: &str, e: &dyn std::fmt::Display| {
            QueueError::Storage(format!("cannot {what} {}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| dir_error(format!("cannot open {}", path.display()), &e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, Errno::EWOULDBLOCK)) => return Err(in_use(dir, file)),
            Err((_, e)) => return Err(io_error("lock", &e)),
        };
        lock.set_len(0).map_err(|e| io_error("write", &e))?;
        (&*lock)
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(|e| io_error("write", &e))?;
        Ok(Self { _file: lock })
    }
}

/// The error for `e` met while doing `what` in the data directory: [`QueueError::ReadOnly`]
/// when the directory cannot be written at all (`EROFS`, `EACCES`, `EPERM`), a sentence that
/// says what to do; else [`QueueError::Storage`].
pub(super) fn dir_error(what: String, e: &std::io::Error) -> QueueError {
    let read_only = [Errno::EROFS, Errno::EACCES, Errno::EPERM]
        .iter()
        .any(|&errno| e.raw_os_error() == Some(errno as i32));
    if read_only {
        QueueError::ReadOnly(format!(
            "{what}: {e}; the job store must write there: make it writable (a read-write mount, owned by the daemon's user) or choose another data directory (--data-dir)"
        ))
    } else {
        QueueError::Storage(format!("{what}: {e}"))
    }
}

/// Waits until nothing holds an exclusive `flock` on `file` (if it exists), for at most
/// `deadline`. Used on sled's own `db` lock once we hold [`DirLock`]: then only a handle of
/// this same process that is still being closed can hold it (sled's background flusher thread
/// lets go of the file a moment after the database is dropped), so a reopen right after a close
/// waits for it instead of failing with sled's "could not acquire lock". A new daemon process
/// never meets it: a dead process holds no lock.
///
/// # Errors
/// [`QueueError::InUse`] when it is still held at the deadline; [`QueueError::Storage`] when
/// the file cannot be opened or locked for another reason.
pub(super) fn wait_until_unlocked(file: &Path, deadline: Duration) -> Result<(), QueueError> {
    let until = Instant::now() + deadline;
    loop {
        let f = match File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(QueueError::Storage(format!(
                    "cannot open {}: {e}",
                    file.display()
                )))
            }
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(_released_on_drop) => return Ok(()),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(QueueError::InUse(format!(
                    "{} is still locked by a job store of this process that is being closed",
                    file.display()
                )))
            }
            Err((_, e)) => {
                return Err(QueueError::Storage(format!(
                    "cannot lock {}: {e}",
                    file.display()
                )))
            }
        }
    }
}

/// The error for a directory held by someone else, naming them by the PID they wrote.
fn in_use(dir: &Path, mut file: File) -> QueueError {
    let mut text = String::new();
    let holder = match file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse::<u32>().ok())
    {
        Some(pid) if pid == std::process::id() => {
            format!("this same process (pid {pid}), which has the store open already")
        }
        Some(pid) => format!("another creepy-meow (pid {pid})"),
        None => "another creepy-meow (pid unknown)".to_owned(),
    };
    QueueError::InUse(format!(
        "data directory {} is in use by {holder}; stop it first, or give this one another data directory",
        dir.display()
    ))
}
