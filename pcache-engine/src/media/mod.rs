//! The cache device: a byte-addressable mapping with explicit persistence.
//!
//! A [`CacheMedia`] is written with ordinary stores ([`CacheMedia::write`]); a store is
//! durable only after [`CacheMedia::flush`] of its range **and** a following
//! [`CacheMedia::fence`]. This is the persistent-memory model (CLWB + SFENCE); a file
//! mapping meets it with `msync` in `flush`. The engine's persistence protocol
//! (`docs/design.md`) is written against this model.
//!
//! Implementations:
//! - [`Window`]: a byte range of another media (one cache of a shared cache device).
//! - [`MemMedia`]: anonymous memory, for tests and benchmarks; nothing is durable.
//! - [`FileMedia`]: a mapped regular file or block device, persisted by `msync`.
//! - [`DaxMedia`]: a device-DAX character device (`/dev/daxN.M`), persisted by cache-line
//!   flushes and a store fence; or a pmem block device (`/dev/pmemN`), as a
//!   [`BlockMedia`].
//! - [`BlockMedia`]: a block device read and written with `O_DIRECT`, persisted by
//!   `fdatasync` (the block layer's flush), without the page cache.
//!
//! The test doubles (a crash-recording media, a media with injected failures) are in
//! `pcache_engine::testing`, behind the `test-utils` feature.

/// The data-path methods of a [`CacheMedia`] whose bytes live in its field `$f` (a
/// mapping, or another media it wraps): `len`, `read`, `write`, `view`, `fill` and `zero`,
/// `view_many`, passed straight through.
macro_rules! forward_data_path {
    ($f:ident) => {
        fn len(&self) -> u64 {
            self.$f.len()
        }

        fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), $crate::media::MediaError> {
            self.$f.read(off, buf)
        }

        fn write(&self, off: u64, data: &[u8]) -> Result<(), $crate::media::MediaError> {
            self.$f.write(off, data)
        }

        fn view(
            &self,
            off: u64,
            len: usize,
            f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        ) -> Result<(), $crate::media::MediaError> {
            self.$f.view(off, len, f)
        }

        fn view_many(
            &self,
            ranges: &[(u64, usize)],
            f: &mut dyn FnMut(&[&[u8]]) -> std::io::Result<()>,
        ) -> Result<(), $crate::media::MediaError> {
            self.$f.view_many(ranges, f)
        }

        fn fill(
            &self,
            off: u64,
            len: usize,
            f: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
        ) -> Result<(), $crate::media::MediaError> {
            self.$f.fill(off, len, f)
        }

        fn zero(&self, off: u64, len: u64) -> Result<(), $crate::media::MediaError> {
            self.$f.zero(off, len)
        }
    };
}

mod block;
mod dax;
pub(crate) mod file;
pub(crate) mod flush;
mod map;
mod mcsafe;
mod mem;
mod window;

pub use block::{BlockDevice, BlockMedia};
pub use dax::DaxMedia;
pub use file::FileMedia;
pub use flush::FlushInstr;
pub use mem::MemMedia;
pub use window::Window;

use std::io;

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The range is not inside the media.
    #[error("range {off:#x}+{len:#x} is outside the media ({size:#x} bytes)")]
    OutOfRange {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Size of the media.
        size: u64,
    },
    /// A write to media opened read-only.
    #[error("the media is read-only")]
    ReadOnly,
    /// An operating-system call failed.
    #[error("{op} failed")]
    Io {
        /// The call.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The media is not usable as a cache device.
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// The callback of [`CacheMedia::fill`] failed; the media itself did not.
    #[error("the data source failed")]
    Source(#[source] io::Error),
    /// Reading the media raised a machine check (a poisoned line of persistent memory)
    /// or a `SIGBUS` (e.g. a mapped file truncated underneath), and the copy was stopped
    /// at `at` instead of the process being killed (`docs/design.md`, "Media errors on
    /// read"). The bytes may read again later or never; nothing was changed.
    #[error(
        "media error (machine check or SIGBUS) reading {off:#x}+{len:#x}: the byte at {at:#x} cannot be read"
    )]
    Poisoned {
        /// Offset of the read.
        off: u64,
        /// Length of the read.
        len: u64,
        /// Offset of the first byte that could not be read.
        at: u64,
    },
}

