//! The error type of the pcache-ublk commands.

use std::io;
use std::path::PathBuf;

use libublk::UblkError;
use pcache_engine::media::MediaError;
use pcache_engine::EngineError;

/// Why a pcache-ublk command failed. Messages name the object and never repeat the
/// `#[source]` (the binary prints the whole chain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A cache or backing device path could not be used.
    #[error("{role} {path}")]
    Device {
        /// `cache` or `backing`.
        role: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The cache or backing device could not be claimed: missing, of the wrong type, held
    /// by another writer (named), or both roles given the same device.
    #[error(transparent)]
    Claim(#[from] pcache_engine::claim::ClaimError),
    /// The cache media could not be mapped (missing, not a DAX device, …).
    #[error("cache {path}")]
    CacheMedia {
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: MediaError,
    },
    /// The engine failed (closing the cache, …).
    #[error("cache engine")]
    Engine(#[from] EngineError),
    /// The engine refused to open the cache, or failed opening it.
    #[error("cache engine: {path}")]
    Open {
        /// The cache device.
        path: PathBuf,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// The engine refused the cache for a reason the command line can fix (not formatted,
    /// the other data_crc setting): the reason (an error without a source of its own),
    /// then how to fix it.
    #[error("cache engine: {path}: {reason}{hint}")]
    Unusable {
        /// The cache device.
        path: PathBuf,
        /// Why the engine refused it.
        reason: EngineError,
        /// What to do about it, in parentheses after a space.
        hint: String,
    },
    /// `/dev/ublk-control` is missing.
    #[error(
        "the ublk driver is not loaded: /dev/ublk-control is missing (run `modprobe ublk_drv`)"
    )]
    NoUblkDriver,
    /// `/dev/ublk-control` exists but cannot be opened read-write.
    #[error("cannot open /dev/ublk-control read-write (pcache-ublk add needs root)")]
    ControlDevice(#[source] io::Error),
    /// A ublk control or queue operation failed.
    #[error("ublk {op} failed: {detail}")]
    Ublk {
        /// The operation.
        op: &'static str,
        /// The decoded libublk error.
        detail: String,
    },
    /// No ublk device with this id exists, or it is not a pcache-ublk device.
    #[error("ublk device {id}: {why}")]
    NotOurs {
        /// The device id.
        id: u32,
        /// Why it cannot be used.
        why: String,
    },
    /// The daemon reported a failure (its message, chain and all), or did not report.
    #[error("{0}")]
    Daemon(String),
    /// A system call for starting, signalling or supervising the daemon failed.
    #[error("{what}")]
    Process {
        /// What was being done.
        what: String,
        /// The failure (an `io::Error` or a `nix` errno).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Talking to a running daemon failed.
    #[error("control socket {path}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The daemon answered a request with an error.
    #[error("daemon refused: {0}")]
    Refused(String),
    /// A run-directory file could not be read or written.
    #[error("run directory file {path}")]
    RunDir {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A bad argument that clap could not catch.
    #[error("{0}")]
    Invalid(String),
    /// A shutdown signal arrived before the device was live.
    #[error("interrupted before the device was live")]
    Interrupted,
}

/// Describes a libublk error, with the errno spelled out where it carries one.
pub fn describe_ublk(e: &UblkError) -> String {
    match e {
        UblkError::OtherError(code) | UblkError::UringIOError(code) => {
            let errno = code.checked_abs().unwrap_or(libc::EIO);
            format!("{} (errno {errno})", io::Error::from_raw_os_error(errno))
        }
        UblkError::IOError(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// An error and all its sources, joined by `": "` (for logs and the start report).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Wraps the failure of a system call as [`Error::Process`], saying what was being done.
pub fn process<E>(what: impl Into<String>) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let what = what.into();
    move |e| Error::Process {
        what,
        source: Box::new(e),
    }
}

/// Wraps a libublk error as [`Error::Ublk`].
pub fn ublk(op: &'static str) -> impl FnOnce(UblkError) -> Error {
    move |e| Error::Ublk {
        op,
        detail: describe_ublk(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ublk_errors_spell_out_the_errno() {
        let e = ublk("add device")(UblkError::OtherError(-libc::EBUSY));
        let msg = e.to_string();
        assert!(msg.starts_with("ublk add device failed: "), "{msg}");
        assert!(msg.contains("errno 16"), "{msg}");
    }

    #[test]
    fn a_failed_system_call_keeps_its_cause() {
        let cause = || io::Error::from_raw_os_error(libc::ENOENT);
        let e = process("cannot start the daemon")(cause());
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(chain(&e), format!("cannot start the daemon: {}", cause()));
    }

    #[test]
    fn chain_names_every_cause_once() {
        let e = Error::Device {
            role: "cache",
            path: "/dev/pmem9".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let msg = chain(&e);
        assert!(msg.starts_with("cache /dev/pmem9: "), "{msg}");
        assert_eq!(msg.matches("/dev/pmem9").count(), 1, "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }
}
