//! Where everything lives on the cache device, and the arithmetic around it.
//!
//! ```text
//! 0        4K       8K          12K          16K        20K                 20K+16M
//! | unused | sb     | cache_info | cache_info | ctrl     | segment 0 | segment 1 | ...
//! |        | (24 B) | slot 0     | slot 1     | (tails)  |           |
//!
//! segment S: | seg_info 0 | seg_info 1 | seg ctrl (gens) | data area (16 MiB - 12 KiB) |
//!            S           S+4K         S+8K              S+12K
//! ```
//!
//! Every position inside the cache (tails, key data, key_head) is relative to a segment's
//! data area and names the segment by its *cache* segment id; see [`SegmentChain`].

use crate::error::{FormatError, Reason, Result, Structure};

/// `PCACHE_SB_OFF`: the superblock's absolute offset.
pub const SB_OFF: u64 = 4096;
/// `PCACHE_SB_SIZE`: the area reserved for the superblock.
pub const SB_AREA: u64 = 4096;
/// `PCACHE_CACHE_INFO_OFF`: cache_info slot 0.
pub const CACHE_INFO_OFF: u64 = 8192;
/// `PCACHE_CACHE_INFO_SIZE`: stride between the two cache_info slots.
pub const CACHE_INFO_STRIDE: u64 = 4096;
/// Where kernels 6.18.0 to 6.18.3 wrote a cache_info copy by mistake: 8 192 + 24, one
/// *structure* after slot 0 instead of one 4 KiB slot (fixed in 6.18.4 and 6.19 by
/// "dm pcache: fix cache info indexing"). No kernel reads there.
pub const CACHE_INFO_OFF_618: u64 = CACHE_INFO_OFF + 24;
/// `PCACHE_CACHE_CTRL_OFF`: the tail positions.
pub const CACHE_CTRL_OFF: u64 = 16384;
/// `PCACHE_CACHE_CTRL_SIZE`.
pub const CACHE_CTRL_AREA: u64 = 4096;
/// Absolute offset of `key_tail_pos[0]`.
pub const KEY_TAIL_OFF: u64 = CACHE_CTRL_OFF;
/// Absolute offset of `dirty_tail_pos[0]`.
pub const DIRTY_TAIL_OFF: u64 = CACHE_CTRL_OFF + 32;
/// Stride between the two copies of a tail position.
pub const TAIL_STRIDE: u64 = 16;
/// `PCACHE_SEGMENTS_OFF`: physical segment 0.
pub const SEGMENTS_OFF: u64 = 20480;
/// `PCACHE_SEG_SIZE`: 16 MiB.
pub const SEG_SIZE: u64 = 16 << 20;
/// `PCACHE_SEG_INFO_SIZE`: stride between the two seg_info slots of a segment.
pub const SEG_INFO_STRIDE: u64 = 4096;
/// `PCACHE_CACHE_SEG_CTRL_OFF`: the generation records, relative to the segment.
pub const SEG_CTRL_OFF: u64 = 8192;
/// Stride between the two generation records.
pub const SEG_GEN_STRIDE: u64 = 16;
/// Size of the reserved area of `pcache_cache_seg_ctrl` (two gens plus `res[64]`).
pub const SEG_CTRL_USED: u64 = 544;
/// The data area's offset inside a segment.
pub const SEG_DATA_OFF: u64 = 12288;
/// The data area's size: 16 MiB − 12 KiB = 16 764 928 (32 744 sectors).
pub const SEG_DATA_SIZE: u32 = 16_764_928;
/// `PCACHE_CACHE_DEV_SIZE_MIN`: 512 MiB.
pub const CACHE_DEV_SIZE_MIN: u64 = 512 << 20;
/// `PCACHE_CACHE_SEGS_MAX`: 1 048 576 segments (16 TiB).
pub const CACHE_SEGS_MAX: u32 = 1 << 20;
/// `PCACHE_CACHE_SUBTREE_SIZE`: 4 MiB. Keys never cross a multiple of it, and the kset of
/// a key is chosen by it.
pub const SUBTREE_SIZE: u64 = 4 << 20;
/// log2 of [`SUBTREE_SIZE`].
pub const SUBTREE_SHIFT: u32 = 22;
/// `PCACHE_KSET_KEYS_MAX`.
pub const KSET_KEYS_MAX: u32 = 128;
/// Size of a kset header (and of a LAST kset, and of an end-of-log terminator).
pub const KSET_HEADER_SIZE: u32 = 24;
/// Size of one key.
pub const KEY_SIZE: u32 = 40;
/// `PCACHE_KSET_ONMEDIA_SIZE_MAX`: a kset of 128 keys, 5 144 bytes.
pub const KSET_SIZE_MAX: u32 = KSET_HEADER_SIZE + KEY_SIZE * KSET_KEYS_MAX;
/// Sector size: key lengths and offsets are multiples of it.
pub const SECTOR_SIZE: u32 = 512;
/// Every kset position is a multiple of this: ksets are `24 + 40 × n` bytes, packed from
/// offset 0 of a data area, so tails and LAST targets are too.
pub const KSET_ALIGN: u32 = 8;