impl MediaError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { op, source }
    }
}

/// A mapped cache device with explicit persistence.
///
/// All methods may be called from several threads at once. The engine never issues a
/// write that overlaps a concurrent read or write of the same bytes.
pub trait CacheMedia: Send + Sync + 'static {
    /// Size in bytes.
    fn len(&self) -> u64;

    /// Whether the media has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes at `off` into `buf`.
    ///
    /// The mapped media ([`FileMedia`], [`DaxMedia`], [`MemMedia`]) copy with a routine
    /// that survives a fault of the source: on x86-64 Linux, a machine check on poisoned
    /// persistent memory (`SIGBUS`, `BUS_MCEERR_AR`) or a read past the end of a mapped
    /// file that was truncated (`SIGBUS`, `BUS_ADRERR`) fails this read with
    /// [`MediaError::Poisoned`] (an I/O error, `EIO`, for the engine's callers) instead of
    /// killing the process. On other platforms such a fault still kills the process.
    /// Only this copy is protected: stores, flushes, and mapped bytes handed out without
    /// a copy are not (`docs/design.md`, "Media errors on read").
    ///
    /// # Errors
    /// [`MediaError::OutOfRange`]; [`MediaError::Poisoned`] if the media could not be read
    /// (the content of `buf` is then unspecified).
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError>;

    /// Stores `data` at `off`. Not durable until flushed and fenced.
    ///
    /// # Errors
    /// [`MediaError::OutOfRange`], [`MediaError::ReadOnly`].
    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError>;

    /// Stores `len` bytes at `off` that `f` produces: `f` is handed the bytes to fill
    /// (their previous content is unspecified, so it must overwrite all of them). Not
    /// durable until flushed and fenced, as with [`CacheMedia::write`].
    ///
    /// The provided method lets `f` fill a temporary buffer and then [`CacheMedia::write`]s
    /// it; the mapped media override it to hand `f` the mapped bytes themselves, so the
    /// data is copied once (e.g. `pread` straight into the cache).
    ///
    /// # Errors
    /// As [`CacheMedia::write`]; [`MediaError::Source`] if `f` failed (the range then
    /// holds unspecified bytes).
    fn fill(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        if self.is_read_only() {
            return Err(MediaError::ReadOnly);
        }
        check_range(off, len, self.len())?;
        let mut buf = vec![0; len];
        f(&mut buf).map_err(MediaError::Source)?;
        self.write(off, &buf)
    }

    /// Hands `f` the `len` bytes at `off`, for it to pass on without a copy of its own
    /// (e.g. a `pwrite` of them into a request).
    ///
    /// The provided method [`CacheMedia::read`]s them into a temporary buffer; the mapped
    /// media override it to hand `f` the mapped bytes themselves. Those are the media's
    /// own: `f` must only read them, and a poisoned line in them is caught only where
    /// the kernel copies them (a `write(2)` of them fails with `EFAULT`), not by a copy in
    /// `f` itself: use [`CacheMedia::read`] for a checked copy.
    ///
    /// # Errors
    /// As [`CacheMedia::read`]; [`MediaError::Source`] if `f` failed.
    fn view(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        check_range(off, len, self.len())?;
        let mut buf = vec![0; len];
        self.read(off, &mut buf)?;
        f(&buf).map_err(MediaError::Source)
    }

    /// Hands `f` the bytes of every range of `ranges` (offset, length) at once, in order,
    /// for it to pass on without a copy of its own: [`CacheMedia::view`] for several
    /// ranges (e.g. one batch of backing writes, `docs/design.md`, "Writeback").
    ///
    /// The provided method [`CacheMedia::read`]s them into temporary buffers; the mapped
    /// media override it to hand `f` the mapped bytes themselves, with the same rules as
    /// [`CacheMedia::view`].
    ///
    /// # Errors
    /// As [`CacheMedia::view`], for the first range that fails.
    fn view_many(
        &self,
        ranges: &[(u64, usize)],
        f: &mut dyn FnMut(&[&[u8]]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let mut bufs = Vec::with_capacity(ranges.len());
        for &(off, len) in ranges {
            check_range(off, len, self.len())?;
            let mut buf = vec![0; len];
            self.read(off, &mut buf)?;
            bufs.push(buf);
        }
        let views: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        f(&views).map_err(MediaError::Source)
    }

    /// Starts making the stores to `[off, off + len)` durable (CLWB; `msync` for a file).
    /// A failure is latched and reported by [`CacheMedia::check`].
    fn flush(&self, off: u64, len: u64);

    /// Orders: every range flushed before the fence is durable when it returns (SFENCE).
    fn fence(&self);

    /// Stores `len` zero bytes at `off`.
    ///
    /// # Errors
    /// As [`CacheMedia::write`].
    fn zero(&self, off: u64, len: u64) -> Result<(), MediaError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            // n <= 4096.
            #[allow(clippy::cast_possible_truncation)]
            self.write(off + done, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Reports (and keeps) the first failure of an earlier [`CacheMedia::flush`].
    ///
    /// # Errors
    /// The latched failure.
    fn check(&self) -> Result<(), MediaError> {
        Ok(())
    }

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool {
        false
    }

    /// A one-line description (kind, path, persistence method), for logs and benchmarks.
    fn describe(&self) -> String {
        format!("media of {} bytes", self.len())
    }

    /// Whether a caller may write data into the media itself, without the media's own
    /// copy (`crate::Cache::stage_direct`): `Some` for a block device written with
    /// `O_DIRECT` where a write with `RWF_DSYNC` is durable when it completes. The
    /// provided method says no.
    fn direct(&self) -> Option<Direct> {
        None
    }
}

/// How to write into a [`CacheMedia`] directly ([`CacheMedia::direct`]): byte `off` of
/// the media is byte `base + off` of the device, every write must be aligned to `block`
/// in offset, length and buffer address, and a write is durable once it completed with
/// `RWF_DSYNC` (a `REQ_FUA` write: for pmem, the driver's cache-bypassing copy and
/// `nvdimm_flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direct {
    /// The device's descriptor, open for writing with `O_DIRECT` (valid while the media
    /// lives), when the device is a real one; `None` for a simulated one (tests), which
    /// only [`CacheMedia::write`] reaches.
    pub fd: Option<std::os::fd::RawFd>,
    /// Where the media starts on the device.
    pub base: u64,
    /// The device's logical block size.
    pub block: u64,
}

