//! The key log: open ksets, closing them onto the media, data heads, and reading ksets
//! back. The persistence steps named here (D1, K1, K2a, K2b, L1, L2a, L2b, T1) are described in
//! `docs/design.md`.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::index::Extent;
use crate::meta::DualState;
use crate::mutants::{skip, Step};
use crate::reader::LogReader;
use crate::segments::Purpose;
use parking_lot::Mutex;
use pcache_format::kset::{encode_last_kset, KsetBuf};
use pcache_format::layout::{
    self, dirty_tail_off, key_tail_off, CachePos, KSET_HEADER_SIZE, SEG_DATA_SIZE,
};
use pcache_format::record::TailPos;
use pcache_format::Key;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A tail (key_tail or dirty_tail) and where its latest record lives.
#[derive(Debug)]
pub(crate) struct Tail {
    pub pos: CachePos,
    pub state: DualState,
}

/// The log and its tails: each queue's data head and open kset, key_head (where the next
/// kset goes), the end of the durable log, and both tails as persisted.
#[derive(Debug)]
pub(crate) struct Log {
    pub heads: Box<[Mutex<Option<DataHead>>]>,
    pub ksets: Box<[Mutex<OpenKset>]>,
    /// Where the next kset goes (held while a kset is closed).
    pub key_head: Mutex<CachePos>,
    /// The end of the durable log: writeback never reads past it.
    pub durable_head: Mutex<CachePos>,
    pub key_tail: Mutex<Tail>,
    pub dirty_tail: Mutex<Tail>,
    /// Normal ksets made durable (and dirty ones found by replay): what a drain waits for.
    pub closed: AtomicU64,
    /// Normal ksets dirty_tail has moved past since open.
    pub written: AtomicU64,
}

impl Log {
    /// The log of `queues` queues as replay left it: ending at `head`, with the tails as
    /// loaded.
    pub(crate) fn new(
        queues: usize,
        head: CachePos,
        key_tail: (CachePos, DualState),
        dirty_tail: (CachePos, DualState),
        dirty_ksets: u64,
    ) -> Self {
        let tail = |(pos, state)| Mutex::new(Tail { pos, state });
        Self {
            heads: (0..queues).map(|_| Mutex::new(None)).collect(),
            ksets: (0..queues)
                .map(|_| Mutex::new(OpenKset::default()))
                .collect(),
            key_head: Mutex::new(head),
            durable_head: Mutex::new(head),
            key_tail: tail(key_tail),
            dirty_tail: tail(dirty_tail),
            closed: AtomicU64::new(dirty_ksets),
            written: AtomicU64::new(0),
        }
    }
}

/// How a key is committed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Commit {
    /// A write: its region's epoch moves on.
    Write,
    /// A read-miss fill read under this epoch: dropped if a write came since.
    Fill(u64),
    /// A written-through (CLEAN) key, committed under its region's write lock (so no other
    /// write committed since its write looked at the index): the region's epoch moves on.
    Through,
}

/// A kset being filled in memory.
#[derive(Debug, Default)]
pub(crate) struct OpenKset {
    pub buf: KsetBuf,
    /// It holds a written-through key, or a fill of bytes a write may have left in the
    /// backing device's volatile cache: the backing device is flushed before the kset is
    /// made durable (WT1).
    pub through: bool,
    /// When the first key went in: the flusher closes the kset a second later.
    pub since: Option<Instant>,
}

/// A queue's cursor into its current data segment. It holds one reference on the segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataHead {
    pub seg: u32,
    pub off: u32,
    pub gen: u64,
}

/// Space taken for one key's data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Space {
    pub pos: CachePos,
    pub gen: u64,
    pub len: u32,
}

/// The commit word of a kset: its first 8 bytes (CRC and key count), written and made
/// durable after the rest of it (K2b, L2b), so that a torn kset always has it zero.
const COMMIT: u64 = 8;

