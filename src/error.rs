//! The one error type of swarm.
//!
//! Every failure a user can see ends up here, and `main` prints it as a
//! single `swarm: ...` line. Messages are short lowercase sentences that
//! name the step that failed (`cannot read chunk 12 ...`, `cannot connect to
//! owner at ...`), so a user knows where to look without a backtrace.
//! A full disk gets a variant of its own, [`Error::NoSpace`], so callers
//! can stop at once instead of retrying a write that cannot succeed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{auth, wire};

/// A `Result` whose error is swarm's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in swarm.
#[derive(Debug)]
pub enum Error {
    /// The command line was wrong; `main` exits with status 2.
    Usage(String),
    /// An operating-system call failed. `what` names the step ("create
    /// chunk file", "listen on 0.0.0.0:9001"), `path` the file if any.
    Io {
        what: String,
        path: Option<PathBuf>,
        err: io::Error,
    },
    /// The other side broke the protocol or closed the connection.
    Wire { peer: String, err: wire::Error },
    /// A manifest (from disk or from the owner) is malformed or unusable.
    Manifest(String),
    /// Data failed its SHA-256 check.
    Integrity(String),
    /// A bounded wait ran out.
    Timeout(String),
    /// The file system holding this path is full; retrying will not help.
    NoSpace(PathBuf),
    /// A broken internal invariant; reported rather than panicking.
    Bug(String),
    /// The secret file cannot serve as a secret (`why`: "is empty", ...).
    /// Never carries the file's content.
    Secret { path: PathBuf, why: &'static str },
    /// Admission by the swarm secret failed on the connection with `peer`;
    /// trying again will not change that.
    Admission {
        peer: String,
        failure: auth::Failure,
    },
}

impl Error {
    /// An I/O error at a step that has no file path.
    pub fn io(what: impl Into<String>, err: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: None,
            err,
        }
    }

    /// An I/O error while working on `path`.
    pub fn io_path(what: impl Into<String>, path: impl Into<PathBuf>, err: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: Some(path.into()),
            err,
        }
    }

    /// A failed write to `path` (creating, writing, sizing, flushing or
    /// renaming it): [`Error::NoSpace`] when the file system is full,
    /// otherwise an [`Error::Io`] naming the step `what`.
    pub fn io_write(what: impl Into<String>, path: impl Into<PathBuf>, err: io::Error) -> Error {
        if is_no_space(&err) {
            Error::NoSpace(path.into())
        } else {
            Error::io_path(what, path, err)
        }
    }

    /// Whether this error means the disk cannot take more data, so the
    /// process should stop rather than fetch and write again.
    pub fn is_fatal_storage(&self) -> bool {
        matches!(self, Error::NoSpace(_))
    }

    /// A protocol error on the connection with `peer`.
    pub fn wire(peer: impl Into<String>, err: wire::Error) -> Error {
        Error::Wire {
            peer: peer.into(),
            err,
        }
    }

    /// The exit status `main` should use for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Io {
                what,
                path: Some(path),
                err,
            } => {
                write!(f, "cannot {what} {}: {}", path.display(), plain(err))
            }
            Error::Io {
                what,
                path: None,
                err,
            } => {
                write!(f, "cannot {what}: {}", plain(err))
            }
            Error::Wire { peer, err } => write!(f, "{peer}: {err}"),
            Error::Manifest(msg) => write!(f, "bad manifest: {msg}"),
            Error::Integrity(msg) => write!(f, "integrity check failed: {msg}"),
            Error::Timeout(msg) => write!(f, "timed out: {msg}"),
            Error::NoSpace(path) => {
                write!(f, "no space left on device writing {}", path.display())
            }
            Error::Bug(msg) => write!(f, "bug: {msg}"),
            Error::Secret { path, why } => write!(f, "secret file {} {why}", path.display()),
            Error::Admission { peer, failure } => write!(f, "{peer}{failure}"),
        }
    }
}

impl std::error::Error for Error {}

/// Whether `err` says the file system is full (ENOSPC).
fn is_no_space(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC) || err.kind() == io::ErrorKind::StorageFull
}

/// An `io::Error` as a lowercase phrase without the "(os error 2)" tail.
pub fn plain(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_one_lowercase_line() {
        let err = Error::io_path("open file", "/nope/x.bin", io::Error::from_raw_os_error(2));
        assert_eq!(
            err.to_string(),
            "cannot open file /nope/x.bin: no such file or directory"
        );
        assert_eq!(err.exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn a_full_disk_is_no_space_and_other_write_errors_stay_io() {
        let path = "/data/dir/chunks/00000007.chunk";
        for full in [
            io::Error::from_raw_os_error(libc::ENOSPC),
            io::Error::from(io::ErrorKind::StorageFull),
        ] {
            let err = Error::io_write("write", path, full);
            assert!(matches!(&err, Error::NoSpace(p) if p.as_os_str() == path));
            assert_eq!(
                err.to_string(),
                "no space left on device writing /data/dir/chunks/00000007.chunk"
            );
            assert!(err.is_fatal_storage());
            assert_eq!(err.exit_code(), 1);
        }
        let denied = Error::io_write("write", path, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(denied, Error::Io { .. }));
        assert!(!denied.is_fatal_storage());
        assert_eq!(
            denied.to_string(),
            "cannot write /data/dir/chunks/00000007.chunk: permission denied"
        );
    }
}
