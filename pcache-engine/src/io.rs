//! The request paths: write, read (hits, misses and miss fills) and zeroing.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::index::Extent;
use crate::log::{Commit, Space};
use crate::media::MediaError;
use crate::mutants::{skip, Step};
use crate::through::Through;
use pcache_format::kset::KEY_FLAG_CLEAN;
use pcache_format::layout::{self, CachePos, SUBTREE_SIZE};
use pcache_format::CacheMode;
use pcache_format::{pcache_crc, Key};
use std::cell::Cell;
use std::io;

/// Zeros for discard and write-zeroes, written through the cache in pieces this large.
pub(crate) static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Staged keys and found extents are kept in per-thread buffers between requests, so the
/// request paths allocate nothing in the common case. A buffer that grew past this many
/// entries (a huge request) is dropped rather than kept.
const KEEP_BUF: usize = 64;

/// A miss buffer that grew past this many bytes is dropped rather than kept.
const KEEP_MISS_BUF: usize = 1 << 20;

thread_local! {
    /// [`Inner::stage`]'s result vector, recycled by [`recycle_staged`].
    static STAGED: Cell<Vec<(Key, Space)>> = const { Cell::new(Vec::new()) };
    /// The extents [`Inner::read_region`] looks at.
    static EXTENTS: Cell<Vec<(u32, Extent)>> = const { Cell::new(Vec::new()) };
    /// Where [`Inner::read_misses`] puts backing data for a sink.
    static MISS_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Returns a vector from [`Inner::stage`] for the next request of this thread.
pub(crate) fn recycle_staged(mut v: Vec<(Key, Space)>) {
    if v.capacity() <= KEEP_BUF {
        v.clear();
        STAGED.set(v);
    }
}

/// Where a write's bytes come from: `src(at, dst)` fills all of `dst` with the request's
/// bytes from byte `at` of the request on (see [`crate::Cache::write_with`]).
pub(crate) type Source<'a> = dyn FnMut(u64, &mut [u8]) -> io::Result<()> + 'a;

/// Where a read's bytes go (see [`crate::Cache::read_with`]): `sink(at, bytes)` takes
/// the request's bytes from byte `at` of the request on.
pub(crate) type Sink<'a> = dyn FnMut(u64, &[u8]) -> io::Result<()> + 'a;

/// Where a read's bytes go.
pub(crate) enum Dest<'a, 'b> {
    /// Into this buffer, which is the whole request.
    Buf(&'a mut [u8]),
    /// Handed to a sink, piece by piece: hits straight from the media, misses from a
    /// per-thread buffer.
    Sink(&'a mut Sink<'b>),
}

/// The part of one 4 MiB region a read covers: region-relative `[rel, end)`, the region
/// starting at logical `base`, its first byte being byte `at` of the request.
struct Region {
    base: u64,
    rel: u32,
    end: u32,
    at: usize,
}

impl Region {
    /// Byte of the request that region-relative byte `r` is.
    fn at_of(&self, r: u32) -> usize {
        self.at + (r - self.rel) as usize
    }

    /// The part of extent `(s, e)` (region-relative start) inside the read.
    fn clip(&self, (s, e): (u32, Extent)) -> (u32, u32) {
        (s.max(self.rel), (s + e.len()).min(self.end))
    }
}

/// Whether a failed read of cached bytes is one the backing device can stand in for,
/// when the bytes are CLEAN (the backing device holds the same): a media error (machine
/// check, truncated cache file) or a data CRC mismatch.
fn recoverable(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::DataCrc { .. }
            | EngineError::Media {
                source: MediaError::Poisoned { .. },
                ..
            }
    )
}

/// Whether a sink failed because it could not read the bytes lent to it (`EFAULT`, as
/// `write(2)` reports it): for a hit, the cache media's bytes are unreadable.
fn sink_could_not_read(err: &EngineError) -> bool {
    matches!(err, EngineError::ReadSink { source, .. } if source.raw_os_error() == Some(libc::EFAULT))
}

/// A piece of a run being gathered: logical `[start, stop)` of the region, stored from
/// `from` on in the run's segment, made of the run's extents from index `first` on.
#[derive(Clone, Copy)]
struct Piece {
    start: u32,
    stop: u32,
    from: u32,
    first: usize,
}

impl Piece {
    fn new(start: u32, stop: u32, from: u32, first: usize) -> Self {
        Piece {
            start,
            stop,
            from,
            first,
        }
    }
}

/// Where [`Inner::read_run`] sends extents to read from the backing device instead.
struct Miss<'a> {
    stale: &'a mut Vec<(u32, Extent)>,
    misses: &'a mut Vec<(u32, u32)>,
}