/// How long a kset stays open after its first key (the kernel's 1 s flush delay).
pub(crate) const KSET_FLUSH_DELAY: Duration = Duration::from_secs(1);

impl Inner {
    /// The log as replay, writeback and GC read it.
    pub(crate) fn reader(&self) -> LogReader<'_> {
        LogReader {
            media: &*self.media,
            segs: &self.segs,
            backing_size: self.size,
            data_crc: self.data_crc,
        }
    }

    /// Persists a new key_tail (step T1).
    pub(crate) fn set_key_tail(&self, pos: CachePos) -> Result<()> {
        let mut t = self.log.key_tail.lock();
        let durable = !(skip(Step::T1) || skip(Step::G1));
        t.state
            .persist(&*self.media, key_tail_off, &TailPos(pos), durable)?;
        t.pos = pos;
        Ok(())
    }

    /// Persists a new dirty_tail (step T1).
    pub(crate) fn set_dirty_tail(&self, pos: CachePos) -> Result<()> {
        let mut t = self.log.dirty_tail.lock();
        let durable = !skip(Step::T1);
        t.state
            .persist(&*self.media, dirty_tail_off, &TailPos(pos), durable)?;
        t.pos = pos;
        Ok(())
    }

    /// Takes up to `want` bytes of data space from queue `q`'s data head, with a segment
    /// reference for the key. With `wait`, waits for space; otherwise `None` when full.
    ///
    /// The head's lock is not held while waiting, and a caller that does not wait (a miss
    /// fill) does not queue behind one that does.
    pub(crate) fn alloc_data(&self, q: usize, want: u32, wait: bool) -> Result<Option<Space>> {
        let lock = || {
            if wait {
                Some(self.log.heads[q].lock())
            } else {
                self.log.heads[q].try_lock()
            }
        };
        let Some(mut head) = lock() else {
            return Ok(None);
        };
        loop {
            let Some(h) = head.as_mut() else {
                match self.segs.alloc(Purpose::Data) {
                    Some(seg) => {
                        self.segs.get(seg);
                        *head = Some(DataHead {
                            seg,
                            off: 0,
                            gen: self.segs.gen(seg),
                        });
                    }
                    None if wait => {
                        drop(head);
                        self.wait_for_space(true, Purpose::Data)?;
                        let Some(h) = lock() else {
                            return Ok(None);
                        };
                        head = h;
                    }
                    None => return Ok(None),
                }
                continue;
            };
            let room = SEG_DATA_SIZE - h.off;
            let pos = CachePos::new(h.seg, h.off);
            let gen = h.gen;
            self.segs.get(h.seg);
            if room > want {
                h.off += want;
                return Ok(Some(Space {
                    pos,
                    gen,
                    len: want,
                }));
            }
            // The key takes the rest of the segment; the head lets go of it. The key's own
            // reference keeps it alive.
            let seg = h.seg;
            *head = None;
            let _ = self.segs.put(seg);
            return Ok(Some(Space {
                pos,
                gen,
                len: room,
            }));
        }
    }

    /// Gives back the reference of a key that will not be logged (an aborted fill, a
    /// failed write), invalidating the segment if it was the last one.
    pub(crate) fn release_space(&self, s: &Space) -> Result<()> {
        if self.segs.put(s.pos.seg) {
            self.segs.invalidate(&*self.media, s.pos.seg)?;
        }
        Ok(())
    }

    /// Logs a key whose data is durable (D1 done): inserts it into the index and appends
    /// it to its region's kset, closing the kset when it is full. A miss fill or a
    /// written-through key ([`Commit`]) is dropped (false) if a write reached its region
    /// since its epoch.
    pub(crate) fn commit(&self, key: &Key, how: Commit) -> Result<bool> {
        let ki = layout::kset_index(key.off, self.log.ksets.len() as u32) as usize;
        let mut ks = self.log.ksets[ki].lock();
        if ks.buf.is_full() {
            self.close_kset(&mut ks)?;
        }
        let (tree, rel) = self.index.subtree(key.off).ok_or_else(|| {
            EngineError::Inconsistent(format!("key at {:#x} outside the index", key.off))
        })?;
        // The CRC is known before any reader can find the extent.
        self.segs
            .set_key_crc(key.pos.seg, key.pos.off, key.len, key.data_crc);
        {
            let mut t = tree.write();
            match how {
                Commit::Write => t.epoch += 1,
                Commit::Fill(e) if t.epoch != e => return Ok(false),
                Commit::Fill(_) => {
                    // The bytes may be a write's that the backing device holds in its
                    // volatile cache: WT1 before the key is durable.
                    if self.backing_writes.unflushed() {
                        ks.through = true;
                    }
                }
                Commit::Through => {
                    t.epoch += 1;
                    ks.through = true;
                }
            }
            t.insert(
                rel,
                Extent::new(
                    key.pos.seg,
                    key.pos.off,
                    key.len,
                    key.seg_gen,
                    key.is_clean(),
                ),
            );
        }
        ks.buf.push(&key.to_raw());
        if ks.since.is_none() {
            ks.since = Some(Instant::now());
        }
        if !key.is_clean() {
            self.health.counters.dirty(u64::from(key.len));
        }
        if ks.buf.is_full() {
            self.close_kset(&mut ks)?;
        }
        Ok(true)
    }

    /// Closes every open kset, in index order (FLUSH).
    pub(crate) fn close_all(&self) -> Result<()> {
        for k in self.log.ksets.iter() {
            let mut ks = k.lock();
            self.close_kset(&mut ks)?;
        }
        Ok(())
    }

    /// Closes the kset of queue `i` if it has been open for a second.
    pub(crate) fn close_if_old(&self, i: usize, now: Instant) -> Result<()> {
        let mut ks = self.log.ksets[i].lock();
        if ks
            .since
            .is_some_and(|t| now.duration_since(t) >= KSET_FLUSH_DELAY)
        {
            self.close_kset(&mut ks)?;
        }
        Ok(())
    }

    /// Takes a segment for the log, waiting for GC if none is free. The caller holds a
    /// kset lock and `key_head`, so it must not close ksets while it waits.
    fn alloc_log_segment(&self) -> Result<u32> {
        loop {
            if let Some(s) = self.segs.alloc(Purpose::Log) {
                return Ok(s);
            }
            self.wait_for_space(false, Purpose::Log)?;
        }
    }

    /// Writes an open kset to the log and makes it durable; the kset is then empty.
    /// On failure the keys stay in the kset (and the cache is marked failed).
    pub(crate) fn close_kset(&self, ks: &mut OpenKset) -> Result<()> {
        if ks.buf.is_empty() {
            ks.since = None;
            return Ok(());
        }
        self.close_kset_or_not(ks, true).map(drop)
    }

    /// [`Inner::close_kset`] unless it would wait: for the log's head (another kset is
    /// being closed) or for a free segment to chain the log into. True when the kset is
    /// empty afterwards. For a caller that must not wait for the space its own progress
    /// frees (writeback, W0).
    pub(crate) fn try_close_kset(&self, ks: &mut OpenKset) -> Result<bool> {
        if ks.buf.is_empty() {
            return Ok(true);
        }
        self.close_kset_or_not(ks, false)
    }

    fn close_kset_or_not(&self, ks: &mut OpenKset, wait: bool) -> Result<bool> {
        let r = self.close_kset_inner(ks, wait);
        if let Err(e) = &r {
            if !matches!(e, EngineError::Closed | EngineError::Full) {
                self.health.fail(e);
            }
        }
        r
    }

    /// Closes `ks`; without `wait`, gives up (false) before writing anything where it
    /// would wait.
    fn close_kset_inner(&self, ks: &mut OpenKset, wait: bool) -> Result<bool> {
        if ks.through {
            // WT1: the backing device holds the written-through data durably before a
            // CLEAN key saying so can be.
            if !skip(Step::WT1) {
                let written = self.backing_writes.written.load(Ordering::Acquire);
                self.flush_backing(written)?;
            }
            ks.through = false;
        }
        let size = ks.buf.size();
        let hdr = KSET_HEADER_SIZE;
        let media = &*self.media;
        let mut head = if wait {
            self.log.key_head.lock()
        } else {
            let Some(head) = self.log.key_head.try_lock() else {
                return Ok(false);
            };
            head
        };
        // Keep room for a LAST kset after this one; otherwise chain a new log segment.
        while SEG_DATA_SIZE - head.off < size + hdr {
            let next = if wait {
                self.alloc_log_segment()?
            } else {
                let Some(next) = self.segs.alloc(Purpose::Log) else {
                    return Ok(false);
                };
                next
            };
            let next_pos = CachePos::new(next, 0);
            let next_abs = self.reader().abs(next_pos)?;
            media
                .zero(next_abs, u64::from(hdr))
                .map_err(EngineError::media("zero log segment"))?;
            // L1: the new segment starts with an end-of-log terminator before anything
            // links to it.
            if !skip(Step::L1) {
                media.flush(next_abs, u64::from(hdr));
                media.fence();
            }
            let here = self.reader().abs(*head)?;
            let last = encode_last_kset(next);
            media
                .write(here + COMMIT, &last[COMMIT as usize..])
                .map_err(EngineError::media("write LAST kset"))?;
            // L2a: the LAST kset but its commit word (the first 8 bytes, over the zero
            // terminator that ends the log here).
            if !skip(Step::L2a) {
                media.flush(here + COMMIT, u64::from(hdr) - COMMIT);
                media.fence();
            }
            media
                .write(here, &last[..COMMIT as usize])
                .map_err(EngineError::media("write LAST kset"))?;
            // L2b: its commit word: the LAST kset links the log into the new segment.
            if !skip(Step::L2b) {
                media.flush(here, COMMIT);
                media.fence();
            }
            media
                .check()
                .map_err(EngineError::media("flush LAST kset"))?;
            *head = next_pos;
            *self.log.durable_head.lock() = next_pos;
        }
        let here = self.reader().abs(*head)?;
        let term = here + u64::from(size);
        media
            .zero(term, u64::from(hdr))
            .map_err(EngineError::media("write terminator"))?;
        // K1: the terminator after the kset is durable before the kset that ends at it.
        if !skip(Step::K1) {
            media.flush(term, u64::from(hdr));
            media.fence();
        }
        let bytes = ks.buf.seal();
        media
            .write(here + COMMIT, &bytes[COMMIT as usize..])
            .map_err(EngineError::media("write kset"))?;
        // K2a: the kset but its commit word (the first 8 bytes: CRC and key count), over
        // the zero terminator that ends the log here. A cut before K2b leaves that word
        // zero: a torn kset always reads so, and any other invalid kset is damage.
        if !skip(Step::K2a) {
            media.flush(here + COMMIT, u64::from(size) - COMMIT);
            media.fence();
        }
        media
            .write(here, &bytes[..COMMIT as usize])
            .map_err(EngineError::media("write kset"))?;
        // K2b: the commit word: the kset is durable, its keys (and FUA writes among them)
        // now survive.
        if !skip(Step::K2b) {
            media.flush(here, COMMIT);
            media.fence();
        }
        media.check().map_err(EngineError::media("flush kset"))?;
        head.off += size;
        *self.log.durable_head.lock() = *head;
        self.log.closed.fetch_add(1, Ordering::Release);
        drop(head);
        ks.buf.clear();
        ks.since = None;
        self.ctl.kick_writeback.kick();
        Ok(true)
    }
}