/// Absolute offset of physical segment `phys`.
#[must_use]
pub const fn segment_base(phys: u32) -> u64 {
    SEGMENTS_OFF + phys as u64 * SEG_SIZE
}

/// Absolute offset of seg_info copy `slot` (0 or 1) of physical segment `phys`.
#[must_use]
pub const fn seg_info_off(phys: u32, slot: usize) -> u64 {
    segment_base(phys) + slot as u64 * SEG_INFO_STRIDE
}

/// Absolute offset of generation record `slot` (0 or 1) of physical segment `phys`.
#[must_use]
pub const fn seg_gen_off(phys: u32, slot: usize) -> u64 {
    segment_base(phys) + SEG_CTRL_OFF + slot as u64 * SEG_GEN_STRIDE
}

/// Absolute offset of the data area of physical segment `phys`.
#[must_use]
pub const fn data_area_off(phys: u32) -> u64 {
    segment_base(phys) + SEG_DATA_OFF
}

/// Absolute offset of cache_info copy `slot`.
#[must_use]
pub const fn cache_info_off(slot: usize) -> u64 {
    CACHE_INFO_OFF + slot as u64 * CACHE_INFO_STRIDE
}

/// Absolute offset of key_tail copy `slot`.
#[must_use]
pub const fn key_tail_off(slot: usize) -> u64 {
    KEY_TAIL_OFF + slot as u64 * TAIL_STRIDE
}

/// Absolute offset of dirty_tail copy `slot`.
#[must_use]
pub const fn dirty_tail_off(slot: usize) -> u64 {
    DIRTY_TAIL_OFF + slot as u64 * TAIL_STRIDE
}

/// How many whole segments fit on a device of `device_bytes`, exactly as the kernel's
/// formatter computes it (no rounding up, no cap). `None` when the device is smaller than
/// the segment area's start.
#[must_use]
pub const fn raw_seg_count(device_bytes: u64) -> Option<u64> {
    match device_bytes.checked_sub(SEGMENTS_OFF) {
        Some(rest) => Some(rest / SEG_SIZE),
        None => None,
    }
}

/// The segment count a formatter should write for a device of `device_bytes`.
///
/// Refuses devices under [`CACHE_DEV_SIZE_MIN`] like the kernel (which returns
/// `-ENOSPC`), and caps the count at [`CACHE_SEGS_MAX`], which the kernel's formatter does
/// not do although its loader rejects anything larger (upstream-format.md G.17).
///
/// # Errors
/// [`Structure::Device`] with [`Reason::OutOfRange`] for a device that is too small.
pub fn seg_num_for_device(device_bytes: u64) -> Result<u32> {
    if device_bytes < CACHE_DEV_SIZE_MIN {
        return Err(FormatError::range(
            Structure::Device,
            0,
            "device size (minimum, inclusive)",
            device_bytes,
            CACHE_DEV_SIZE_MIN,
        ));
    }
    let count = raw_seg_count(device_bytes).unwrap_or(0);
    Ok(u32::try_from(count.min(u64::from(CACHE_SEGS_MAX))).unwrap_or(CACHE_SEGS_MAX))
}

/// The largest `seg_num` a loader accepts for a device of `device_bytes` (the 7.x check
/// `seg_num <= min(capacity in segments, CACHE_SEGS_MAX)`).
#[must_use]
pub fn max_seg_num(device_bytes: u64) -> u32 {
    let count = raw_seg_count(device_bytes).unwrap_or(0);
    u32::try_from(count.min(u64::from(CACHE_SEGS_MAX))).unwrap_or(CACHE_SEGS_MAX)
}

/// On-media size of a normal kset holding `key_num` keys: `24 + 40 × key_num`.
#[must_use]
pub const fn kset_size(key_num: u32) -> u32 {
    KSET_HEADER_SIZE + KEY_SIZE * key_num
}

/// The 4 MiB logical region (subtree) holding byte `off` of the backing device.
#[must_use]
pub const fn subtree_of(off: u64) -> u64 {
    off >> SUBTREE_SHIFT
}

