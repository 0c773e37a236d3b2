//! The request paths: write, read (hits, misses and miss fills) and zeroing.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::index::Extent;
use crate::log::Space;
use crate::media::MediaError;
use pcache_format::kset::KEY_FLAG_CLEAN;
use pcache_format::layout::{self, CachePos, SUBTREE_SIZE};
use pcache_format::{pcache_crc, Key};
use std::cell::Cell;
use std::io;

/// Zeros for discard and write-zeroes, written through the cache in pieces this large.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Staged keys and found extents are kept in per-thread buffers between requests, so the
/// request paths allocate nothing in the common case. A buffer that grew past this many
/// entries (a huge request) is dropped rather than kept.
const KEEP_BUF: usize = 64;

thread_local! {
    /// [`Inner::stage`]'s result vector, recycled by [`recycle_staged`].
    static STAGED: Cell<Vec<(Key, Space)>> = const { Cell::new(Vec::new()) };
    /// The extents [`Inner::read_region`] looks at.
    static EXTENTS: Cell<Vec<(u32, Extent)>> = const { Cell::new(Vec::new()) };
}

/// Returns a vector from [`Inner::stage`] for the next request of this thread.
fn recycle_staged(mut v: Vec<(Key, Space)>) {
    if v.capacity() <= KEEP_BUF {
        v.clear();
        STAGED.set(v);
    }
}

/// Where a write's bytes come from: `src(at, dst)` fills all of `dst` with the request's
/// bytes from byte `at` of the request on (see [`crate::Cache::write_with`]).
pub(crate) type Source<'a> = dyn FnMut(u64, &mut [u8]) -> io::Result<()> + 'a;

/// A [`Source`] that copies out of `data`.
pub(crate) fn copy_from(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> io::Result<()> + '_ {
    move |at, dst| {
        let piece = usize::try_from(at)
            .ok()
            .and_then(|at| data.get(at..))
            .and_then(|rest| rest.get(..dst.len()))
            .ok_or_else(|| io::Error::other("piece outside the source buffer"))?;
        dst.copy_from_slice(piece);
        Ok(())
    }
}

/// Length of the piece of `[off, off + left)` that stays inside one 4 MiB region.
fn piece_len(off: u64, left: usize) -> usize {
    // At most 4 MiB.
    #[allow(clippy::cast_possible_truncation)]
    let to_end = layout::bytes_to_subtree_end(off) as usize;
    left.min(to_end)
}

