//! Writes that reach the backing device themselves: every write in writethrough,
//! writearound and passthrough, and the writes a sequential stream sends around the
//! cache. Steps WT1, WT2 and WT3 of `docs/design.md`.
//!
//! A piece of such a write (inside one 4 MiB region) holds its region's write lock
//! ([`Index::write_lock`](crate::index::Index)) until it is done, so no other write into
//! the region commits in between (and the backing device and the cache see the region's
//! writes in the same order). It moves the region's epoch on, so that no read-miss fill
//! that read the backing device before it can cache older bytes (again once its bytes
//! are on the backing device), and looks at what the cache holds of its range:
//!
//! - data not yet written back: the piece is written as writeback does (a dirty key).
//!   Writeback writes the log in order; a piece written around it could be overwritten
//!   by the older dirty data later. This only happens while a cache drains after a switch
//!   from writeback or writeonly; the mode's guarantee holds once the drain is done.
//! - nothing, and the piece does not go through the cache (writearound, passthrough, the
//!   cutoff): the bytes go to the backing device only. No key of the range exists that
//!   replay could bring back.
//! - otherwise (writethrough, or a cached range): the bytes go into the cache as CLEAN
//!   keys and to the backing device, so no older cached byte is ever served.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::io::Source;
use crate::log::{Commit, Space};
use crate::mutants::{skip, Step};
use pcache_format::kset::KEY_FLAG_CLEAN;
use pcache_format::layout;
use pcache_format::Key;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Where an around write's bytes are gathered for the backing device.
    static AROUND_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The writes that reached the backing device themselves (around or through the cache,
/// not writeback), counted as they complete, and how many of them a completed backing
/// flush covers. A read-miss fill may copy bytes such a write left in the device's
/// volatile cache: while some are not known durable, its kset flushes the backing device
/// first (WT1), so that a clean key never claims bytes the backing device may lose.
#[derive(Debug, Default)]
pub(crate) struct BackingWrites {
    /// Writes completed.
    pub written: AtomicU64,
    /// Writes completed before a backing flush that completed.
    pub flushed: AtomicU64,
}

impl BackingWrites {
    /// Counts a completed write; returns the count.
    fn wrote(&self) -> u64 {
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether a completed write may not be durable yet.
    pub(crate) fn unflushed(&self) -> bool {
        self.flushed.load(Ordering::Acquire) < self.written.load(Ordering::Acquire)
    }
}

/// What a piece written through found in the cache.
pub(crate) enum Through {
    /// Done.
    Done,
    /// The range holds data not yet written back: write it as writeback does.
    AsWriteback,
}

impl Inner {
    /// Writes one piece `[off, off + n)` (inside one region; bytes `src_at..` of the
    /// request) to the backing device, and to the cache when `through` or when the range
    /// is cached (see the module documentation). `zeros`: the piece is zeros (write
    /// zeroes, discard), which the backing device writes itself.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_through(
        &self,
        q: usize,
        off: u64,
        n: usize,
        src: &mut Source<'_>,
        src_at: u64,
        fua: bool,
        through: bool,
        zeros: bool,
    ) -> Result<Through> {
        let (tree, rel) = self
            .index
            .subtree(off)
            .ok_or_else(|| EngineError::Inconsistent(format!("{off:#x} outside the index")))?;
        // Inside one region: fits.
        #[allow(clippy::cast_possible_truncation)]
        let end = rel + n as u32;
        let region = self.index.write_lock(off);
        let (cached, dirty) = {
            let mut t = tree.write();
            t.epoch += 1;
            let mut exts = Vec::new();
            t.overlapping(rel, end, &mut exts);
            let dirty = exts.iter().any(|(_, e)| !e.is_clean());
            (!exts.is_empty(), dirty)
        };
        if dirty {
            drop(region);
            return Ok(Through::AsWriteback);
        }
        if !(through || cached) {
            let r = self.write_around(off, n, src, src_at, fua, zeros);
            // A fill that looked at the index while the bytes were on their way read
            // older ones: it is dropped.
            tree.write().epoch += 1;
            r?;
            return Ok(Through::Done);
        }
        let staged = self.stage(q, off, n, src, src_at, KEY_FLAG_CLEAN, true)?;
        let r = self.log_through(&staged, fua, cached);
        drop(region);
        crate::io::recycle_staged(staged);
        r?;
        self.health.counters.through(n as u64);
        Ok(Through::Done)
    }

    /// The bytes to the backing device only.
    fn write_around(
        &self,
        off: u64,
        n: usize,
        src: &mut Source<'_>,
        src_at: u64,
        fua: bool,
        zeros: bool,
    ) -> Result<()> {
        let backing = |e| EngineError::backing("write", off, n as u64)(e);
        if zeros {
            self.backing.write_zeroes(off, n as u64).map_err(backing)?;
        } else {
            let mut buf = AROUND_BUF.take();
            buf.resize(n, 0);
            let r = src(src_at, &mut buf)
                .map_err(|source| EngineError::WriteSource {
                    off,
                    len: n as u64,
                    source,
                })
                .and_then(|()| self.backing.write_at(off, &buf).map_err(backing));
            if buf.capacity() <= 4 << 20 {
                AROUND_BUF.set(buf);
            }
            r?;
        }
        self.after_backing_write(fua)?;
        self.health.counters.through(n as u64);
        Ok(())
    }

    /// A write reached the backing device: with FUA it is made durable now (WT2);
    /// otherwise the next FLUSH flushes the backing device.
    fn after_backing_write(&self, fua: bool) -> Result<()> {
        let written = self.backing_writes.wrote();
        if fua {
            // WT2: a FUA write is durable on the backing device before it completes.
            if skip(Step::WT2) {
                return Ok(());
            }
            self.flush_backing(written)
        } else {
            Ok(())
        }
    }

    /// Counts a write (a discard, write zeroes) that reached the backing device outside
    /// [`Inner::write_through`]: the next FLUSH flushes the backing device (WT2), and a
    /// fill flushes it first (WT1).
    pub(crate) fn backing_wrote(&self) -> u64 {
        self.backing_writes.wrote()
    }

    /// Flushes the backing device, which makes the first `written` writes that reached it
    /// themselves durable (at least).
    pub(crate) fn flush_backing(&self, written: u64) -> Result<()> {
        self.backing
            .flush()
            .map_err(EngineError::backing("flush", 0, 0))?;
        self.backing_writes
            .flushed
            .fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// Makes the writes that reached the backing device themselves (not through
    /// writeback) durable there, if any did since the last time (WT2): FLUSH, and a
    /// writeback of everything (`writeback_all`, `drain`), which promise that the backing
    /// device holds every completed write.
    pub(crate) fn flush_backing_writes(&self) -> Result<()> {
        let written = self.backing_writes.written.load(Ordering::Acquire);
        if self.backing_writes.flushed.load(Ordering::Acquire) < written {
            // WT2: writes that reached the backing device are durable there when the
            // FLUSH completes.
            if skip(Step::WT2) {
                return Ok(());
            }
            self.flush_backing(written)?;
        }
        Ok(())
    }

    /// D1 for the staged CLEAN keys, their bytes to the backing device, then the keys. On
    /// an error before the keys are committed, their space is released.
    ///
    /// The keys are made durable before the write completes (WT3) when it is FUA or when
    /// the range was `cached`: the backing device now holds newer bytes than the cached
    /// ones, and a crash must not bring the older clean key back (reads would return the
    /// older bytes until GC dropped them, then the newer ones).
    fn log_through(&self, staged: &[(Key, Space)], fua: bool, cached: bool) -> Result<()> {
        if let Err(e) = self.through_data(staged, fua) {
            for (_, s) in staged {
                let _ = self.release_space(s);
            }
            return Err(e);
        }
        let mut touched: Vec<usize> = Vec::with_capacity(2);
        for (i, (key, space)) in staged.iter().enumerate() {
            match self.commit(key, Commit::Through) {
                Ok(true) => {
                    let ki = layout::kset_index(key.off, self.log.ksets.len() as u32) as usize;
                    if !touched.contains(&ki) {
                        touched.push(ki);
                    }
                }
                Ok(false) => self.release_space(space)?,
                Err(e) => {
                    for (_, s) in &staged[i + 1..] {
                        let _ = self.release_space(s);
                    }
                    return Err(e);
                }
            }
        }
        if (fua || cached) && !skip(Step::WT3) {
            // WT3: the keys are durable (after WT1 flushed the backing device) before
            // the write completes.
            for ki in touched {
                let mut ks = self.log.ksets[ki].lock();
                self.close_kset(&mut ks)?;
            }
        }
        Ok(())
    }

    /// D1 for the staged keys, then their bytes from the cache to the backing device.
    fn through_data(&self, staged: &[(Key, Space)], fua: bool) -> Result<()> {
        // D1: the cache holds the bytes durably before a key can point at them.
        if !skip(Step::D1) {
            self.media.fence();
        }
        self.media
            .check()
            .map_err(EngineError::media("flush data"))?;
        let mut buf = AROUND_BUF.take();
        let r = (|| -> Result<()> {
            for (key, space) in staged {
                buf.resize(key.len as usize, 0);
                self.media
                    .read(self.reader().abs(space.pos)?, &mut buf)
                    .map_err(EngineError::media("read data to write through"))?;
                self.backing
                    .write_at(key.off, &buf)
                    .map_err(EngineError::backing("write", key.off, u64::from(key.len)))?;
            }
            Ok(())
        })();
        if buf.capacity() <= 4 << 20 {
            AROUND_BUF.set(buf);
        }
        r?;
        self.after_backing_write(fua)
    }
}