/// The kset a key at logical offset `off` is appended to: `(off >> 22) mod n_ksets`.
/// Every key of one 4 MiB region goes to the same kset, which keeps the region's keys in
/// write order in the log (upstream-format.md G.12). `n_ksets` of 0 is treated as 1.
#[must_use]
pub fn kset_index(off: u64, n_ksets: u32) -> u32 {
    let n = u64::from(n_ksets.max(1));
    // The remainder is below n_ksets, which is a u32.
    u32::try_from(subtree_of(off) % n).unwrap_or(0)
}

/// Bytes from `off` to the end of its 4 MiB logical region: the longest key that may start
/// at `off`.
#[must_use]
pub const fn bytes_to_subtree_end(off: u64) -> u64 {
    SUBTREE_SIZE - (off & (SUBTREE_SIZE - 1))
}

/// A position inside the cache: a cache segment id and an offset into its data area.
/// Used for key_head, key_tail, dirty_tail and key data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CachePos {
    /// Cache (logical) segment id.
    pub seg: u32,
    /// Offset inside the segment's data area.
    pub off: u32,
}

impl CachePos {
    /// A position.
    #[must_use]
    pub const fn new(seg: u32, off: u32) -> Self {
        Self { seg, off }
    }
}

impl core::fmt::Display for CachePos {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.seg, self.off)
    }
}

/// The cache's segment chain: cache segment id *i* → physical segment id.
///
/// Built by following `cache_info.seg_id` and each segment's `next_seg`. A kernel-formatted
/// device has the identity mapping, but readers must not assume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentChain {
    phys: Vec<u32>,
}

impl SegmentChain {
    /// The identity chain of `n_segs` segments (what a formatter writes).
    #[must_use]
    pub fn identity(n_segs: u32) -> Self {
        Self {
            phys: (0..n_segs).collect(),
        }
    }

    /// A chain already walked: the physical id of each cache segment, in order (a
    /// checker that walks the chain itself, reporting as it goes, builds it this way).
    #[must_use]
    pub fn from_phys(phys: Vec<u32>) -> Self {
        Self { phys }
    }

    /// Walks the chain from physical segment `first` for `n_segs` segments.
    /// `next(phys)` returns the next physical id (`Ok(None)` when the segment has no
    /// `HAS_NEXT`), or an error for an unreadable segment. It is called for every segment
    /// of the chain, the last one included (whose link is not followed), so a loader
    /// checks each segment's seg_info as the kernel does.
    ///
    /// # Errors
    /// An out-of-range physical id (≥ `seg_num`), a physical id met twice, or a chain
    /// shorter than `n_segs`; or whatever `next` returns.
    pub fn walk(
        first: u32,
        n_segs: u32,
        seg_num: u32,
        mut next: impl FnMut(u32) -> Result<Option<u32>>,
    ) -> Result<Self> {
        if n_segs == 0 || n_segs > seg_num {
            return Err(FormatError::range(
                Structure::CacheInfo,
                CACHE_INFO_OFF,
                "n_segs",
                u64::from(n_segs),
                u64::from(seg_num) + 1,
            ));
        }
        let mut seen = vec![false; seg_num as usize];
        let mut phys = Vec::with_capacity(n_segs as usize);
        let mut cur = first;
        for i in 0..n_segs {
            let Some(slot) = seen.get_mut(cur as usize) else {
                return Err(FormatError::range(
                    Structure::SegmentChain,
                    phys.last().map_or(CACHE_INFO_OFF, |&p| segment_base(p)),
                    "seg_id",
                    u64::from(cur),
                    u64::from(seg_num),
                ));
            };
            if *slot {
                return Err(FormatError::new(
                    Structure::SegmentChain,
                    segment_base(cur),
                    Reason::ChainCycle { seg_id: cur },
                ));
            }
            *slot = true;
            phys.push(cur);
            let link = next(cur)?;
            if i + 1 == n_segs {
                break;
            }
            match link {
                Some(n) => cur = n,
                None => {
                    return Err(FormatError::new(
                        Structure::SegmentChain,
                        segment_base(cur),
                        Reason::ChainTooShort { found: i + 1 },
                    ))
                }
            }
        }
        Ok(Self { phys })
    }

    /// Number of cache segments.
    #[must_use]
    pub fn len(&self) -> u32 {
        u32::try_from(self.phys.len()).unwrap_or(u32::MAX)
    }

