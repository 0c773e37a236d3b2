//! Cache segments: generations, reference counts and the allocation map.
//!
//! A *data* segment is referenced once by every logged (or open-kset) key whose data it
//! holds and once by the data head writing into it. When GC has dropped the last
//! reference, the segment is *invalidated*: its generation is bumped and persisted, which
//! makes every index extent still pointing into it stale, and only then is it freed for
//! reuse (upstream-format.md F.7). A *log* segment holds ksets; it takes no references and
//! is freed when key_tail leaves it.
//!
//! The allocation map is the only state shared by all queues here, and it is locked only
//! to take or free a whole 16 MiB segment.

use crate::error::Result;
use crate::media::CacheMedia;
use crate::meta::DualState;
use crate::mutants::{skip, Step};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use pcache_format::layout::{seg_gen_off, SegmentChain};
use pcache_format::record::SegGen;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Free segments kept back from data allocation so the log can always chain one more
/// segment: a kset close that needs a log segment can then never wait for data whose
/// keys sit in that very kset.
pub(crate) const LOG_RESERVE: u32 = 1;

/// The fewest segments a cache needs for writes to always make progress: the log
/// segment, the log's reserve, and two data segments (the data head holds a reference on
/// the one it fills, so GC can only free the other). A cache with fewer would wait for
/// space forever on its first full data segment; it is opened read-only only.
pub(crate) const MIN_WRITABLE_SEGS: u32 = LOG_RESERVE + 3;

/// One cache segment's in-memory state.
#[derive(Debug)]
pub(crate) struct Segment {
    /// The current generation. Readers hold the read lock while they copy data out, so an
    /// invalidation (write lock) cannot hand the segment to a writer mid-copy.
    gen: RwLock<u64>,
    /// Which slot holds the latest persisted generation record.
    gen_state: Mutex<DualState>,
    /// References: keys in the log or in open ksets, plus the data head.
    refs: AtomicU32,
}

/// Who wants a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Data for a write or a miss fill: must leave [`LOG_RESERVE`] segments free.
    Data,
    /// The next log segment: may take the reserve.
    Log,
}

impl Purpose {
    /// Free segments there must be for an allocation.
    const fn need(self) -> u32 {
        match self {
            Purpose::Data => LOG_RESERVE + 1,
            Purpose::Log => 1,
        }
    }
}

#[derive(Debug)]
struct Map {
    used: Vec<bool>,
    n_used: u32,
    /// The last segment handed out: the next-fit search starts after it.
    last: u32,
}

/// All segments, and the allocation map.
/// The data CRCs of the keys whose data a segment holds, by data offset: start → (length,
/// CRC). Keys' data never overlap within one use of a segment.
type KeyCrcs = BTreeMap<u32, (u32, u32)>;

#[derive(Debug)]
pub(crate) struct Segments {
    segs: Box<[Segment]>,
    /// Per segment, for caches with data CRCs only.
    crcs: Option<Box<[RwLock<KeyCrcs>]>>,
    chain: SegmentChain,
    map: Mutex<Map>,
    freed: Condvar,
}

impl Segments {
    /// Segments with the given generations (and where each was read from), all free.
    pub(crate) fn new(chain: SegmentChain, gens: Vec<(u64, DualState)>, data_crc: bool) -> Self {
        let n = gens.len();
        Self {
            crcs: data_crc.then(|| (0..n).map(|_| RwLock::default()).collect()),
            segs: gens
                .into_iter()
                .map(|(gen, st)| Segment {
                    gen: RwLock::new(gen),
                    gen_state: Mutex::new(st),
                    refs: AtomicU32::new(0),
                })
                .collect(),
            chain,
            map: Mutex::new(Map {
                used: vec![false; n],
                n_used: 0,
                last: u32::try_from(n).unwrap_or(u32::MAX).saturating_sub(1),
            }),
            freed: Condvar::new(),
        }
    }

    /// Number of cache segments.
    pub(crate) fn count(&self) -> u32 {
        self.chain.len()
    }

    /// The chain (cache segment id → physical id).
    pub(crate) fn chain(&self) -> &SegmentChain {
        &self.chain
    }

    fn seg(&self, id: u32) -> Option<&Segment> {
        self.segs.get(id as usize)
    }

    /// The current generation of segment `id` (0 for an id out of range, which the
    /// callers have already excluded).
    pub(crate) fn gen(&self, id: u32) -> u64 {
        self.seg(id).map_or(0, |s| *s.gen.read())
    }

