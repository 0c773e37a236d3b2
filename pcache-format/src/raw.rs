//! The on-media structures, byte for byte, as zerocopy types.
//!
//! Field types are explicit little-endian integers with alignment 1, so no structure has
//! hidden padding: the superblock's 4 bytes of tail padding, which the kernel's C layout
//! has implicitly and covers with its CRC, are an explicit field here. Every size and
//! offset is asserted at compile time against the kernel's LP64 layout
//! (upstream-format.md A).
//!
//! Only the superblock is declared little-endian by the kernel; every other structure is
//! native-endian there. Big-endian images are refused at the superblock, so for every image
//! we accept, little-endian is the truth.
//!
//! These types carry no invariants: any bytes are a valid `Raw*`. The parsed, validated
//! types live in [`crate::record`] and [`crate::kset`].

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `pcache_meta_header`, 8 bytes: the start of cache_info, segment_info, the tail
/// positions and the segment generation records.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawMetaHeader {
    /// +0: CRC of the containing record's bytes `[4, size)`.
    pub crc: U32,
    /// +4: update sequence, compared with 8-bit wrap-around.
    pub seq: u8,
    /// +5: never set or read by the kernel; garbage in tail and gen records.
    pub version: u8,
    /// +6: reserved; garbage in tail and gen records.
    pub res: U16,
}

/// `pcache_sb`, 24 bytes at absolute offset 4 096.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSuperblock {
    /// +0: CRC of bytes `[4, 24)`, padding included.
    pub crc: U32,
    /// +4: bit 0 `PCACHE_SB_F_BIGENDIAN`.
    pub flags: U32,
    /// +8: `PCACHE_MAGIC`; 0 means unformatted.
    pub magic: U64,
    /// +16: number of 16 MiB segments on the device.
    pub seg_num: U32,
    /// +20: the C struct's tail padding. The kernel leaves whatever the media held and
    /// covers it with the CRC; we write zero.
    pub pad: [u8; 4],
}

/// `pcache_cache_info`, 24 bytes; copies at 8 192 and 12 288.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawCacheInfo {
    /// +0: header; CRC over `[4, 24)`.
    pub header: RawMetaHeader,
    /// +8: physical id of cache segment 0.
    pub seg_id: U32,
    /// +12: number of cache segments.
    pub n_segs: U32,
    /// +16: DATA_CRC bit 0, INIT_DONE bit 1, CACHE_MODE bits 2..5, GC_PERCENT bits 6..12.
    pub flags: U32,
    /// +20: reserved, 0.
    pub reserved: U32,
}

/// `pcache_cache_pos_onmedia`, 16 bytes: one copy of key_tail or dirty_tail.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawPos {
    /// +0: header; CRC over `[4, 16)`.
    pub header: RawMetaHeader,
    /// +8: cache (logical) segment id.
    pub cache_seg_id: U32,
    /// +12: offset in that segment's data area.
    pub seg_off: U32,
}

/// `pcache_segment_info`, 16 bytes; copies at segment +0 and +4 096.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSegInfo {
    /// +0: header; CRC over `[4, 16)`.
    pub header: RawMetaHeader,
    /// +8: HAS_NEXT bit 0; segment type bits 1..4 (1 = cache data).
    pub flags: U32,
    /// +12: physical id of the next segment of the chain (valid with HAS_NEXT).
    pub next_seg: U32,
}

/// `pcache_cache_seg_gen`, 16 bytes; copies at segment +8 192 and +8 208.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSegGen {
    /// +0: header; CRC over `[4, 16)`.
    pub header: RawMetaHeader,
    /// +8: generation, bumped each time the segment is invalidated.
    pub gen: U64,
}

/// `pcache_cache_kset_onmedia` without its key array, 24 bytes.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawKsetHeader {
    /// +0: CRC of `[4, 24 + 40 × key_num)` (normal) or `[4, 24)` (LAST).
    pub crc: U32,
    /// +4: key count (normal kset) or `next_cache_seg_id` (LAST kset).
    pub key_num: U32,
    /// +8: `PCACHE_KSET_MAGIC`.
    pub magic: U64,
    /// +16: bit 0 `PCACHE_KSET_FLAGS_LAST`.
    pub flags: U64,
}

/// `pcache_cache_key_onmedia`, 40 bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct RawKey {
    /// +0: logical byte offset on the backing device.
    pub off: U64,
    /// +8: length in bytes.
    pub len: U32,
    /// +12: EMPTY bit 0 (never persisted), CLEAN bit 1.
    pub flags: U32,
    /// +16: cache segment holding the data.
    pub cache_seg_id: U32,
    /// +20: offset of the data in that segment's data area.
    pub cache_seg_off: U32,
    /// +24: the data segment's generation when the space was allocated.
    pub seg_gen: U64,
    /// +32: CRC of the data when the cache has DATA_CRC, else 0.
    pub data_crc: U32,
    /// +36: reserved, 0.
    pub reserved: U32,
}

macro_rules! assert_layout {
    ($ty:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = assert!(size_of::<$ty>() == $size);
        $(const _: () = assert!(offset_of!($ty, $field) == $off);)*
    };
}

assert_layout!(RawMetaHeader, 8, { crc: 0, seq: 4, version: 5, res: 6 });
assert_layout!(RawSuperblock, 24, { crc: 0, flags: 4, magic: 8, seg_num: 16, pad: 20 });
assert_layout!(RawCacheInfo, 24, { header: 0, seg_id: 8, n_segs: 12, flags: 16, reserved: 20 });
assert_layout!(RawPos, 16, { header: 0, cache_seg_id: 8, seg_off: 12 });
assert_layout!(RawSegInfo, 16, { header: 0, flags: 8, next_seg: 12 });
assert_layout!(RawSegGen, 16, { header: 0, gen: 8 });
assert_layout!(RawKsetHeader, 24, { crc: 0, key_num: 4, magic: 8, flags: 16 });
assert_layout!(RawKey, 40, {
    off: 0, len: 8, flags: 12, cache_seg_id: 16, cache_seg_off: 20, seg_gen: 24,
    data_crc: 32, reserved: 36,
});
const _: () = assert!(size_of::<RawKsetHeader>() as u32 == crate::layout::KSET_HEADER_SIZE);
const _: () = assert!(size_of::<RawKey>() as u32 == crate::layout::KEY_SIZE);
