//! The in-memory index: which logical ranges are cached, and where their data lives.
//!
//! The logical device is cut into 4 MiB subtrees (the kernel's `PCACHE_CACHE_SUBTREE_SIZE`);
//! each has its own lock, so requests to unrelated regions never share one. A subtree maps
//! the offset of an extent inside the region to an [`Extent`]; extents never overlap,
//! because [`Subtree::insert`] resolves overlaps so the newest key wins
//! (upstream-format.md F.6). Replay inserts the logged keys in log order with the same
//! rule, which rebuilds the same index.

use parking_lot::{Mutex, MutexGuard, RwLock};
use pcache_format::layout::{SUBTREE_SHIFT, SUBTREE_SIZE};
use std::collections::BTreeMap;

/// Bit of [`Extent::len_clean`] marking data from a read-miss fill (the key's CLEAN flag).
const CLEAN_BIT: u32 = 1 << 31;

/// One cached extent: the part of a logged key that no newer key has overwritten.
///
/// 16 bytes; with the 4-byte offset and the B-tree's own overhead an extent costs 33 to
/// 41 bytes of memory (measured with a counting allocator, random and sequential
/// inserts; the kernel spends about 120 per key). Data CRCs live with the segments
/// (`Segments::key_crc`), only for caches that have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// Cache segment holding the data.
    pub seg: u32,
    /// Offset of this extent's first byte in the segment's data area.
    pub seg_off: u32,
    /// Length in bytes (at most 4 MiB), and [`CLEAN_BIT`].
    len_clean: u32,
    /// The low 32 bits of the data segment's generation when the data was written. An
    /// extent is stale once the segment's generation has moved on; an extent's generation
    /// is never ahead of its segment's, so comparing the low bits for equality is exact
    /// until a segment has been reused 2^32 times.
    gen: u32,
}

impl Extent {
    /// A whole key's extent.
    pub(crate) const fn new(seg: u32, seg_off: u32, len: u32, gen: u64, clean: bool) -> Self {
        Self {
            seg,
            seg_off,
            len_clean: len | if clean { CLEAN_BIT } else { 0 },
            // The low bits: see the field.
            #[allow(clippy::cast_possible_truncation)]
            gen: gen as u32,
        }
    }

    /// Length in bytes.
    pub(crate) const fn len(&self) -> u32 {
        self.len_clean & !CLEAN_BIT
    }

    /// Whether the data came from the backing device (nothing to write back).
    pub(crate) const fn is_clean(&self) -> bool {
        self.len_clean & CLEAN_BIT != 0
    }

    /// Whether the extent is still valid for a segment now at generation `gen`.
    pub(crate) const fn is_live(&self, gen: u64) -> bool {
        // The low bits: see the field.
        #[allow(clippy::cast_possible_truncation)]
        let low = gen as u32;
        self.gen == low
    }

    /// Keeps only the first `n` bytes.
    fn truncate(&mut self, n: u32) {
        self.len_clean = n | (self.len_clean & CLEAN_BIT);
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, n: u32) {
        self.seg_off += n;
        self.truncate(self.len() - n);
    }
}

/// The extents of one 4 MiB region, by offset inside the region.
#[derive(Debug, Default)]
pub(crate) struct Subtree {
    map: BTreeMap<u32, Extent>,
    /// Bumped by every write into the region: a read-miss fill that started under an older
    /// epoch may have read data a newer write replaced, so it is not inserted.
    pub epoch: u64,
    /// The extents' bytes, kept as they change (the status reads it for every region).
    bytes: u64,
}

impl Subtree {
    /// Inserts `ext` at `start`; whatever it overlaps is cut, split or removed.
    pub(crate) fn insert(&mut self, start: u32, ext: Extent) {
        let end = start + ext.len();
        // One descent: walk back from the last extent starting before `end`. Extents never
        // overlap, so the first one met that starts before `start` is the last one that
        // can overlap. Those starting inside [start, end) all go; the last of them, or an
        // extent straddling the whole range, may leave a tail past `end`. One at `start`
        // itself is replaced by the insert below, and one covering exactly [start, end)
        // (overwriting a whole extent, the common case) is replaced in place.
        let mut tail = None;
        let mut inside = false;
        // Bytes of the range that extents held before.
        let mut covered = 0u64;
        for (&k, e) in self.map.range_mut(..end).rev() {
            let kend = k + e.len();
            if k == start && kend == end && !inside {
                // Exactly the range, and nothing else starts inside it: replace in place.
                *e = ext;
                return;
            }
            covered += u64::from(kend.min(end).saturating_sub(k.max(start)));
            if kend > end {
                let mut t = *e;
                t.advance(end - k);
                tail = Some(t);
            }
            if k >= start {
                inside |= k != start;
                continue;
            }
            if kend > start {
                e.truncate(start - k);
            }
            break;
        }
        if inside {
            while let Some((&k, _)) = self.map.range(start + 1..end).next() {
                self.map.remove(&k);
            }
        }
        self.map.insert(start, ext);
        if let Some(t) = tail {
            self.map.insert(end, t);
        }
        self.bytes = self.bytes + u64::from(ext.len()) - covered;
    }

