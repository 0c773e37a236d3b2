//! Writes whose data the caller moves into the cache itself: zero copy.
//!
//! On a pmem block device ([`crate::media::BlockMedia`]) the engine's own write of the
//! data is an `O_DIRECT` `pwritev2` from a buffer the caller filled first: two copies and
//! a system call. A frontend that holds the request's pages in the kernel (ublk's
//! `UBLK_F_AUTO_BUF_REG` registers them as an io_uring fixed buffer) can instead write
//! them to the device with one `WRITE_FIXED` from its own ring, beside its other I/O:
//! the data moves once, by the pmem driver's copy, and no system call of its own.
//!
//! The write is then split in three:
//! 1. [`Cache::stage_direct`] takes cache space for the request and says where on the
//!    device each piece of it goes ([`DirectPiece`]); nobody can see that space yet;
//! 2. the caller writes each piece there with `RWF_DSYNC` (`REQ_FUA`): durable once it
//!    completed (step D1 of docs/design.md: the data is durable before any key that
//!    points at it);
//! 3. [`Cache::commit_direct`] logs the keys as [`Cache::write`] does once its data is
//!    durable (D1's fence has nothing left to do); or [`Cache::abort_direct`] (or a drop)
//!    gives the space back, if a piece failed.
//!
//! Only a write that goes to the cache alone can be staged: none when the media has no
//! direct access, the cache keeps data CRCs (they need the bytes), the mode sends writes
//! to the backing device too, a sequential cutoff is set (the stream is followed per
//! request), the request crosses a 4 MiB region, or no space is free right now (staging
//! never waits: the caller may hold other staged writes, whose space a wait could need).
//! [`Cache::stage_direct`] then says so, and the caller writes as usual.

use std::sync::Arc;

use pcache_format::layout;

use crate::cache::{Cache, Inner};
use crate::error::Result;
use crate::log::Space;
use crate::media::Direct;
use pcache_format::Key;

/// Where one piece of a staged write goes: bytes `[at, at + len)` of the request, to
/// byte `dev_off` of the device ([`Direct::fd`]), which is byte `media_off` of the cache
/// media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectPiece {
    /// Offset on the device.
    pub dev_off: u64,
    /// Offset on the cache media (for [`Cache::write_direct_piece`]).
    pub media_off: u64,
    /// Offset in the request.
    pub at: u64,
    /// Length in bytes (a multiple of the device's block).
    pub len: u32,
}

/// A write staged by [`Cache::stage_direct`]: its space is taken, its keys not logged.
/// Dropping it without [`Cache::commit_direct`] gives the space back, as
/// [`Cache::abort_direct`] does.
#[derive(Debug)]
pub struct DirectWrite {
    inner: Arc<Inner>,
    off: u64,
    len: usize,
    staged: Vec<(Key, Space)>,
    pieces: Vec<DirectPiece>,
    /// Handed to the caller: a drop without a commit is an abort (`direct_aborts`).
    handed: bool,
}

impl DirectWrite {
    /// The pieces, in request order; they cover the request exactly once.
    #[must_use]
    pub fn pieces(&self) -> &[DirectPiece] {
        &self.pieces
    }

    /// The request's offset on the cached device.
    #[must_use]
    pub fn off(&self) -> u64 {
        self.off
    }

    /// The request's length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the request is empty (never: staging refuses empty writes).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn release(&mut self) {
        if self.handed && !self.staged.is_empty() {
            self.inner.health.counters.direct(false);
        }
        for (_, s) in self.staged.drain(..) {
            let _ = self.inner.release_space(&s);
        }
    }
}

impl Drop for DirectWrite {
    fn drop(&mut self) {
        self.release();
    }
}

impl Cache {
    /// How the cache media may be written directly, if it may
    /// ([`CacheMedia::direct`](crate::media::CacheMedia::direct)); `None` also for a
    /// read-only cache.
    #[must_use]
    pub fn direct(&self) -> Option<Direct> {
        if self.inner.read_only {
            return None;
        }
        self.inner.media.direct()
    }