    /// Whether the chain is empty (never true for a loaded cache).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.phys.is_empty()
    }

    /// Physical id of cache segment `cache_seg`, if it exists.
    #[must_use]
    pub fn phys(&self, cache_seg: u32) -> Option<u32> {
        self.phys.get(cache_seg as usize).copied()
    }

    /// The physical ids in cache-segment order.
    #[must_use]
    pub fn as_slice(&self) -> &[u32] {
        &self.phys
    }

    /// Absolute device offset of a cache position, if its segment exists. The offset is not
    /// checked against the data-area size.
    #[must_use]
    pub fn abs(&self, pos: CachePos) -> Option<u64> {
        self.phys(pos.seg)
            .map(|p| data_area_off(p) + u64::from(pos.off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_contract() {
        assert_eq!(segment_base(0), 20_480);
        assert_eq!(segment_base(1), 20_480 + 16_777_216);
        assert_eq!(data_area_off(0), 32_768);
        assert_eq!(seg_gen_off(2, 1), 20_480 + 2 * 16_777_216 + 8_208);
        assert_eq!(seg_info_off(0, 1), 20_480 + 4_096);
        assert_eq!(cache_info_off(1), 12_288);
        assert_eq!(key_tail_off(1), 16_400);
        assert_eq!(dirty_tail_off(0), 16_416);
        assert_eq!(dirty_tail_off(1), 16_432);
        assert_eq!(u64::from(SEG_DATA_SIZE), SEG_SIZE - SEG_DATA_OFF);
        assert_eq!(SEG_DATA_SIZE % SECTOR_SIZE, 0);
        assert_eq!(KSET_SIZE_MAX, 5_144);
    }

    #[test]
    fn segment_counts() {
        assert_eq!(seg_num_for_device(512 << 20), Ok(31));
        assert_eq!(seg_num_for_device(1 << 30), Ok(63));
        assert!(seg_num_for_device((512 << 20) - 1).is_err());
        // 16 TiB + 20 KiB holds exactly the maximum; more is capped.
        assert_eq!(
            seg_num_for_device((16u64 << 40) + SEGMENTS_OFF),
            Ok(CACHE_SEGS_MAX)
        );
        assert_eq!(seg_num_for_device(64u64 << 40), Ok(CACHE_SEGS_MAX));
        assert_eq!(max_seg_num(100), 0);
        assert_eq!(max_seg_num(512 << 20), 31);
    }

    #[test]
    fn routing() {
        assert_eq!(kset_index(0, 4), 0);
        assert_eq!(kset_index((4 << 20) - 1, 4), 0);
        assert_eq!(kset_index(4 << 20, 4), 1);
        assert_eq!(kset_index(5 * (4 << 20) + 7, 4), 1);
        assert_eq!(kset_index(123, 0), 0);
        assert_eq!(bytes_to_subtree_end(0), 4 << 20);
        assert_eq!(bytes_to_subtree_end((4 << 20) - 512), 512);
        assert_eq!(kset_size(0), 24);
        assert_eq!(kset_size(128), 5_144);
    }

    #[test]
    fn chain_walk() {
        // 3 → 0 → 2 over seg_num 4.
        let next = |p: u32| {
            Ok(match p {
                3 => Some(0),
                0 => Some(2),
                _ => None,
            })
        };
        let c = SegmentChain::walk(3, 3, 4, next).unwrap();
        assert_eq!(c.as_slice(), &[3, 0, 2]);
        assert_eq!(c.abs(CachePos::new(1, 8)), Some(data_area_off(0) + 8));
        assert_eq!(c.phys(3), None);
        // Too short.
        let e = SegmentChain::walk(3, 4, 4, next).unwrap_err();
        assert_eq!(e.reason, Reason::ChainTooShort { found: 3 });
        // Cycle.
        let e = SegmentChain::walk(0, 3, 4, |p| Ok(Some(1 - p.min(1)))).unwrap_err();
        assert_eq!(e.reason, Reason::ChainCycle { seg_id: 0 });
        // Out of range.
        let e = SegmentChain::walk(0, 2, 2, |_| Ok(Some(9))).unwrap_err();
        assert!(matches!(e.reason, Reason::OutOfRange { value: 9, .. }));
        // n_segs larger than seg_num.
        assert!(SegmentChain::walk(0, 3, 2, |p| Ok(Some(p + 1))).is_err());
        // The last segment is read too: an unreadable one fails the walk (its link, valid
        // or not, is not followed).
        let unreadable = FormatError::new(Structure::SegmentInfo, 0, Reason::NoValidCopy);
        let e = SegmentChain::walk(3, 3, 4, |p| if p == 2 { Err(unreadable) } else { next(p) })
            .unwrap_err();
        assert_eq!(e.reason, Reason::NoValidCopy);
        let c = SegmentChain::walk(3, 2, 4, |p| Ok(Some(p ^ 3))).unwrap();
        assert_eq!(c.as_slice(), &[3, 0]);
    }
}
