//! A backing device in memory, for tests.

use super::{check, Backing};
use parking_lot::RwLock;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Zero-filled memory behind a lock; discard zeroes.
#[derive(Debug)]
pub struct MemBacking {
    data: RwLock<Vec<u8>>,
    flushes: AtomicU64,
    writes: AtomicU64,
}

impl MemBacking {
    /// `len` bytes of zeros.
    #[must_use]
    pub fn new(len: u64) -> Self {
        Self {
            data: RwLock::new(vec![0; usize::try_from(len).unwrap_or(usize::MAX)]),
            flushes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// A copy of `len` bytes at `off` (for tests).
    #[must_use]
    pub fn to_vec(&self, off: u64, len: usize) -> Vec<u8> {
        let data = self.data.read();
        let start = usize::try_from(off).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        data[start..end].to_vec()
    }

    /// Flushes so far.
    #[must_use]
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Writes so far (write_at calls).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn range(&self, off: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        check(off, len, self.size())?;
        // Checked against the Vec's length just above.
        #[allow(clippy::cast_possible_truncation)]
        Ok(off as usize..(off + len) as usize)
    }
}

impl Backing for MemBacking {
    fn size(&self) -> u64 {
        self.data.read().len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(off, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.read()[r]);
        Ok(())
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        let r = self.range(off, data.len() as u64)?;
        // Checked: `data` may be the cache media's own mapped bytes (see
        // `Backing::write_many`).
        crate::media::copy_checked(&mut self.data.write()[r], data)
            .map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        let r = self.range(off, len)?;
        self.data.write()[r].fill(0);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("memory ({} bytes)", self.size())
    }
}
