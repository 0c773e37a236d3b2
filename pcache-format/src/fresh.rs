//! The metadata of a freshly formatted cache, exactly as the kernel's first activation
//! writes it (upstream-format.md F.1 and its appendix), in the order a crash-safe
//! formatter must make it durable.
//!
//! This module computes bytes and offsets only; the caller writes them and makes each
//! [`Step`] durable before starting the next.

use crate::layout::{
    self, CachePos, CACHE_CTRL_AREA, CACHE_INFO_OFF, SEGMENTS_OFF, SEG_DATA_OFF, SEG_INFO_STRIDE,
};
use crate::record::{encode_meta, CacheInfo, SegGen, SegInfo, Superblock, TailPos};
use zerocopy::IntoBytes;

/// The persistence steps of a format. Each must be durable before the next begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Zero both cache_info slots and the ctrl block `[8 192, 20 480)`, so no old cache
    /// can be found while the format is incomplete.
    InvalidateCacheInfo,
    /// Write the superblock.
    Superblock,
    /// Initialise every segment's metadata and empty kset.
    Segments,
    /// Write dirty_tail, then key_tail (slot 0, seq 1, position (0, 0)).
    Tails,
    /// Write cache_info with INIT_DONE (slot 1, seq 1): the format is complete.
    CacheInfo,
}

/// The zeroed range of [`Step::InvalidateCacheInfo`]: `(offset, length)`.
pub const INVALIDATE_RANGE: (u64, u64) = (CACHE_INFO_OFF, SEGMENTS_OFF - CACHE_INFO_OFF);

/// Size of a segment's metadata block: two seg_info slots and the generation block.
pub const SEG_META_SIZE: usize = SEG_DATA_OFF as usize;

/// The first 12 KiB of physical segment `phys` of a fresh cache of `seg_num` segments
/// (identity chain), ready to write at [`layout::segment_base`]. The 24-byte empty kset
/// that follows at the data area is all zeros.
///
/// Slot 1 holds `{seq 1, cache data, last}`; slot 0 holds `{seq 2, HAS_NEXT, next phys+1}`
/// for every segment but the last, whose slot 0 is zero; `gen[1]` holds `{seq 1, gen 0}`.
#[must_use]
pub fn segment_meta(phys: u32, seg_num: u32) -> Box<[u8; SEG_META_SIZE]> {
    let mut block = Box::new([0u8; SEG_META_SIZE]);
    let last = encode_meta(&SegInfo::data(None), 1);
    let slot1 = SEG_INFO_STRIDE as usize;
    block[slot1..slot1 + 16].copy_from_slice(last.as_bytes());
    if phys + 1 < seg_num {
        let linked = encode_meta(&SegInfo::data(Some(phys + 1)), 2);
        block[..16].copy_from_slice(linked.as_bytes());
    }
    let gen1 = (layout::SEG_CTRL_OFF + layout::SEG_GEN_STRIDE) as usize;
    block[gen1..gen1 + 16].copy_from_slice(encode_meta(&SegGen(0), 1).as_bytes());
    block
}

/// The superblock of a fresh cache on a device of `seg_num` segments.
#[must_use]
pub fn superblock(seg_num: u32) -> [u8; 24] {
    Superblock::new(seg_num).encode()
}

/// The ctrl block (`[16 384, 20 480)`) after [`Step::Tails`]: both tails at (0, 0) in slot 0
/// with seq 1, slot 1 zero.
#[must_use]
pub fn ctrl_block() -> [u8; CACHE_CTRL_AREA as usize] {
    let mut block = [0u8; CACHE_CTRL_AREA as usize];
    let tail = encode_meta(&TailPos(CachePos::new(0, 0)), 1);
    let key = (layout::key_tail_off(0) - layout::CACHE_CTRL_OFF) as usize;
    let dirty = (layout::dirty_tail_off(0) - layout::CACHE_CTRL_OFF) as usize;
    block[key..key + 16].copy_from_slice(tail.as_bytes());
    block[dirty..dirty + 16].copy_from_slice(tail.as_bytes());
    block
}

/// The tail record written at format, for `key_tail_pos[0]` and `dirty_tail_pos[0]`.
#[must_use]
pub fn tail_record() -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(encode_meta(&TailPos(CachePos::new(0, 0)), 1).as_bytes());
    out
}

/// The cache_info record of a fresh cache, for slot 1 (offset 12 288), seq 1.
#[must_use]
pub fn cache_info(seg_num: u32, data_crc: bool, gc_percent: u8) -> [u8; 24] {
    let mut out = [0; 24];
    out.copy_from_slice(
        encode_meta(&CacheInfo::fresh(seg_num, data_crc, gc_percent), 1).as_bytes(),
    );
    out
}

/// The slot a fresh cache_info goes to.
pub const CACHE_INFO_SLOT: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode_meta, CacheInfo, Dual, SegGen, SegInfo};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The appendix of upstream-format.md and the full-record vectors of D.5.
    #[test]
    fn fresh_512mib_matches_the_kernel() {
        let sb = superblock(31);
        assert_eq!(hex(&sb), "42777f0400000000ef96c596fa5eb0651f00000000000000");
        let ci = cache_info(31, false, 70);
        assert_eq!(hex(&ci), "6dfecadd01000000000000001f0000008211000000000000");
        let ci = cache_info(31, true, 70);
        assert_eq!(&ci[..4], &0x94F6_834Au32.to_le_bytes());
        assert_eq!(hex(&tail_record()), "b0dff56e010000000000000000000000");
        let ctrl = ctrl_block();
        assert_eq!(&ctrl[..16], &tail_record());
        assert_eq!(&ctrl[16..32], &[0; 16]);
        assert_eq!(&ctrl[32..48], &tail_record());
        assert!(ctrl[48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn fresh_segments() {
        let mid = segment_meta(0, 31);
        assert_eq!(&mid[..4], &0x3B66_8E31u32.to_le_bytes());
        assert_eq!(
            hex(&mid[..16]),
            format!(
                "{}02000000030000000100000",
                hex(&0x3B66_8E31u32.to_le_bytes())
            ) + "0"
        );
        assert_eq!(&mid[4096..4100], &0xFC8D_25FEu32.to_le_bytes());
        assert_eq!(hex(&mid[4096..4112]), "fe258dfc010000000200000000000000");
        assert_eq!(&mid[8192..8208], &[0; 16]);
        assert_eq!(hex(&mid[8208..8224]), "b0dff56e010000000000000000000000");
        let last = segment_meta(30, 31);
        assert_eq!(&last[..16], &[0; 16]);
        assert_eq!(&last[4096..4112], &mid[4096..4112]);
        // Everything else is zero.
        for block in [&mid, &last] {
            let nonzero: usize = block
                .iter()
                .enumerate()
                .filter(|&(i, &b)| {
                    b != 0 && !(i < 16 || (4096..4112).contains(&i) || (8208..8224).contains(&i))
                })
                .count();
            assert_eq!(nonzero, 0);
        }
        // The records read back as the kernel reads them.
        let d = Dual::<SegInfo>::decode([&mid[..16], &mid[4096..4112]], [0, 4096]);
        assert_eq!(d.latest_slot(), Some(0));
        assert_eq!(d.latest().unwrap().value.next(), Some(1));
        let g = decode_meta::<SegGen>(&mid[8208..8224], 0).unwrap();
        assert_eq!((g.seq, g.value), (1, SegGen(0)));
        let ci = decode_meta::<CacheInfo>(&cache_info(31, false, 70), 0).unwrap();
        assert_eq!(ci.value.flags(), 0x1182);
    }
}
