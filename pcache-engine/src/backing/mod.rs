//! The backing device: the slow block device (or file) behind the cache.
//!
//! Positional reads and writes from several threads at once; `flush` makes completed
//! writes durable (`fdatasync`); `discard` and `write_zeroes` pass range operations
//! through.
//!
//! Implementations: [`MemBacking`] (tests), [`FileBacking`] (a file or block device,
//! `O_DIRECT` where the device allows it).

mod file;
mod mem;

pub use file::FileBacking;
pub use mem::MemBacking;

use std::io;

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
