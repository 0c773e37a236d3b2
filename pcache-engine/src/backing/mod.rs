//! The backing device: the slow block device (or file) behind the cache.
//!
//! Positional reads and writes from several threads at once; a batch of writes in one
//! call ([`Backing::write_many`]), which an implementation may keep in flight together;
//! `flush` makes completed writes durable (`fdatasync`); `discard` and `write_zeroes` pass
//! range operations through.
//!
//! Implementations: [`MemBacking`] (tests), [`FileBacking`] (a file or block device,
//! `O_DIRECT` where the device allows it), [`UringBacking`] (a [`FileBacking`] whose
//! batches go through io_uring, all writes of a batch in flight at once).
//! [`open_best`] opens the one writeback should use.

mod file;
mod mem;
mod uring;

pub use file::FileBacking;
pub use mem::MemBacking;
pub use uring::UringBacking;

use std::io;
use std::path::Path;
use std::sync::Arc;

/// The failure of one write of a [`Backing::write_many`] batch: the first (lowest index)
/// write that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("backing write {index} of the batch ({len:#x} bytes at {off:#x}) failed")]
pub struct BatchError {
    /// Index of the write in the batch.
    pub index: usize,
    /// Its offset.
    pub off: u64,
    /// Its length.
    pub len: u64,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl BatchError {
    /// Write `index` of `writes` failed with `source`.
    #[must_use]
    pub fn new(index: usize, writes: &[(u64, &[u8])], source: io::Error) -> Self {
        let (off, data) = writes.get(index).copied().unwrap_or((0, &[]));
        Self {
            index,
            off,
            len: data.len() as u64,
            source,
        }
    }
}

impl From<BatchError> for io::Error {
    fn from(e: BatchError) -> Self {
        Self::new(
            e.source.kind(),
            format!(
                "write of {:#x} bytes at {:#x} (write {} of the batch): {}",
                e.len, e.off, e.index, e.source
            ),
        )
    }
}

/// The backing device.
pub trait Backing: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Reads `buf.len()` bytes at `off`.
    ///
    /// # Errors
    /// The device's error.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes `data` at `off` (durable after [`Backing::flush`]).
    ///
    /// # Errors
    /// The device's error.
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()>;

    /// Writes every `(off, data)` of `writes` (each durable after [`Backing::flush`]), in
    /// no particular order and possibly several at once: the writes must not overlap. It
    /// returns once every write has completed or failed.
    ///
    /// The provided method calls [`Backing::write_at`] for each in turn and stops at the
    /// first failure.
    ///
    /// Writeback hands this the cache media's own mapped bytes
    /// ([`CacheMedia::view_many`](crate::media::CacheMedia::view_many)), in which a line
    /// may be poisoned: the kernel's copy of them fails the write with `EFAULT`; a
    /// backing that copies them in user space must do so with
    /// [`copy_checked`](crate::media::copy_checked) and fail the same way (the engine
    /// then writes the batch again through checked reads, which name the media error).
    ///
    /// # Errors
    /// The first write (lowest index) that failed, with its offset; the other writes of
    /// the batch may or may not have been made, as with a failed [`Backing::write_at`].
    fn write_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BatchError> {
        for (i, &(off, data)) in writes.iter().enumerate() {
            self.write_at(off, data)
                .map_err(|e| BatchError::new(i, writes, e))?;
        }
        Ok(())
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// The device's error.
    fn flush(&self) -> io::Result<()>;

    /// Discards `[off, off + len)`: its content becomes unspecified (zeros for
    /// [`MemBacking`] and for files).
    ///
    /// # Errors
    /// The device's error.
    fn discard(&self, off: u64, len: u64) -> io::Result<()>;

    /// Makes `[off, off + len)` read as zeros.
    ///
    /// # Errors
    /// The device's error.
    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()>;

    /// A one-line description, for logs and benchmarks.
    fn describe(&self) -> String {
        format!("backing of {} bytes", self.size())
    }
}

/// Opens `path` as the backing device writeback should use: a [`UringBacking`] where
/// aligned writes go to the device with `O_DIRECT` ([`FileBacking::writes_async`]: a
/// block device, or a file on a filesystem other than tmpfs) and io_uring is available,
/// else a [`FileBacking`].
///
/// Measured (`docs/performance.md`, "Writeback through io_uring"): with `O_DIRECT` to a
/// block device, a kset's writes in flight together cost a fraction of the CPU and wall
/// time of one `pwrite` after another; on tmpfs, where every io_uring write goes to a
/// kernel worker thread, and without `O_DIRECT`, `pwrite` is cheaper.
///
/// # Errors
/// The file cannot be opened or sized.
pub fn open_best(path: impl AsRef<Path>, read_only: bool) -> io::Result<Arc<dyn Backing>> {
    let file = FileBacking::open(path, read_only)?;
    if read_only || !file.writes_async() {
        return Ok(Arc::new(file));
    }
    match uring::new_ring() {
        Ok(ring) => Ok(Arc::new(UringBacking::with_ring(file, ring))),
        Err(e) => {
            tracing::info!(
                "{}: {}; writing back with pwrite",
                file.describe(),
                uring::unavailable(&e)
            );
            Ok(Arc::new(file))
        }
    }
}

/// Checks `[off, off + len)` against a device of `size` bytes.
pub(crate) fn check(off: u64, len: u64, size: u64) -> io::Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {off:#x}+{len:#x} is outside the backing device ({size:#x} bytes)"),
        )),
    }
}

#[cfg(test)]
mod tests;
