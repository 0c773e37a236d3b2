//! [`Image`]: what a report-mode load reads, a sized device with positional reads. Cache
//! media, a tool's device and a byte vector (an image built in memory) are all images.

use crate::media::{CacheMedia, DaxMedia, MediaError, MemMedia};
use std::io;

/// A cache device as a report-mode load reads it.
pub trait Image {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from byte `off`.
    ///
    /// # Errors
    /// The range is not inside the device, or the read failed.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// The byte range `[off, off + len)` as slice indices, if it lies inside a device of `size`.
///
/// # Errors
/// The range is not inside the device ([`io::ErrorKind::UnexpectedEof`]).
pub fn range(off: u64, len: usize, size: u64) -> io::Result<std::ops::Range<usize>> {
    let end = off.checked_add(len as u64).filter(|&end| end <= size);
    match (end, usize::try_from(off)) {
        (Some(end), Ok(start)) => Ok(start..usize::try_from(end).unwrap_or(usize::MAX)),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bytes {off}..+{len} are beyond the end of the device ({size} bytes)"),
        )),
    }
}

/// A media error of a read or write as the I/O error a tool reports.
#[must_use]
pub fn io_error(e: MediaError) -> io::Error {
    match e {
        MediaError::Poisoned { at, .. } => io::Error::other(format!(
            "media error (machine check or SIGBUS) at byte {at:#x}"
        )),
        MediaError::ReadOnly => {
            io::Error::new(io::ErrorKind::PermissionDenied, "device opened read-only")
        }
        MediaError::Io { source, .. } => source,
        other => io::Error::other(other),
    }
}

/// An image in memory: a byte vector.
impl Image for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size())?;
        buf.copy_from_slice(&self[r]);
        Ok(())
    }
}

macro_rules! media_image {
    ($t:ty) => {
        impl Image for $t {
            fn size(&self) -> u64 {
                self.len()
            }

            fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
                range(off, buf.len(), self.len())?;
                self.read(off, buf).map_err(io_error)
            }
        }
    };
}

media_image!(dyn CacheMedia);
media_image!(DaxMedia);
media_image!(MemMedia);

impl<M: Image + ?Sized> Image for &M {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(off, buf)
    }
}

impl<M: Image + ?Sized> Image for &mut M {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(off, buf)
    }
}