    /// Stages a write of `len` bytes at `off` (on behalf of queue `queue`) whose data the
    /// caller moves into the cache itself (see the module's documentation): `Ok(None)`
    /// when this write cannot be staged, and the caller writes it with [`Cache::write`]
    /// or [`Cache::write_with`] instead.
    ///
    /// # Errors
    /// A bad request, a read-only, closed or failed cache.
    pub fn stage_direct(&self, queue: u32, off: u64, len: usize) -> Result<Option<DirectWrite>> {
        let inner = &self.inner;
        inner.check_writable()?;
        inner.check_request(off, len as u64)?;
        let Some(direct) = inner.media.direct() else {
            return Ok(None);
        };
        let within_region = layout::bytes_to_subtree_end(off) >= len as u64;
        if len == 0
            || !(len as u64).is_multiple_of(direct.block)
            || !within_region
            || inner.data_crc
            || !inner.policy.mode().keeps_dirty()
            || inner.policy.cutoff().write != 0
        {
            return Ok(None);
        }
        let q = inner.queue(queue);
        let mut w = DirectWrite {
            inner: Arc::clone(inner),
            off,
            len,
            staged: Vec::with_capacity(2),
            pieces: Vec::with_capacity(2),
            handed: false,
        };
        let mut done = 0usize;
        while done < len {
            // Inside one region: at most 4 MiB.
            #[allow(clippy::cast_possible_truncation)]
            let want = (len - done) as u32;
            let Some(space) = inner.alloc_data(q, want, false)? else {
                return Ok(None);
            };
            let media_off = inner.reader().abs(space.pos)?;
            let piece = DirectPiece {
                dev_off: direct.base + media_off,
                media_off,
                at: done as u64,
                len: space.len,
            };
            let cur = off + done as u64;
            done += space.len as usize;
            w.staged.push((
                Key {
                    off: cur,
                    len: space.len,
                    flags: 0,
                    pos: space.pos,
                    seg_gen: space.gen,
                    data_crc: 0,
                },
                space,
            ));
            if !piece.dev_off.is_multiple_of(direct.block)
                || !u64::from(piece.len).is_multiple_of(direct.block)
            {
                return Ok(None);
            }
            w.pieces.push(piece);
        }
        w.handed = true;
        Ok(Some(w))
    }

    /// Logs a staged write whose every piece the caller wrote and saw complete with
    /// `RWF_DSYNC` (so its data is durable: D1). Then the write is done as a
    /// [`Cache::write`] is: its keys durable after the next FLUSH, or now with `fua`.
    ///
    /// # Errors
    /// As [`Cache::write`]. The space is given back on failure.
    pub fn commit_direct(&self, mut w: DirectWrite, fua: bool) -> Result<()> {
        // A failed check leaves the space with `w`, whose drop gives it back.
        self.inner.check_writable()?;
        self.inner.health.counters.write_request();
        // From here on the keys own the space (`log_staged` gives back what it did not
        // log when it fails).
        let staged = std::mem::take(&mut w.staged);
        self.inner.log_staged(&staged, w.len, fua)?;
        self.inner.health.counters.direct(true);
        Ok(())
    }

    /// Gives back the space of a staged write (a piece failed).
    pub fn abort_direct(&self, w: DirectWrite) {
        drop(w);
    }

    /// Writes `data` as piece `i` of `w` through the cache media's own write, durable
    /// when it returns: what a caller with no descriptor of its own does ([`Direct::fd`]
    /// is `None`, as in the simulated power cuts), and a test's stand-in for the
    /// caller's `WRITE_FIXED`.
    ///
    /// # Errors
    /// A piece that is not `w`'s, `data` of another length, media errors.
    pub fn write_direct_piece(&self, w: &DirectWrite, i: usize, data: &[u8]) -> Result<()> {
        let p = w.pieces.get(i).ok_or_else(|| {
            crate::EngineError::InvalidArgument(format!("no piece {i} in this write"))
        })?;
        if data.len() != p.len as usize {
            return Err(crate::EngineError::InvalidArgument(format!(
                "piece {i} is {} bytes, not {}",
                p.len,
                data.len()
            )));
        }
        let media = &self.inner.media;
        media
            .write(p.media_off, data)
            .map_err(crate::EngineError::media("write data"))?;
        // D1: the piece is durable before `commit_direct` can log its key (what
        // `RWF_DSYNC` does for the caller's own write).
        media.flush(p.media_off, u64::from(p.len));
        media.fence();
        Ok(())
    }
}