/// Copies `src` into `dst` like [`slice::copy_from_slice`], but survives a machine check
/// or `SIGBUS` while reading `src`, as [`CacheMedia::read`] does: for code that copies
/// mapped bytes [`CacheMedia::view`] handed it. `Err(done)`: reading `src[done]` failed;
/// `dst[..done]` holds the bytes before it, the rest of `dst` is unspecified. Only x86-64
/// Linux catches the fault; elsewhere it still kills the process.
///
/// # Panics
/// If the slices differ in length.
pub fn copy_checked(dst: &mut [u8], src: &[u8]) -> Result<(), usize> {
    assert_eq!(dst.len(), src.len(), "copy_checked: lengths differ");
    // The bytes may come from a mapping the engine did not make (a tool's own): the
    // handler must be there (once; an atomic load afterwards).
    mcsafe::install();
    // SAFETY: `src` is a live slice of `dst.len()` bytes for the whole call, a shared
    // borrow (so not written concurrently through Rust) that cannot overlap the
    // exclusive `dst`.
    unsafe { mcsafe::copy_from_media(dst, src.as_ptr()) }
}

/// Checks that `[off, off + len)` lies inside a media of `size` bytes.
pub(crate) fn check_range(off: u64, len: usize, size: u64) -> Result<usize, MediaError> {
    let len64 = len as u64;
    match off.checked_add(len64) {
        Some(end) if end <= size => usize::try_from(off).map_err(|_| MediaError::OutOfRange {
            off,
            len: len64,
            size,
        }),
        _ => Err(MediaError::OutOfRange {
            off,
            len: len64,
            size,
        }),
    }
}

#[cfg(test)]
mod tests;