    /// Bytes the extents hold.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends to `out` every extent overlapping `[start, end)`, in order, unclipped.
    pub(crate) fn overlapping(&self, start: u32, end: u32, out: &mut Vec<(u32, Extent)>) {
        // One descent: walk back from the last extent starting before `end` until one
        // ends at or before `start` (extents never overlap, so every earlier one does too).
        let first = out.len();
        for (&k, e) in self.map.range(..end).rev() {
            if k + e.len() > start {
                out.push((k, *e));
            } else if k < start {
                break;
            }
        }
        out[first..].reverse();
    }

    /// Removes the extent at `start` if it is still exactly `ext` (a stale extent found by
    /// a reader, unless something replaced it meanwhile).
    pub(crate) fn remove_if_same(&mut self, start: u32, ext: &Extent) {
        if self.map.get(&start) == Some(ext) {
            self.map.remove(&start);
            self.bytes -= u64::from(ext.len());
        }
    }

    /// Marks CLEAN the extents inside `[start, start + ext.len())` that still hold
    /// `ext`'s data (the same segment, generation and mapping): it was written back, so
    /// the backing device holds the same bytes.
    pub(crate) fn mark_clean(&mut self, start: u32, ext: &Extent) {
        let end = start + ext.len();
        let delta = ext.seg_off.wrapping_sub(start);
        for (&k, e) in self.map.range_mut(start..end).rev() {
            if k + e.len() <= end
                && e.seg == ext.seg
                && e.gen == ext.gen
                && e.seg_off.wrapping_sub(k) == delta
            {
                e.len_clean |= CLEAN_BIT;
            }
        }
    }

    /// Appends to `out` the pieces of `[start, start + ext.len())` whose extent still
    /// holds `ext`'s data, dirty (the same segment, generation and mapping), as (start,
    /// offset in the segment, length). A piece some later write replaced is left out:
    /// that write's own key comes later in the log, which writeback follows in order.
    pub(crate) fn dirty_held(&self, start: u32, ext: &Extent, out: &mut Vec<(u32, u32, u32)>) {
        let end = start + ext.len();
        let delta = ext.seg_off.wrapping_sub(start);
        let first = out.len();
        for (&k, e) in self.map.range(..end).rev() {
            let kend = k + e.len();
            if kend <= start {
                if k < start {
                    break;
                }
                continue;
            }
            if !e.is_clean()
                && e.seg == ext.seg
                && e.gen == ext.gen
                && e.seg_off.wrapping_sub(k) == delta
            {
                let s = k.max(start);
                out.push((s, delta.wrapping_add(s), kend.min(end) - s));
            }
        }
        out[first..].reverse();
    }

    /// All extents, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Extent)> {
        self.map.iter().map(|(&k, e)| (k, e))
    }
}

/// The whole index: one locked [`Subtree`] per 4 MiB of the backing device.
#[derive(Debug)]
pub(crate) struct Index {
    subtrees: Box<[RwLock<Subtree>]>,
    /// Write locks, one per region modulo their number: a write that reaches the backing
    /// device holds its region's from looking at the index to committing its keys, and
    /// every other write takes it to commit, so no write into the region commits in
    /// between (see `through.rs`).
    writes: Box<[Mutex<()>]>,
}

/// Write locks of [`Index`].
const WRITE_LOCKS: usize = 256;

impl Index {
    /// An empty index for a backing device of `size` bytes.
    pub(crate) fn new(size: u64) -> Self {
        let n = size.div_ceil(SUBTREE_SIZE);
        Self {
            subtrees: (0..n).map(|_| RwLock::default()).collect(),
            writes: (0..WRITE_LOCKS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The write lock of the region holding logical offset `off`.
    pub(crate) fn write_lock(&self, off: u64) -> MutexGuard<'_, ()> {
        // The remainder is below WRITE_LOCKS.
        #[allow(clippy::cast_possible_truncation)]
        let i = ((off >> SUBTREE_SHIFT) % WRITE_LOCKS as u64) as usize;
        self.writes[i].lock()
    }

    /// The subtree holding logical offset `off` (which the caller has checked is inside
    /// the device), and the offset inside it.
    pub(crate) fn subtree(&self, off: u64) -> Option<(&RwLock<Subtree>, u32)> {
        let i = usize::try_from(off >> SUBTREE_SHIFT).ok()?;
        // The remainder is below 4 MiB.
        #[allow(clippy::cast_possible_truncation)]
        let rel = (off & (SUBTREE_SIZE - 1)) as u32;
        self.subtrees.get(i).map(|s| (s, rel))
    }

    /// Number of extents and bytes they cover.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.subtrees.iter().fold((0, 0), |(n, b), t| {
            let t = t.read();
            (n + t.map.len() as u64, b + t.bytes())
        })
    }

    /// Every subtree with its region's start offset.
    pub(crate) fn all(&self) -> impl Iterator<Item = (u64, &RwLock<Subtree>)> {
        self.subtrees
            .iter()
            .enumerate()
            .map(|(i, s)| ((i as u64) << SUBTREE_SHIFT, s))
    }
}

#[cfg(test)]
mod tests;