/// Whether extent `b` (region-relative start, extent) starts where `a` ends, both
/// logically and in the same segment, so that both can be served as one piece.
fn follows(a: (u32, Extent), b: (u32, Extent)) -> bool {
    a.0 + a.1.len() == b.0 && a.1.seg == b.1.seg && a.1.seg_off + a.1.len() == b.1.seg_off
}

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

/// Runs `f` with this thread's extent buffer ([`EXTENTS`]), and keeps the buffer for the
/// next request unless it grew past [`KEEP_BUF`].
pub(crate) fn with_extents<T>(f: impl FnOnce(&mut Vec<(u32, Extent)>) -> T) -> T {
    let mut exts = EXTENTS.take();
    let r = f(&mut exts);
    if exts.capacity() <= KEEP_BUF {
        exts.clear();
        EXTENTS.set(exts);
    }
    r
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
    pub(crate) fn stage(
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
                let abs = self.reader().abs(space.pos)?;
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
                if !skip(Step::D1) {
                    self.media.flush(abs, u64::from(space.len));
                }
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
        self.write_inner(q, off, len, fua, src, false)
    }

    /// [`Inner::write`]; `zeros`: the bytes are zeros (write zeroes, discard).
    pub(crate) fn write_inner(
        &self,
        q: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut Source<'_>,
        zeros: bool,
    ) -> Result<()> {
        self.check_request(off, len as u64)?;
        if len == 0 {
            return Ok(());
        }
        let q = self.queue(q);
        self.health.counters.write_request();
        // Where the write goes: the cache alone (writeback, writeonly) or the backing
        // device too (the others, and a stream past the sequential cutoff).
        let mode = self.policy.mode();
        let bypass = self.policy.bypass(q, off, len as u64, true);
        if bypass {
            self.health.counters.bypassed(len as u64, true);
        }
        let via_backing = bypass || !mode.keeps_dirty();
        let through = !bypass && mode == CacheMode::Writethrough;
        // Region by region (a 4 MiB piece, split further at a segment end): each piece is
        // logged before the next takes space, so even a write larger than the cache only
        // ever waits for space that earlier pieces' writeback can free.
        let mut done = 0;
        while done < len {
            let cur = off + done as u64;
            let n = piece_len(cur, len - done);
            if via_backing {
                let r = self.write_through(q, cur, n, src, done as u64, fua, through, zeros)?;
                if matches!(r, Through::Done) {
                    done += n;
                    continue;
                }
            }
            let staged = self.stage(q, cur, n, src, done as u64, 0, true)?;
            let r = self.log_staged(&staged, n, fua);
            recycle_staged(staged);
            r?;
            done += n;
        }
        Ok(())
    }

    /// The rest of [`Inner::write`] once the data is staged: D1, then the keys.
    pub(crate) fn log_staged(&self, staged: &[(Key, Space)], len: usize, fua: bool) -> Result<()> {
        // D1: the data is durable before any key that points at it can be.
        if !skip(Step::D1) {
            self.media.fence();
        }
        if let Err(e) = self.media.check() {
            for (_, s) in staged {
                let _ = self.release_space(s);
            }
            return Err(EngineError::media("flush data")(e));
        }
        // The region's write lock: a write reaching the backing device in this region
        // (through.rs) is not between its look at the index and its commit.
        let _region = staged
            .first()
            .map(|(key, _)| self.index.write_lock(key.off));
        for (i, (key, _)) in staged.iter().enumerate() {
            if let Err(e) = self.commit(key, Commit::Write) {
                for (_, s) in &staged[i + 1..] {
                    let _ = self.release_space(s);
                }
                return Err(e);
            }
        }
        self.health.counters.write(len as u64);
        if fua {
            // The ksets the keys went to, each closed once, in the order first used.
            let mut touched: Vec<usize> = Vec::with_capacity(2);
            for (key, _) in staged {
                let ki = layout::kset_index(key.off, self.log.ksets.len() as u32) as usize;
                if !touched.contains(&ki) {
                    touched.push(ki);
                }
            }
            for ki in touched {
                let mut ks = self.log.ksets[ki].lock();
                self.close_kset(&mut ks)?;
            }
        }
        Ok(())
    }

    pub(crate) fn read(&self, q: u32, off: u64, len: usize, dest: &mut Dest<'_, '_>) -> Result<()> {
        if let Dest::Buf(buf) = dest {
            if buf.len() != len {
                return Err(EngineError::Inconsistent(format!(
                    "read of {len:#x} bytes into a buffer of {:#x}",
                    buf.len()
                )));
            }
        }
        self.check_request(off, len as u64)?;
        let q = self.queue(q);
        // Misses are cached unless the mode says not to, or the read continues a stream
        // past the sequential cutoff.
        let bypass = self.policy.bypass(q, off, len as u64, false);
        let fill = self.policy.mode().fills() && !bypass;
        let mut missed = false;
        let r = with_extents(|exts| {
            let mut done = 0;
            while done < len {
                let cur = off + done as u64;
                let n = piece_len(cur, len - done);
                missed |= self.read_region(q, cur, done, n, dest, exts, fill)?;
                done += n;
            }
            Ok(())
        });
        if bypass && missed {
            self.health.counters.bypassed(len as u64, false);
        }
        self.health.counters.read(!missed);
        r
    }

    /// Whether every byte of `[off, off + len)` is held by an extent of the index, so a
    /// read of it will not wait for the backing device (unless an extent turns out stale
    /// or its data CRC fails). A hint for a frontend choosing where to run a read.
    pub(crate) fn is_cached(&self, off: u64, len: u64) -> bool {
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        if self.check_request(off, len as u64).is_err() {
            return false;
        }
        with_extents(|exts| {
            let mut done = 0;
            while done < len {
                let cur = off + done as u64;
                let n = piece_len(cur, len - done);
                let Some((tree, rel)) = self.index.subtree(cur) else {
                    return false;
                };
                // Inside one region: fits.
                #[allow(clippy::cast_possible_truncation)]
                let end = rel + n as u32;
                exts.clear();
                tree.read().overlapping(rel, end, exts);
                let mut cursor = rel;
                for &(s, e) in exts.iter() {
                    if s > cursor {
                        break;
                    }
                    cursor = cursor.max(s + e.len());
                }
                if cursor < end {
                    return false;
                }
                done += n;
            }
            true
        })
    }

    /// Reads the `len` bytes at `off`, inside one 4 MiB region, which are bytes
    /// `[at, at + len)` of the request; misses are cached when `fill`. True when some
    /// bytes came from the backing device.
    #[allow(clippy::too_many_arguments)]
    fn read_region(
        &self,
        q: usize,
        off: u64,
        at: usize,
        len: usize,
        dest: &mut Dest<'_, '_>,
        exts: &mut Vec<(u32, Extent)>,
        fill: bool,
    ) -> Result<bool> {
        let (tree, rel) = self
            .index
            .subtree(off)
            .ok_or_else(|| EngineError::Inconsistent(format!("{off:#x} outside the index")))?;
        let base = off - u64::from(rel);
        // Inside one region: fits.
        #[allow(clippy::cast_possible_truncation)]
        let end = rel + len as u32;
        exts.clear();
        let epoch = {
            let t = tree.read();
            t.overlapping(rel, end, exts);
            t.epoch
        };
        let region = Region { base, rel, end, at };
        let mut misses: Vec<(u32, u32)> = Vec::new();
        let mut stale: Vec<(u32, Extent)> = Vec::new();
        let mut cursor = rel;
        let mut hit_bytes = 0u64;
        let mut i = 0;
        while i < exts.len() {
            let (s, _) = exts[i];
            let es = s.max(rel);
            if es > cursor {
                misses.push((cursor, es));
            }
            // A run: extents that follow each other both logically and in one segment,
            // handed out as one piece.
            let mut j = i + 1;
            while j < exts.len() && follows(exts[j - 1], exts[j]) {
                j += 1;
            }
            hit_bytes += self.read_run(&exts[i..j], &region, dest, &mut stale, &mut misses)?;
            let (ls, le) = exts[j - 1];
            cursor = (ls + le.len()).min(end);
            i = j;
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
        self.health.counters.hit(hit_bytes);
        if misses.is_empty() {
            return Ok(false);
        }
        misses.sort_unstable();
        let mut spare = match dest {
            Dest::Buf(_) => Vec::new(),
            Dest::Sink(_) => MISS_BUF.take(),
        };
        let r = self.read_misses(q, &misses, &region, dest, epoch, fill, &mut spare);
        if spare.capacity() <= KEEP_MISS_BUF {
            MISS_BUF.set(spare);
        }
        r.map(|()| true)
    }

    /// Serves the misses of a region from the backing device and caches them (when
    /// `fill`).
    #[allow(clippy::too_many_arguments)]
    fn read_misses(
        &self,
        q: usize,
        misses: &[(u32, u32)],
        region: &Region,
        dest: &mut Dest<'_, '_>,
        epoch: u64,
        fill: bool,
        spare: &mut Vec<u8>,
    ) -> Result<()> {
        let mut miss_bytes = 0;
        let mut filling = fill && !self.read_only && !self.health.has_failed();
        for &(s, e) in misses {
            let logical = region.base + u64::from(s);
            let at = region.at_of(s);
            let n = (e - s) as usize;
            let (data, sink): (&mut [u8], Option<&mut Sink<'_>>) = match dest {
                Dest::Buf(buf) => (&mut buf[at..at + n], None),
                Dest::Sink(sink) => {
                    spare.resize(n, 0);
                    (&mut spare[..], Some(&mut **sink))
                }
            };
            self.backing
                .read_at(logical, data)
                .map_err(EngineError::backing("read", logical, n as u64))?;
            miss_bytes += n as u64;
            if let Some(sink) = sink {
                sink(at as u64, data).map_err(|source| EngineError::ReadSink {
                    off: logical,
                    len: n as u64,
                    source,
                })?;
            }
            if filling {
                // The read is served either way: a fill that fails just does not cache.
                if let Err(err) = self.fill(q, logical, data, epoch) {
                    tracing::debug!("read-miss fill at {logical:#x}: {err}");
                    filling = false;
                }
            }
        }
        self.health.counters.miss(miss_bytes);
        Ok(())
    }

    /// Copies (or hands to the sink) a run of hits, under one look at their segment's
    /// generation. Extents that turned out stale (their segment was invalidated) go to
    /// `stale` and their bytes to `misses`: the caller reads the backing device instead.
    /// So do CLEAN extents whose bytes cannot be read or fail their data CRC
    /// ([`recoverable`]): the backing device holds the same bytes. Returns the bytes served
    /// from the cache.
    fn read_run(
        &self,
        run: &[(u32, Extent)],
        region: &Region,
        dest: &mut Dest<'_, '_>,
        stale: &mut Vec<(u32, Extent)>,
        misses: &mut Vec<(u32, u32)>,
    ) -> Result<u64> {
        let seg = run[0].1.seg;
        let Some(gen) = self.segs.read_gen(seg) else {
            for &x in run {
                stale.push(x);
                misses.push(region.clip(x));
            }
            return Ok(0);
        };
        let mut served = 0u64;
        let mut out = Miss { stale, misses };
        // The live piece being gathered: logical [start, stop) at segment offset `from`,
        // made of `run[first..]` up to the current extent.
        let mut piece: Option<Piece> = None;
        for (k, &(s, e)) in run.iter().enumerate() {
            let (es, ee) = region.clip((s, e));
            let from = e.seg_off + (es - s);
            let failed = if !e.is_live(*gen) {
                true
            } else if self.data_crc {
                match self.verify_hit(seg, from, region.base + u64::from(es)) {
                    Ok(()) => false,
                    Err(err) if e.is_clean() && recoverable(&err) => {
                        self.redirected(&err, region.base + u64::from(es));
                        true
                    }
                    Err(err) => return Err(err),
                }
            } else {
                false
            };
            if failed {
                out.stale.push((s, e));
                out.misses.push((es, ee));
                if let Some(p) = piece.take() {
                    served += self.serve_piece(seg, p, &run[p.first..k], region, dest, &mut out)?;
                }
                continue;
            }
            piece = match piece {
                Some(p) if p.stop == es => Some(Piece { stop: ee, ..p }),
                Some(p) => {
                    served += self.serve_piece(seg, p, &run[p.first..k], region, dest, &mut out)?;
                    Some(Piece::new(es, ee, from, k))
                }
                None => Some(Piece::new(es, ee, from, k)),
            };
        }
        if let Some(p) = piece {
            served += self.serve_piece(seg, p, &run[p.first..], region, dest, &mut out)?;
        }
        drop(gen);
        Ok(served)
    }

    /// Serves a piece made of the live extents `exts`; if its bytes cannot be read and
    /// all of them are CLEAN, sends them to the backing device instead (see
    /// [`Inner::read_run`]).
    fn serve_piece(
        &self,
        seg: u32,
        p: Piece,
        exts: &[(u32, Extent)],
        region: &Region,
        dest: &mut Dest<'_, '_>,
        out: &mut Miss<'_>,
    ) -> Result<u64> {
        match self.copy_hit(seg, (p.start, p.stop, p.from), region, dest) {
            Ok(n) => Ok(n),
            Err(err)
                if (recoverable(&err) || sink_could_not_read(&err))
                    && exts.iter().all(|(_, e)| e.is_clean()) =>
            {
                self.redirected(&err, region.base + u64::from(p.start));
                for &x in exts {
                    out.stale.push(x);
                    out.misses.push(region.clip(x));
                }
                Ok(0)
            }
            Err(err) => {
                if recoverable(&err) {
                    self.health.counters.error();
                }
                Err(err)
            }
        }
    }

    /// Counts and logs a hit served from the backing device instead, after `err`.
    fn redirected(&self, err: &EngineError, logical: u64) {
        if !matches!(err, EngineError::DataCrc { .. }) {
            // verify_hit counts its own mismatches.
            self.health.counters.error();
        }
        tracing::warn!(
            "clean cache data at logical {logical:#x} is unreadable ({err}); served from the backing device"
        );
    }

    /// Copies the live bytes `[start, stop)` of a region, stored from `from` on in
    /// segment `seg`, to where the read wants them. The caller holds the segment's
    /// generation.
    fn copy_hit(
        &self,
        seg: u32,
        (start, stop, from): (u32, u32, u32),
        region: &Region,
        dest: &mut Dest<'_, '_>,
    ) -> Result<u64> {
        let abs = self.reader().abs(CachePos::new(seg, from))?;
        let at = region.at_of(start);
        let n = (stop - start) as usize;
        match dest {
            Dest::Buf(buf) => self
                .media
                .read(abs, &mut buf[at..at + n])
                .map_err(EngineError::media("read data"))?,
            Dest::Sink(sink) => self
                .media
                .view(abs, n, &mut |bytes| sink(at as u64, bytes))
                .map_err(|e| match e {
                    MediaError::Source(source) => EngineError::ReadSink {
                        off: region.base + u64::from(start),
                        len: n as u64,
                        source,
                    },
                    e => EngineError::Media {
                        op: "read data",
                        source: e,
                    },
                })?,
        }
        Ok(n as u64)
    }

    /// Checks the data CRC of the key whose data holds byte `from` of segment `seg`
    /// (logical offset `logical`). The kernel never checks data CRCs on reads; we check
    /// the whole key the bytes belong to.
    fn verify_hit(&self, seg: u32, from: u32, logical: u64) -> Result<()> {
        let (start, len, crc) = self.segs.key_crc(seg, from).ok_or_else(|| {
            EngineError::Inconsistent(format!("no data CRC for cache data at {seg}:{from}"))
        })?;
        let mut whole = vec![0; len as usize];
        self.media
            .read(self.reader().abs(CachePos::new(seg, start))?, &mut whole)
            .map_err(EngineError::media("read data"))?;
        if pcache_crc(&whole) != crc {
            self.health.counters.error();
            return Err(EngineError::DataCrc {
                off: logical - u64::from(from - start),
                len,
                pos: CachePos::new(seg, start),
            });
        }
        Ok(())
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
        if !skip(Step::D1) {
            self.media.fence();
        }
        let ok = self.media.check().is_ok();
        for (key, space) in staged {
            if !ok || !self.commit(key, Commit::Fill(epoch))? {
                self.release_space(space)?;
            }
        }
        Ok(())
    }
}
