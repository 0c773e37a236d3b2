//! The on-media format of Linux dm-pcache (kernels 6.18 through 7.3), byte for byte.
//!
//! Three layers, in the manner of `object`:
//! - [`raw`]: `#[repr(C)]` zerocopy structs with explicit little-endian fields, their
//!   sizes and offsets asserted at compile time;
//! - [`record`] and [`kset`]: validated native types, parsed only through functions that
//!   check magic, CRC and ranges with checked arithmetic, and encoded back to bytes;
//! - [`layout`] and [`fresh`]: where everything lives, and what a fresh format writes.
//!
//! Nothing here does I/O, and nothing panics on any input: every parser returns a
//! [`FormatError`] naming the structure, its absolute offset and the reason. The format is
//! described in `docs/format.md`.

pub mod bitrot;
pub mod crc;
pub mod error;
pub mod fresh;
pub mod kset;
pub mod layout;
pub mod mode;
pub mod raw;
pub mod record;
pub mod shared;

pub use crc::{kernel_crc32c, pcache_crc, pcache_crc_append, PCACHE_CRC_SEED};
pub use error::{FormatError, Reason, Result, Structure};
pub use kset::{read_kset, Key, KeyBounds, KsetBuf, KsetRead, LogEnd};
pub use layout::{CachePos, SegmentChain};
pub use mode::CacheMode;
pub use record::{
    CacheInfo, Dual, MetaRecord, SegGen, SegInfo, Slot, Superblock, TailPos, Versioned,
};
