//! The one error type of this crate: which structure, where, and why.

use core::fmt;

/// The on-media structure an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Structure {
    /// The device as a whole (its size).
    Device,
    /// `pcache_sb` at 4 096.
    Superblock,
    /// A `pcache_cache_info` copy.
    CacheInfo,
    /// A `key_tail_pos` copy.
    KeyTail,
    /// A `dirty_tail_pos` copy.
    DirtyTail,
    /// A `pcache_segment_info` copy.
    SegmentInfo,
    /// A `pcache_cache_seg_gen` copy.
    SegmentGen,
    /// The segment chain (cache segment id to physical id).
    SegmentChain,
    /// A kset header.
    Kset,
    /// A key inside a kset.
    Key,
    /// The superblock of a shared cache device.
    SharedSuperblock,
    /// A copy of a shared device's cache table.
    CacheTable,
    /// An entry of a cache table.
    TableEntry,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Device => "device",
            Self::Superblock => "superblock",
            Self::CacheInfo => "cache_info",
            Self::KeyTail => "key_tail",
            Self::DirtyTail => "dirty_tail",
            Self::SegmentInfo => "segment_info",
            Self::SegmentGen => "segment gen",
            Self::SegmentChain => "segment chain",
            Self::Kset => "kset",
            Self::Key => "key",
            Self::SharedSuperblock => "shared superblock",
            Self::CacheTable => "cache table",
            Self::TableEntry => "cache table entry",
        })
    }
}

/// Why a structure was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The magic number is not the expected one.
    BadMagic {
        /// The value found.
        found: u64,
    },
    /// The stored CRC does not match the bytes.
    BadCrc {
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the covered bytes.
        computed: u32,
    },
    /// The superblock says the image was written by a big-endian kernel.
    BigEndian,
    /// A field is outside its allowed range.
    OutOfRange {
        /// Field name, as the kernel calls it.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The first value that is not allowed (the exclusive upper bound), or the
        /// inclusive bound where `field` says so.
        limit: u64,
    },
    /// Neither copy of a dual record is valid.
    NoValidCopy,
    /// The segment chain visits a physical segment twice.
    ChainCycle {
        /// The physical id met a second time.
        seg_id: u32,
    },
    /// The segment chain ends (no `HAS_NEXT`) before `n_segs` segments.
    ChainTooShort {
        /// Cache segments found.
        found: u32,
    },
    /// More LAST-kset hops than there are segments: the kset chain loops.
    KsetCycle,
    /// A field is not a multiple of what every writer keeps it a multiple of.
    Misaligned {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The alignment it must have.
        align: u64,
    },
    /// Something else, described.
    Invalid(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, only {have} present")
            }
            Self::BadMagic { found } => write!(f, "bad magic {found:#018x}"),
            Self::BadCrc { stored, computed } => {
                write!(
                    f,
                    "bad crc: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Self::BigEndian => f.write_str("formatted by a big-endian kernel (unsupported)"),
            Self::OutOfRange {
                field,
                value,
                limit,
            } => write!(f, "{field} = {value} is out of range (limit {limit})"),
            Self::NoValidCopy => f.write_str("neither copy is valid"),
            Self::ChainCycle { seg_id } => {
                write!(f, "physical segment {seg_id} appears twice in the chain")
            }
            Self::ChainTooShort { found } => {
                write!(f, "chain ends after {found} segments")
            }
            Self::KsetCycle => f.write_str("more LAST-kset hops than segments (cycle)"),
            Self::Misaligned {
                field,
                value,
                align,
            } => write!(f, "{field} = {value} is not a multiple of {align}"),
            Self::Invalid(what) => f.write_str(what),
        }
    }
}

/// A rejected on-media structure: what, where (absolute byte offset on the cache device),
/// and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{structure} at byte {offset:#x}: {reason}")]
pub struct FormatError {
    /// Which structure.
    pub structure: Structure,
    /// Absolute byte offset of the structure on the cache device.
    pub offset: u64,
    /// Why it was rejected.
    pub reason: Reason,
}

impl FormatError {
    /// Builds an error.
    #[must_use]
    pub const fn new(structure: Structure, offset: u64, reason: Reason) -> Self {
        Self {
            structure,
            offset,
            reason,
        }
    }

    /// Shorthand for an [`Reason::OutOfRange`] error.
    #[must_use]
    pub const fn range(
        structure: Structure,
        offset: u64,
        field: &'static str,
        value: u64,
        limit: u64,
    ) -> Self {
        Self::new(
            structure,
            offset,
            Reason::OutOfRange {
                field,
                value,
                limit,
            },
        )
    }
}

/// Result of this crate.
pub type Result<T, E = FormatError> = core::result::Result<T, E>;
