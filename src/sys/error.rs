//! Errors of the kernel and LXC boundary, with errno already mapped to meaning.
//!
//! Callers match on [`SysError::AlreadyExists`] and [`SysError::NotFound`] instead of numbers
//! (netavark maps EEXIST the same way), which is what makes steps idempotent.

use std::fmt;

/// A failed call into the kernel or an LXC tool. `what` always names the object and the action,
/// such as `create bridge br2`.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// EEXIST: the object is already there.
    #[error("{what}: already exists")]
    AlreadyExists {
        /// The action and object.
        what: String,
    },
    /// ENODEV / ENOENT / ESRCH: the object is not there.
    #[error("{what}: not found")]
    NotFound {
        /// The action and object.
        what: String,
    },
    /// EPERM / EACCES: the process lacks root or CAP_NET_ADMIN.
    #[error("{what}: permission denied (run as root or with CAP_NET_ADMIN)")]
    PermissionDenied {
        /// The action and object.
        what: String,
    },
    /// Any other kernel error, with its errno.
    #[error("{what}: {message} (errno {errno})")]
    Kernel {
        /// The action and object.
        what: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's text for it.
        message: String,
    },
    /// A local failure: a socket that could not be opened, a namespace that could not be entered.
    #[error("{what}: {source}")]
    Io {
        /// The action and object.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external program (an `lxc-*` tool) exited non-zero.
    #[error("{what}: `{command}` exited with {status}: {stderr}")]
    Command {
        /// The action and object.
        what: String,
        /// The command line, for the operator to re-run.
        command: String,
        /// Exit status as text (code or signal).
        status: String,
        /// What the tool printed on stderr, trimmed.
        stderr: String,
    },
    /// An external program (an `lxc-*` tool) did not finish in time and was killed, with every
    /// process of its group.
    #[error("{what}: `{command}` timed out after {}s and was killed", after.as_secs_f64())]
    TimedOut {
        /// The action and object.
        what: String,
        /// The command line, for the operator to re-run.
        command: String,
        /// How long it was given.
        after: std::time::Duration,
    },
    /// The kernel answered in a way we did not expect.
    #[error("{what}: {detail}")]
    Unexpected {
        /// The action and object.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl SysError {
    /// Builds the error for an errno returned by the kernel for `what`.
    pub fn from_errno(what: impl fmt::Display, errno: i32) -> Self {
        let what = what.to_string();
        match errno {
            libc::EEXIST => Self::AlreadyExists { what },
            libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL => {
                Self::NotFound { what }
            }
            libc::EPERM | libc::EACCES => Self::PermissionDenied { what },
            _ => Self::Kernel {
                what,
                errno,
                message: std::io::Error::from_raw_os_error(errno).to_string(),
            },
        }
    }

    /// Whether the object was missing; undo treats that as success.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether the object was already there.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// Result of a call into the kernel or LXC.
pub type SysResult<T> = Result<T, SysError>;

/// The two outcomes an idempotent step treats as success, written once.
pub trait IdempotentResult {
    /// `Ok` when the object was not there: deleting or undoing something absent succeeds.
    ///
    /// # Errors
    /// Any other error.
    fn missing_ok(self) -> SysResult<()>;

    /// `Ok` when the object was there already: adding what exists as wanted succeeds.
    ///
    /// # Errors
    /// Any other error.
    fn existing_ok(self) -> SysResult<()>;
}

impl IdempotentResult for SysResult<()> {
    fn missing_ok(self) -> SysResult<()> {
        match self {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    fn existing_ok(self) -> SysResult<()> {
        match self {
            Err(e) if e.is_already_exists() => Ok(()),
            other => other,
        }
    }
}
