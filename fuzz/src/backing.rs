//! A backing device of any size in memory that stores only the 4 KiB pages written (the
//! rest reads as zeros), so a hostile image may name keys anywhere on a large device.

use pcache_engine::backing::Backing;
use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

const PAGE: u64 = 4096;

/// A sparse backing device.
#[derive(Debug)]
pub struct SparseBacking {
    size: u64,
    pages: Mutex<BTreeMap<u64, Box<[u8; PAGE as usize]>>>,
}

impl SparseBacking {
    /// `size` bytes of zeros.
    #[must_use]
    pub fn new(size: u64) -> Self {
        Self {
            size,
            pages: Mutex::new(BTreeMap::new()),
        }
    }

    fn check(&self, off: u64, len: u64) -> io::Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{off:#x}+{len:#x} is outside the backing device"),
            )),
        }
    }

    /// Calls `f(page number, offset in page, range of the request)` for each page piece
    /// of `[off, off + len)`.
    fn pieces(off: u64, len: usize, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut done = 0usize;
        while done < len {
            let at = off + done as u64;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(len - done);
            f(at / PAGE, in_page, done..done + n);
            done += n;
        }
    }
}

impl Backing for SparseBacking {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(off, buf.len() as u64)?;
        let pages = self
            .pages
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Self::pieces(off, buf.len(), |n, at, r| {
            let len = r.len();
            match pages.get(&n) {
                Some(p) => buf[r].copy_from_slice(&p[at..at + len]),
                None => buf[r].fill(0),
            }
        });
        Ok(())
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.check(off, data.len() as u64)?;
        let mut pages = self
            .pages
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Self::pieces(off, data.len(), |n, at, r| {
            let len = r.len();
            let p = pages
                .entry(n)
                .or_insert_with(|| Box::new([0; PAGE as usize]));
            p[at..at + len].copy_from_slice(&data[r]);
        });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        self.check(off, len)?;
        let mut pages = self
            .pages
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        Self::pieces(off, len, |n, at, r| {
            if let Some(p) = pages.get_mut(&n) {
                p[at..at + r.len()].fill(0);
            }
        });
        Ok(())
    }
}
