//! Cache media in anonymous memory: for tests and benchmarks. Nothing survives the
//! process; `flush` and `fence` only count.

use super::map::Mapping;
use super::{CacheMedia, MediaError};
use std::sync::atomic::{AtomicU64, Ordering};

/// Zero-filled memory of a given size, allocated page by page on first touch.
#[derive(Debug)]
pub struct MemMedia {
    map: Mapping,
    fences: AtomicU64,
}

impl MemMedia {
    /// `len` bytes of zeros.
    ///
    /// # Panics
    /// If the memory cannot be reserved (like any allocation failure).
    #[must_use]
    pub fn new(len: u64) -> Self {
        Self::try_new(len).unwrap_or_else(|e| panic!("cannot reserve {len} bytes: {e}"))
    }

    /// `len` bytes of zeros, or the error of the reservation.
    ///
    /// # Errors
    /// The mapping failed (address space exhausted).
    pub fn try_new(len: u64) -> Result<Self, MediaError> {
        let n =
            usize::try_from(len).map_err(|_| MediaError::Unsupported(format!("{len} bytes")))?;
        Ok(Self {
            map: Mapping::anonymous(n).map_err(MediaError::io("mmap"))?,
            fences: AtomicU64::new(0),
        })
    }

    /// A copy of `len` bytes at `off` (for tests).
    ///
    /// # Errors
    /// The range is outside the media.
    pub fn to_vec(&self, off: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        let mut v = vec![0; len];
        self.map.read(off, &mut v)?;
        Ok(v)
    }

    /// Fences issued so far.
    #[must_use]
    pub fn fences(&self) -> u64 {
        self.fences.load(Ordering::Relaxed)
    }
}

impl CacheMedia for MemMedia {
    forward_data_path!(map);

    fn flush(&self, _off: u64, _len: u64) {}

    fn fence(&self) {
        self.fences.fetch_add(1, Ordering::Relaxed);
    }

    fn describe(&self) -> String {
        format!("memory ({} bytes)", self.len())
    }
}