    /// Holds off invalidation of `id` while the guard lives; yields the generation.
    pub(crate) fn read_gen(&self, id: u32) -> Option<RwLockReadGuard<'_, u64>> {
        self.seg(id).map(|s| s.gen.read())
    }

    /// Records the data CRC of a key stored at `[off, off + len)` of segment `id`.
    pub(crate) fn set_key_crc(&self, id: u32, off: u32, len: u32, crc: u32) {
        if let Some(t) = self.crcs.as_ref().and_then(|c| c.get(id as usize)) {
            t.write().insert(off, (len, crc));
        }
    }

    /// The key whose data holds byte `at` of segment `id`: `(start, length, CRC)`.
    pub(crate) fn key_crc(&self, id: u32, at: u32) -> Option<(u32, u32, u32)> {
        let t = self.crcs.as_ref()?.get(id as usize)?.read();
        let (&start, &(len, crc)) = t.range(..=at).next_back()?;
        (at < start.saturating_add(len)).then_some((start, len, crc))
    }

    /// Takes a reference.
    pub(crate) fn get(&self, id: u32) {
        if let Some(s) = self.seg(id) {
            s.refs.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// References held (live keys' data, a data head).
    pub(crate) fn refs(&self, id: u32) -> u32 {
        self.seg(id).map_or(0, |s| s.refs.load(Ordering::Acquire))
    }

    /// Drops a reference; true when it was the last one (the caller then invalidates the
    /// segment, after persisting whatever must precede that).
    #[must_use]
    pub(crate) fn put(&self, id: u32) -> bool {
        self.seg(id).is_some_and(|s| {
            let prev = s
                .refs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
            prev == Ok(1)
        })
    }

    /// Marks `id` used (replay).
    pub(crate) fn mark_used(&self, id: u32) {
        let mut map = self.map.lock();
        if let Some(u) = map.used.get_mut(id as usize) {
            if !*u {
                *u = true;
                map.n_used += 1;
            }
        }
    }

    /// Segments in use (data and log): the kernel's `segs_used`.
    pub(crate) fn used(&self) -> u32 {
        self.map.lock().n_used
    }

    /// Whether a segment may be taken for `purpose` now.
    pub(crate) fn can_alloc(&self, purpose: Purpose) -> bool {
        self.count() - self.map.lock().n_used >= purpose.need()
    }

    /// Takes a free segment, next-fit after the last one taken, or `None` when none may be
    /// taken for `purpose`.
    pub(crate) fn alloc(&self, purpose: Purpose) -> Option<u32> {
        let mut map = self.map.lock();
        let n = self.count();
        let free = n - map.n_used;
        if free < purpose.need() {
            return None;
        }
        let start = map.last;
        for i in 1..=n {
            let id = (start + i) % n;
            if !map.used[id as usize] {
                map.used[id as usize] = true;
                map.n_used += 1;
                map.last = id;
                return Some(id);
            }
        }
        None
    }

    /// Waits up to `timeout` for a segment to be freed.
    pub(crate) fn wait_freed(&self, timeout: Duration) {
        let mut map = self.map.lock();
        self.freed.wait_for(&mut map, timeout);
    }

    /// Frees a log segment (no generation bump: log segments hold no keyed data).
    pub(crate) fn free_log(&self, id: u32) {
        self.release(id);
    }

    fn release(&self, id: u32) {
        let mut map = self.map.lock();
        if let Some(u) = map.used.get_mut(id as usize) {
            if *u {
                *u = false;
                map.n_used -= 1;
            }
        }
        drop(map);
        self.freed.notify_all();
    }

    /// Invalidates data segment `id` whose last reference is gone: bumps its generation,
    /// persists it (step G3), and frees the segment.
    pub(crate) fn invalidate(&self, media: &dyn CacheMedia, id: u32) -> Result<()> {
        let Some(s) = self.seg(id) else {
            return Ok(());
        };
        let Some(phys) = self.chain.phys(id) else {
            return Ok(());
        };
        if skip(Step::G2) {
            // Mutant: freed without a new generation.
            self.release(id);
            return Ok(());
        }
        {
            let mut gen = s.gen.write();
            let next = gen.wrapping_add(1);
            s.gen_state.lock().persist(
                media,
                |slot| seg_gen_off(phys, slot),
                &SegGen(next),
                !skip(Step::G3),
            )?;
            *gen = next;
            // The segment's keys are all gone: so are their CRCs.
            if let Some(t) = self.crcs.as_ref().and_then(|c| c.get(id as usize)) {
                t.write().clear();
            }
        }
        self.release(id);
        Ok(())
    }

    /// The allocation map, for checks: `(used, refs)` per segment.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(bool, u32)> {
        let map = self.map.lock();
        map.used
            .iter()
            .zip(self.segs.iter())
            .map(|(&u, s)| (u, s.refs.load(Ordering::Acquire)))
            .collect()
    }
}

impl crate::walk::Generations for Segments {
    fn gen(&self, seg: u32) -> u64 {
        Segments::gen(self, seg)
    }
}