impl Inner {
    /// Fills fresh cache space with `len` bytes from `src` (the first of them being byte
    /// `src_at` of the request) and returns their keys (not yet logged). The data is
    /// flushed; the caller fences (D1) before logging the keys.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        q: usize,
        off: u64,
        len: usize,
        src: &mut Source<'_>,
        src_at: u64,
        flags: u32,
        wait: bool,
    ) -> Result<Vec<(Key, Space)>> {
        let mut staged = STAGED.take();
        staged.clear();
        let mut done = 0usize;
        let r = (|| {
            while done < len {
                let cur = off + done as u64;
                // Pieces are at most 4 MiB.
                #[allow(clippy::cast_possible_truncation)]
                let want = piece_len(cur, len - done) as u32;
                let Some(space) = self.alloc_data(q, want, wait)? else {
                    break;
                };
                let n = space.len as usize;
                let abs = self.abs(space.pos)?;
                staged.push((
                    Key {
                        off: cur,
                        len: space.len,
                        flags,
                        pos: space.pos,
                        seg_gen: space.gen,
                        data_crc: 0,
                    },
                    space,
                ));
                // The bytes go straight into the cache space; the CRC is of what landed.
                let at = src_at + done as u64;
                let with_crc = self.data_crc;
                let mut crc = 0;
                self.media
                    .fill(abs, n, &mut |dst| {
                        src(at, dst)?;
                        if with_crc {
                            crc = pcache_crc(dst);
                        }
                        Ok(())
                    })
                    .map_err(|e| match e {
                        MediaError::Source(source) => EngineError::WriteSource {
                            off: cur,
                            len: n as u64,
                            source,
                        },
                        e => EngineError::media("write data")(e),
                    })?;
                if let Some((key, _)) = staged.last_mut() {
                    key.data_crc = crc;
                }
                self.media.flush(abs, u64::from(space.len));
                done += n;
            }
            Ok(())
        })();
        if let Err(e) = r {
            for (_, s) in &staged {
                let _ = self.release_space(s);
            }
            recycle_staged(staged);
            return Err(e);
        }
        Ok(staged)
    }

    /// Writes `len` bytes at `off`, taken from `src` piece by piece as they go into the
    /// cache (each byte of the request is asked for once, in order, unless a step fails).
    pub(crate) fn write(
        &self,
        q: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut Source<'_>,
    ) -> Result<()> {
        self.check_request(off, len as u64)?;
        if len == 0 {
            return Ok(());
        }
        let q = self.queue(q);
        // Region by region (a 4 MiB piece, split further at a segment end): each piece is
        // logged before the next takes space, so even a write larger than the cache only
        // ever waits for space that earlier pieces' writeback can free.
        let mut done = 0;
        while done < len {
            let cur = off + done as u64;
            let n = piece_len(cur, len - done);
            let staged = self.stage(q, cur, n, src, done as u64, 0, true)?;
            let r = self.log_staged(&staged, n, fua);
            recycle_staged(staged);
            r?;
            done += n;
        }
        Ok(())
    }

    /// The rest of [`Inner::write`] once the data is staged: D1, then the keys.
    fn log_staged(&self, staged: &[(Key, Space)], len: usize, fua: bool) -> Result<()> {
        // D1: the data is durable before any key that points at it can be.
        self.media.fence();
        if let Err(e) = self.media.check() {
            for (_, s) in staged {
                let _ = self.release_space(s);
            }
            return Err(EngineError::media("flush data")(e));
        }
        for (i, (key, _)) in staged.iter().enumerate() {
            if let Err(e) = self.commit(key, None) {
                for (_, s) in &staged[i + 1..] {
                    let _ = self.release_space(s);
                }
                return Err(e);
            }
        }
        self.counters.write(len as u64);
        if fua {
            // The ksets the keys went to, each closed once, in the order first used.
            let mut touched: Vec<usize> = Vec::with_capacity(2);
            for (key, _) in staged {
                let ki = layout::kset_index(key.off, self.ksets.len() as u32) as usize;
                if !touched.contains(&ki) {
                    touched.push(ki);
                }
            }
            for ki in touched {
                let mut ks = self.ksets[ki].lock();
                self.close_kset(&mut ks)?;
            }
        }
        Ok(())
    }

    /// Writes zeros over a range, through the cache, so no older data of it survives in
    /// the cache or in replay, and writeback zeroes the backing in log order. With
    /// `durable`, the zero keys are durable before this returns (a discard passed on to the
    /// backing device must never be followed, after a crash, by older cached data that
    /// GC later drops, uncovering the discarded backing).
    pub(crate) fn zero_range(&self, off: u64, len: u64, durable: bool) -> Result<()> {
        self.check_request(off, len)?;
        let mut done = 0;
        while done < len {
            // At most 1 MiB.
            #[allow(clippy::cast_possible_truncation)]
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            let at = off + done;
            // Spread over the queues by region, as the ksets are.
            #[allow(clippy::cast_possible_truncation)]
            let q = (at >> layout::SUBTREE_SHIFT) as u32;
            self.write(q, at, n, durable, &mut copy_from(&ZEROS[..n]))?;
            done += n as u64;
        }
        Ok(())
    }

    pub(crate) fn read(&self, q: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        self.check_request(off, buf.len() as u64)?;
        let q = self.queue(q);
        let mut done = 0;
        let mut exts = EXTENTS.take();
        let mut r = Ok(());
        while done < buf.len() && r.is_ok() {
            let cur = off + done as u64;
            let n = piece_len(cur, buf.len() - done);
            r = self.read_region(q, cur, &mut buf[done..done + n], &mut exts);
            done += n;
        }
        if exts.capacity() <= KEEP_BUF {
            exts.clear();
            EXTENTS.set(exts);
        }
        r
    }

    /// Reads inside one 4 MiB region.
    fn read_region(
        &self,
        q: usize,
        off: u64,
        buf: &mut [u8],
        exts: &mut Vec<(u32, Extent)>,
    ) -> Result<()> {
        let (tree, rel) = self
            .index
            .subtree(off)
            .ok_or_else(|| EngineError::Inconsistent(format!("{off:#x} outside the index")))?;
        let base = off - u64::from(rel);
        // Inside one region: fits.
        #[allow(clippy::cast_possible_truncation)]
        let end = rel + buf.len() as u32;
        exts.clear();
        let epoch = {
            let t = tree.read();
            t.overlapping(rel, end, exts);
            t.epoch
        };
        let mut misses: Vec<(u32, u32)> = Vec::new();
        let mut stale: Vec<(u32, Extent)> = Vec::new();
        let mut cursor = rel;
        let mut hit_bytes = 0u64;
        for &(s, e) in exts.iter() {
            let es = s.max(rel);
            let ee = (s + e.len()).min(end);
            if es > cursor {
                misses.push((cursor, es));
            }
            let dst = &mut buf[(es - rel) as usize..(ee - rel) as usize];
            if self.read_hit(&e, e.seg_off + (es - s), base + u64::from(es), dst)? {
                hit_bytes += u64::from(ee - es);
            } else {
                stale.push((s, e));
                misses.push((es, ee));
            }
            cursor = ee;
        }
        if cursor < end {
            misses.push((cursor, end));
        }
        if !stale.is_empty() {
            let mut t = tree.write();
            for (s, e) in &stale {
                t.remove_if_same(*s, e);
            }
        }
        self.counters.hit(hit_bytes);
        let mut miss_bytes = 0;
        for &(s, e) in &misses {
            let dst = &mut buf[(s - rel) as usize..(e - rel) as usize];
            let at = base + u64::from(s);
            self.backing.read_at(at, dst).map_err(EngineError::backing(
                "read",
                at,
                dst.len() as u64,
            ))?;
            miss_bytes += u64::from(e - s);
        }
        self.counters.miss(miss_bytes);
        if !misses.is_empty() && !self.read_only && !self.has_failed() {
            for &(s, e) in &misses {
                let data = &buf[(s - rel) as usize..(e - rel) as usize];
                // The read is served either way: a fill that fails just does not cache.
                if let Err(err) = self.fill(q, base + u64::from(s), data, epoch) {
                    tracing::debug!("read-miss fill at {:#x}: {err}", base + u64::from(s));
                    break;
                }
            }
        }
        Ok(())
    }

    /// Copies a hit out of the cache. False if the extent turned out stale (its segment
    /// was invalidated): the caller reads the backing device instead.
    /// `logical` is the logical offset of the byte at `from`, for errors.
    fn read_hit(&self, e: &Extent, from: u32, logical: u64, dst: &mut [u8]) -> Result<bool> {
        let Some(gen) = self.segs.read_gen(e.seg) else {
            return Ok(false);
        };
        if !e.is_live(*gen) {
            return Ok(false);
        }
        let abs = self.abs(CachePos::new(e.seg, from))?;
        self.media
            .read(abs, dst)
            .map_err(EngineError::media("read data"))?;
        if self.data_crc {
            // The kernel never checks data CRCs on reads; we check the whole key the
            // bytes belong to.
            let (start, len, crc) = self.segs.key_crc(e.seg, from).ok_or_else(|| {
                EngineError::Inconsistent(format!("no data CRC for cache data at {}:{from}", e.seg))
            })?;
            let mut whole = vec![0; len as usize];
            self.media
                .read(self.abs(CachePos::new(e.seg, start))?, &mut whole)
                .map_err(EngineError::media("read data"))?;
            if pcache_crc(&whole) != crc {
                self.counters.error();
                return Err(EngineError::DataCrc {
                    off: logical - u64::from(from - start),
                    len,
                    pos: CachePos::new(e.seg, start),
                });
            }
        }
        Ok(true)
    }

    /// Caches data just read from the backing device, as CLEAN keys, unless a write
    /// reached the region since the read looked at the index (`epoch`). Never waits for
    /// space.
    fn fill(&self, q: usize, off: u64, data: &[u8], epoch: u64) -> Result<()> {
        debug_assert!(off % SUBTREE_SIZE + data.len() as u64 <= SUBTREE_SIZE);
        let staged = self.stage(
            q,
            off,
            data.len(),
            &mut copy_from(data),
            0,
            KEY_FLAG_CLEAN,
            false,
        )?;
        let r = self.log_fill(&staged, epoch);
        recycle_staged(staged);
        r
    }

    /// The rest of [`Inner::fill`] once the data is staged: D1, then the keys.
    fn log_fill(&self, staged: &[(Key, Space)], epoch: u64) -> Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        // D1: the copy is durable before its key can be.
        self.media.fence();
        let ok = self.media.check().is_ok();
        for (key, space) in staged {
            if !ok || !self.commit(key, Some(epoch))? {
                self.release_space(space)?;
            }
        }
        Ok(())
    }
}
