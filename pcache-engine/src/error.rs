//! The engine's error type: a stable [`ErrorKind`] for callers that map errors to errno,
//! plus what failed and the cause.

use crate::media::MediaError;
use pcache_format::{CachePos, FormatError};
use std::io;

/// What kind of failure an [`EngineError`] is; stable, for mapping to errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O error on the cache media or the backing device.
    Io,
    /// The cache's metadata is damaged or inconsistent.
    Corrupt,
    /// Not enough space (a cache device under 512 MiB, or a cache of too few segments
    /// to write to).
    NoSpace,
    /// A request or option is not valid.
    Invalid,
    /// A write to a read-only cache.
    ReadOnly,
    /// The cache failed earlier (an I/O error latched it) and refuses writes.
    Failed,
    /// The cache is closed.
    Closed,
    /// Temporarily out of space; retry later.
    Busy,
}

/// An engine error: which operation failed, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A request that is not sector-aligned or not inside the device.
    #[error("invalid request: {what} (offset {off:#x}, length {len:#x})")]
    BadRequest {
        /// What is wrong.
        what: &'static str,
        /// Offset of the request.
        off: u64,
        /// Length of the request.
        len: u64,
    },
    /// An option or argument that is not valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The cache was formatted with the other data_crc setting.
    #[error("data_crc mismatch: the cache has data_crc {on_media}, the options ask for {asked}")]
    DataCrcMismatch {
        /// The DATA_CRC flag on the media.
        on_media: bool,
        /// The option.
        asked: bool,
    },
    /// The cache device is smaller than 512 MiB.
    #[error("cache device too small: {size} bytes (the minimum is {min})")]
    TooSmall {
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The cache has too few segments for writes to make progress: it can be opened
    /// read-only only.
    #[error(
        "the cache has {n_segs} segments, too few to cache writes (at least {min}: the log, \
         its reserve and two data segments); open it read-only, or format a larger one"
    )]
    TooFewSegments {
        /// Its cache segments.
        n_segs: u32,
        /// The minimum.
        min: u32,
    },
    /// On-media metadata failed validation.
    #[error("corrupt cache metadata ({context})")]
    Corrupt {
        /// What was being loaded.
        context: &'static str,
        /// The rejected structure.
        #[source]
        source: FormatError,
    },
    /// The log ends at a damaged kset with durable ksets behind it: replay would silently
    /// serve older data for what they hold.
    #[error(
        "the log is damaged at {pos} ({what}), with {ksets} ksets, {keys} keys and \
         {dirty_bytes} dirty bytes behind it that replay would lose; pcache-fsck shows it, \
         pcache-replay --salvage recovers what is behind it"
    )]
    DamagedLog {
        /// The damaged kset's log position.
        pos: CachePos,
        /// What the evidence is.
        what: String,
        /// Ksets behind it.
        ksets: u64,
        /// Keys in them.
        keys: u64,
        /// Dirty bytes in them.
        dirty_bytes: u64,
    },
    /// No cache_info slot holds an initialised copy, but one lies at byte 8 216, where
    /// kernels 6.18.0 to 6.18.3 wrote cache_info by mistake. Formatting (what the kernel
    /// does) would discard everything that kernel cached; pcache refuses instead.
    #[error(
        "cache_info is only at byte {at} (seq {seq}), where kernels 6.18.0 to 6.18.3 wrote \
         it by mistake and no kernel reads it; formatting would discard the cache: run \
         pcache-fsck --repair to move it to its slot, or pcache-mkfs to start afresh"
    )]
    MisplacedCacheInfo {
        /// Its offset (8 216).
        at: u64,
        /// Its seq.
        seq: u8,
    },
    /// The cache's state is inconsistent in a way no parser can name.
    #[error("corrupt cache: {0}")]
    Inconsistent(String),
    /// A key's data does not match its data_crc.
    #[error("data crc mismatch for logical {off:#x}+{len:#x} at cache position {pos}")]
    DataCrc {
        /// Logical offset of the key.
        off: u64,
        /// Length of the key.
        len: u32,
        /// Where its data is.
        pos: CachePos,
    },
    /// The cache is unformatted and was opened read-only.
    #[error(
        "the cache device is not formatted (no initialised pcache cache on it): run pcache-mkfs"
    )]
    NotFormatted,
    /// A cache media operation failed.
    #[error("cache media: {op}")]
    Media {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: MediaError,
    },
    /// A backing device operation failed.
    #[error("backing device: {op} at {off:#x}+{len:#x}")]
    Backing {
        /// The operation.
        op: &'static str,
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The sink of a [`Cache::read_with`](crate::Cache::read_with) failed while taking
    /// the piece at `off`; the read failed.
    #[error("read sink failed for logical {off:#x}+{len:#x}")]
    ReadSink {
        /// Logical offset of the piece being handed over.
        off: u64,
        /// Its length.
        len: u64,
        /// The sink's error.
        #[source]
        source: io::Error,
    },
    /// The data source of a [`Cache::write_with`](crate::Cache::write_with) failed while
    /// filling the piece at `off`; the write failed (no key points at that piece).
    #[error("write source failed for logical {off:#x}+{len:#x}")]
    WriteSource {
        /// Logical offset of the piece being filled.
        off: u64,
        /// Its length.
        len: u64,
        /// The source's error.
        #[source]
        source: io::Error,
    },
    /// A write to a read-only cache.
    #[error("the cache is read-only")]
    ReadOnly,
    /// The cache failed earlier and no longer accepts writes.
    #[error("the cache failed earlier ({0}); reopen it")]
    Failed(String),
    /// The cache is closed.
    #[error("the cache is closed")]
    Closed,
    /// No space can be reclaimed (only without background workers: with them, writes
    /// wait for writeback and GC instead).
    #[error("the cache is full and nothing can be reclaimed now")]
    Full,
}

