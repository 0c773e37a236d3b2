//! The parts of a [`Scan`](super::Scan): positions, the superblock, dual-record copies,
//! cache_info and the status line.

use pcache_format::layout::CachePos;
use pcache_format::record::CacheInfo;
use serde::Serialize;
use std::fmt;

/// A position in the cache: cache segment id and offset in its data area. In JSON it is
/// `"seg:off"`, as every position pcache prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Cache (logical) segment id.
    pub seg: u32,
    /// Offset in the segment's data area.
    pub off: u32,
}

impl From<CachePos> for Pos {
    fn from(p: CachePos) -> Self {
        Self {
            seg: p.seg,
            off: p.off,
        }
    }
}

impl From<Pos> for CachePos {
    fn from(p: Pos) -> Self {
        CachePos::new(p.seg, p.off)
    }
}

impl Serialize for Pos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seg, self.off)
    }
}

/// The superblock as found.
#[derive(Debug, Clone, Serialize)]
pub struct SbView {
    /// Absolute offset (4 096).
    pub offset: u64,
    /// Whether it passed every check the kernel makes.
    pub valid: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The raw fields, when the device is long enough to hold them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<SbFields>,
    /// Whole segments the device can hold.
    pub device_segments: u32,
}

/// The superblock's fields as stored.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SbFields {
    /// Stored CRC.
    pub crc: u32,
    /// Flags (bit 0: big-endian).
    pub flags: u32,
    /// Magic.
    pub magic: u64,
    /// Segment count.
    pub seg_num: u32,
    /// The padding bytes (covered by the CRC).
    pub pad: [u8; 4],
}

/// The state of one copy of a dual record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// The CRC matches.
    Valid,
    /// All zero: never written (normal for the unused slot of a fresh cache).
    Empty,
    /// Non-zero with a bad CRC: damaged, or torn by a crash.
    Damaged,
}

/// One copy of a dual record.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView<V> {
    /// Absolute offset.
    pub offset: u64,
    /// Valid, empty or damaged.
    pub state: SlotState,
    /// The stored sequence number (valid copies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u8>,
    /// The record (valid copies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<V>,
    /// Why the copy is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Both copies of a dual record, and which one the kernel uses.
#[derive(Debug, Clone, Serialize)]
pub struct DualView<V> {
    /// Slot 0 and slot 1.
    pub slots: [SlotView<V>; 2],
    /// The slot the kernel takes as current (newest valid copy).
    pub current: Option<usize>,
}

impl<V> DualView<V> {
    /// The current copy's value.
    #[must_use]
    pub fn value(&self) -> Option<&V> {
        self.current.and_then(|i| self.slots[i].value.as_ref())
    }

    /// True when neither copy holds anything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.state == SlotState::Empty)
    }
}

/// cache_info's fields, flags decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheInfoView {
    /// Physical id of cache segment 0.
    pub seg_id: u32,
    /// Number of cache segments.
    pub n_segs: u32,
    /// The whole flags word.
    pub flags: u32,
    /// DATA_CRC.
    pub data_crc: bool,
    /// INIT_DONE.
    pub init_done: bool,
    /// Cache mode (0 = writeback).
    pub cache_mode: u8,
    /// GC threshold in percent.
    pub gc_percent: u8,
    /// The reserved word.
    pub reserved: u32,
}

impl From<CacheInfo> for CacheInfoView {
    fn from(c: CacheInfo) -> Self {
        Self {
            seg_id: c.seg_id,
            n_segs: c.n_segs,
            flags: c.flags(),
            data_crc: c.data_crc,
            init_done: c.init_done,
            cache_mode: c.cache_mode,
            gc_percent: c.gc_percent,
            reserved: c.reserved,
        }
    }
}