impl EngineError {
    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest { .. } | Self::InvalidArgument(_) | Self::DataCrcMismatch { .. } => {
                ErrorKind::Invalid
            }
            Self::TooSmall { .. } | Self::TooFewSegments { .. } => ErrorKind::NoSpace,
            Self::Full => ErrorKind::Busy,
            Self::Corrupt { .. }
            | Self::DamagedLog { .. }
            | Self::Inconsistent(_)
            | Self::MisplacedCacheInfo { .. }
            | Self::NotFormatted => ErrorKind::Corrupt,
            Self::DataCrc { .. }
            | Self::Media { .. }
            | Self::Backing { .. }
            | Self::WriteSource { .. }
            | Self::ReadSink { .. } => ErrorKind::Io,
            Self::ReadOnly => ErrorKind::ReadOnly,
            Self::Failed(_) => ErrorKind::Failed,
            Self::Closed => ErrorKind::Closed,
        }
    }

    /// The negative errno a block frontend should complete the request with.
    #[must_use]
    pub fn errno(&self) -> i32 {
        -match self.kind() {
            ErrorKind::Io | ErrorKind::Corrupt | ErrorKind::Failed => libc::EIO,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::Invalid => libc::EINVAL,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::Closed => libc::ESHUTDOWN,
            ErrorKind::Busy => libc::EBUSY,
        }
    }

    pub(crate) fn media(op: &'static str) -> impl FnOnce(MediaError) -> Self {
        move |source| Self::Media { op, source }
    }

    pub(crate) fn backing(op: &'static str, off: u64, len: u64) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Backing {
            op,
            off,
            len,
            source,
        }
    }

    pub(crate) fn corrupt(context: &'static str) -> impl FnOnce(FormatError) -> Self {
        move |source| Self::Corrupt { context, source }
    }
}

/// Result of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<crate::walk::WalkError> for EngineError {
    fn from(e: crate::walk::WalkError) -> Self {
        use crate::walk::WalkError;
        match e {
            WalkError::Kset { source, .. } => EngineError::Corrupt {
                context: "kset",
                source,
            },
            WalkError::Media { source, .. } => EngineError::Media {
                op: "read kset",
                source,
            },
            other => EngineError::Inconsistent(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(EngineError::ReadOnly.errno(), -libc::EROFS);
        assert_eq!(EngineError::Closed.errno(), -libc::ESHUTDOWN);
        let e = EngineError::BadRequest {
            what: "x",
            off: 1,
            len: 2,
        };
        assert_eq!(e.errno(), -libc::EINVAL);
        assert_eq!(
            EngineError::TooSmall { size: 1, min: 2 }.errno(),
            -libc::ENOSPC
        );
        let e = EngineError::Media {
            op: "read",
            source: MediaError::ReadOnly,
        };
        assert_eq!(e.errno(), -libc::EIO);
        // A machine check or SIGBUS caught while reading the cache.
        let e = EngineError::Media {
            op: "read data",
            source: MediaError::Poisoned {
                off: 4096,
                len: 512,
                at: 4608,
            },
        };
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.errno(), -libc::EIO);
        let e = EngineError::WriteSource {
            off: 0,
            len: 512,
            source: io::Error::from_raw_os_error(libc::EFAULT),
        };
        assert_eq!(e.errno(), -libc::EIO);
    }
}
