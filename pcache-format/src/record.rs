//! The superblock and the dual-copy metadata records: parsed, validated native types and
//! their encodings.
//!
//! Every record except the superblock starts with a [`RawMetaHeader`] and exists in two
//! copies ("slots"). A reader takes the valid copy with the newer 8-bit sequence number
//! ([`select_latest`]); a writer writes the *other* slot with the next sequence number
//! ([`Dual::next_write`]), so the newest copy is never overwritten.

use crate::crc::pcache_crc;
use crate::error::{FormatError, Reason, Result, Structure};
use crate::layout::{self, CachePos, KSET_ALIGN, SB_OFF, SEG_DATA_SIZE};
use crate::raw::{RawCacheInfo, RawMetaHeader, RawPos, RawSegGen, RawSegInfo, RawSuperblock};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `PCACHE_MAGIC`, the superblock magic.
pub const PCACHE_MAGIC: u64 = 0x65B0_5EFA_96C5_96EF;
/// Superblock flag: formatted by a big-endian kernel.
pub const SB_F_BIGENDIAN: u32 = 1;

/// Cache mode `writeback`, the only one the kernel runs (see [`crate::CacheMode`]).
pub const CACHE_MODE_WRITEBACK: u8 = 0;
/// Smallest gc_percent.
pub const GC_PERCENT_MIN: u8 = 0;
/// Largest gc_percent.
pub const GC_PERCENT_MAX: u8 = 90;
/// The kernel's default gc_percent.
pub const GC_PERCENT_DEFAULT: u8 = 70;

/// seg_info flag: the segment has a successor in the chain.
pub const SEG_INFO_HAS_NEXT: u32 = 1;
/// seg_info type value of a cache data segment (bits 1..4).
pub const SEG_TYPE_CACHE_DATA: u8 = 1;

fn truncated(structure: Structure, at: u64, need: usize, have: usize) -> FormatError {
    FormatError::new(
        structure,
        at,
        Reason::Truncated {
            need: need as u64,
            have: have as u64,
        },
    )
}

/// Reads a `T` from the front of `bytes`, or says the structure is truncated.
fn read_raw<T: FromBytes + KnownLayout + Immutable + Copy>(
    bytes: &[u8],
    structure: Structure,
    at: u64,
) -> Result<T> {
    T::read_from_prefix(bytes)
        .map(|(raw, _)| raw)
        .map_err(|_| truncated(structure, at, core::mem::size_of::<T>(), bytes.len()))
}

/// The superblock (`pcache_sb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Flags; only [`SB_F_BIGENDIAN`] is defined, and a parsed superblock never has it.
    pub flags: u32,
    /// Number of 16 MiB segments on the device.
    pub seg_num: u32,
    /// The 4 padding bytes, as read (covered by the CRC). Written as zero by us.
    pub pad: [u8; 4],
}

impl Superblock {
    /// A little-endian superblock for `seg_num` segments, with zero padding.
    #[must_use]
    pub const fn new(seg_num: u32) -> Self {
        Self {
            flags: 0,
            seg_num,
            pad: [0; 4],
        }
    }

    /// True when `bytes` (at least 24 bytes at offset 4 096) hold magic 0: the kernel's
    /// sign of an unformatted device.
    #[must_use]
    pub fn is_unformatted(bytes: &[u8]) -> bool {
        RawSuperblock::read_from_prefix(bytes).is_ok_and(|(raw, _)| raw.magic.get() == 0)
    }

    /// Parses and checks the superblock: magic, CRC over `[4, 24)`, endianness.
    /// [`Superblock::check_device`] checks `seg_num` against the device.
    ///
    /// # Errors
    /// Truncated input, wrong magic (including 0), a CRC mismatch, or the big-endian flag.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let at = SB_OFF;
        let raw: RawSuperblock = read_raw(bytes, Structure::Superblock, at)?;
        if raw.magic.get() != PCACHE_MAGIC {
            return Err(FormatError::new(
                Structure::Superblock,
                at,
                Reason::BadMagic {
                    found: raw.magic.get(),
                },
            ));
        }
        let computed = pcache_crc(&raw.as_bytes()[4..]);
        if computed != raw.crc.get() {
            return Err(FormatError::new(
                Structure::Superblock,
                at,
                Reason::BadCrc {
                    stored: raw.crc.get(),
                    computed,
                },
            ));
        }
        if raw.flags.get() & SB_F_BIGENDIAN != 0 {
            return Err(FormatError::new(
                Structure::Superblock,
                at,
                Reason::BigEndian,
            ));
        }
        Ok(Self {
            flags: raw.flags.get(),
            seg_num: raw.seg_num.get(),
            pad: raw.pad,
        })
    }

    /// The 7.x load check: `0 < seg_num ≤ min(device capacity in segments, 1 048 576)`.
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] on `seg_num`.
    pub fn check_device(&self, device_bytes: u64) -> Result<()> {
        let max = layout::max_seg_num(device_bytes);
        if self.seg_num == 0 || self.seg_num > max {
            return Err(FormatError::range(
                Structure::Superblock,
                SB_OFF + 16,
                "seg_num (1..=limit)",
                u64::from(self.seg_num),
                u64::from(max),
            ));
        }
        Ok(())
    }

    /// The 24 on-media bytes, CRC included.
    #[must_use]
    pub fn encode(&self) -> [u8; 24] {
        let mut raw = RawSuperblock {
            crc: 0.into(),
            flags: self.flags.into(),
            magic: PCACHE_MAGIC.into(),
            seg_num: self.seg_num.into(),
            pad: self.pad,
        };
        raw.crc = pcache_crc(&raw.as_bytes()[4..]).into();
        let mut out = [0; 24];
        out.copy_from_slice(raw.as_bytes());
        out
    }
}

/// A record that starts with a meta header and lives in two copies.
pub trait MetaRecord: Sized + Copy {
    /// The on-media layout.
    type Raw: FromBytes + IntoBytes + KnownLayout + Immutable + Copy;
    /// Which structure this is, for errors.
    const STRUCTURE: Structure;
    /// The header inside a raw record.
    fn header(raw: &Self::Raw) -> RawMetaHeader;
    /// The native value of a raw record (no validation beyond the CRC is done here).
    fn from_raw(raw: &Self::Raw) -> Self;
    /// The raw record with `header` (whose CRC is filled in by [`encode_meta`]).
    fn to_raw(&self, header: RawMetaHeader) -> Self::Raw;
}

/// A record together with the sequence number it was stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The stored `seq`.
    pub seq: u8,
    /// The record.
    pub value: T,
}

/// Decodes one copy of a meta record at absolute offset `at`: CRC over `[4, size)` of the
/// bytes as read (`version`/`res` included, never checked).
///
/// # Errors
/// Truncated input or a CRC mismatch.
pub fn decode_meta<R: MetaRecord>(bytes: &[u8], at: u64) -> Result<Versioned<R>> {
    let raw: R::Raw = read_raw(bytes, R::STRUCTURE, at)?;
    let stored = R::header(&raw).crc.get();
    let computed = pcache_crc(&raw.as_bytes()[4..]);
    if stored != computed {
        return Err(FormatError::new(
            R::STRUCTURE,
            at,
            Reason::BadCrc { stored, computed },
        ));
    }
    Ok(Versioned {
        seq: R::header(&raw).seq,
        value: R::from_raw(&raw),
    })
}

/// Encodes a meta record with sequence number `seq` (version and res 0) and its CRC.
#[must_use]
pub fn encode_meta<R: MetaRecord>(value: &R, seq: u8) -> R::Raw {
    let header = RawMetaHeader {
        crc: 0.into(),
        seq,
        version: 0,
        res: 0.into(),
    };
    let mut raw = value.to_raw(header);
    let crc = pcache_crc(&raw.as_bytes()[4..]);
    raw.as_mut_bytes()[..4].copy_from_slice(&crc.to_le_bytes());
    raw
}

/// The kernel's choice of the latest of two copies, given each copy's `seq` if the copy is
/// valid: slot 0 first, then slot 1 replaces it only if `(i8)(seq1 − seq0) > 0`. So ties,
/// and differences of exactly 128, keep slot 0.
#[must_use]
pub fn select_latest(seqs: [Option<u8>; 2]) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, seq) in seqs.iter().enumerate() {
        if let Some(seq) = *seq {
            // Reinterpreting the wrapped difference as signed is the comparison itself.
            #[allow(clippy::cast_possible_wrap)]
            let newer = best.is_none_or(|(_, b)| seq.wrapping_sub(b) as i8 > 0);
            if newer {
                best = Some((i, seq));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// One copy of a dual record as found on the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<T> {
    /// A copy with a good CRC.
    Valid(Versioned<T>),
    /// A copy that failed to decode.
    Invalid(FormatError),
}

impl<T> Slot<T> {
    /// The copy, if valid.
    #[must_use]
    pub const fn valid(&self) -> Option<&Versioned<T>> {
        match self {
            Self::Valid(v) => Some(v),
            Self::Invalid(_) => None,
        }
    }
}

/// Both copies of a dual record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dual<T> {
    /// Slot 0 and slot 1.
    pub slots: [Slot<T>; 2],
}

impl<R: MetaRecord> Dual<R> {
    /// Decodes both copies (`bytes[i]` read at absolute offset `at[i]`).
    #[must_use]
    pub fn decode(bytes: [&[u8]; 2], at: [u64; 2]) -> Self {
        let one = |i: usize| match decode_meta::<R>(bytes[i], at[i]) {
            Ok(v) => Slot::Valid(v),
            Err(e) => Slot::Invalid(e),
        };
        Self {
            slots: [one(0), one(1)],
        }
    }
}

impl<T> Dual<T> {
    /// The same copies with their errors attributed to `structure` (dirty_tail shares
    /// [`TailPos`] with key_tail).
    #[must_use]
    pub fn relabel(mut self, structure: Structure) -> Self {
        for slot in &mut self.slots {
            if let Slot::Invalid(e) = slot {
                e.structure = structure;
            }
        }
        self
    }

    /// Index of the latest valid copy ([`select_latest`]).
    #[must_use]
    pub fn latest_slot(&self) -> Option<usize> {
        select_latest([
            self.slots[0].valid().map(|v| v.seq),
            self.slots[1].valid().map(|v| v.seq),
        ])
    }

    /// The latest valid copy.
    #[must_use]
    pub fn latest(&self) -> Option<&Versioned<T>> {
        self.latest_slot().and_then(|i| self.slots[i].valid())
    }

    /// Where and with which `seq` the next update goes: the slot that does not hold the
    /// latest copy, with the latest `seq` + 1 (wrapping). With no valid copy: slot 1, seq 1,
    /// as the kernel does for cache_info, seg_info and seg_gen.
    #[must_use]
    pub fn next_write(&self) -> (usize, u8) {
        next_write(
            self.latest_slot()
                .map(|i| (i, self.slots[i].valid().map_or(0, |v| v.seq))),
        )
    }
}

/// [`Dual::next_write`] from the latest copy's slot and seq.
#[must_use]
pub fn next_write(latest: Option<(usize, u8)>) -> (usize, u8) {
    match latest {
        Some((slot, seq)) => (1 - slot.min(1), seq.wrapping_add(1)),
        None => (1, 1),
    }
}

/// `pcache_cache_info`: the cache's settings and the head of its segment chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInfo {
    /// Physical id of cache segment 0.
    pub seg_id: u32,
    /// Number of cache segments.
    pub n_segs: u32,
    /// DATA_CRC: keys carry a CRC of their data.
    pub data_crc: bool,
    /// INIT_DONE: the cache has been formatted completely.
    pub init_done: bool,
    /// CACHE_MODE (4 bits): [`crate::CacheMode`]'s value (the kernel keeps it and runs
    /// writeback).
    pub cache_mode: u8,
    /// GC_PERCENT (7 bits), 0..=90.
    pub gc_percent: u8,
    /// Flag bits 13..31, undefined (0 on every image we know).
    pub unknown_flags: u32,
    /// The reserved word.
    pub reserved: u32,
}

const CI_DATA_CRC: u32 = 1;
const CI_INIT_DONE: u32 = 1 << 1;
const CI_MODE_SHIFT: u32 = 2;
const CI_MODE_MASK: u32 = 0xF << CI_MODE_SHIFT;
const CI_GC_SHIFT: u32 = 6;
const CI_GC_MASK: u32 = 0x7F << CI_GC_SHIFT;
const CI_KNOWN: u32 = CI_DATA_CRC | CI_INIT_DONE | CI_MODE_MASK | CI_GC_MASK;

impl CacheInfo {
    /// The cache_info of a freshly formatted writeback cache.
    #[must_use]
    pub const fn fresh(n_segs: u32, data_crc: bool, gc_percent: u8) -> Self {
        Self {
            seg_id: 0,
            n_segs,
            data_crc,
            init_done: true,
            cache_mode: CACHE_MODE_WRITEBACK,
            gc_percent,
            unknown_flags: 0,
            reserved: 0,
        }
    }

    /// The `flags` word.
    #[must_use]
    pub fn flags(&self) -> u32 {
        u32::from(self.data_crc)
            | (u32::from(self.init_done) << 1)
            | ((u32::from(self.cache_mode) << CI_MODE_SHIFT) & CI_MODE_MASK)
            | ((u32::from(self.gc_percent) << CI_GC_SHIFT) & CI_GC_MASK)
            | (self.unknown_flags & !CI_KNOWN)
    }

    /// Checks the settings against the device: `n_segs ≤ seg_num` (7.x) and a head segment
    /// inside the device. gc_percent and cache_mode are not checked by the kernel on load;
    /// see [`CacheInfo::lint`].
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] naming the field.
    pub fn validate(&self, seg_num: u32, at: u64) -> Result<()> {
        if self.n_segs == 0 || self.n_segs > seg_num {
            return Err(FormatError::range(
                Structure::CacheInfo,
                at,
                "n_segs (1..=limit)",
                u64::from(self.n_segs),
                u64::from(seg_num),
            ));
        }
        if self.seg_id >= seg_num {
            return Err(FormatError::range(
                Structure::CacheInfo,
                at,
                "seg_id",
                u64::from(self.seg_id),
                u64::from(seg_num),
            ));
        }
        Ok(())
    }

    /// pcache's own checks of the settings, beyond the kernel's: a gc_percent over 90 (no
    /// writer stores one: the kernel's `gc_percent` message refuses it, and with it GC
    /// would not start before the cache is full) and undefined flag bits 13..31 (a newer
    /// or foreign writer, whose meaning pcache cannot know). The kernel accepts both.
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] for gc_percent, [`Reason::Invalid`] for the flags.
    pub fn validate_pcache(&self, at: u64) -> Result<()> {
        if self.gc_percent > GC_PERCENT_MAX {
            return Err(FormatError::range(
                Structure::CacheInfo,
                at,
                "gc_percent (maximum, inclusive)",
                u64::from(self.gc_percent),
                u64::from(GC_PERCENT_MAX),
            ));
        }
        if self.unknown_flags != 0 {
            return Err(FormatError::new(
                Structure::CacheInfo,
                at,
                Reason::Invalid("undefined flag bits 13..31 are set"),
            ));
        }
        Ok(())
    }

    /// Settings the kernel accepts but never writes and pcache accepts too: a cache mode
    /// other than writeback's four or passthrough, a non-zero reserved word. (A gc_percent
    /// over 90 and undefined flags are [`CacheInfo::validate_pcache`]'s.)
    #[must_use]
    pub fn lint(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if crate::CacheMode::from_value(self.cache_mode).is_none() {
            out.push("cache_mode is not one of the kernel's four or pcache's passthrough");
        }
        if self.reserved != 0 {
            out.push("reserved word is not zero");
        }
        out
    }
}

impl MetaRecord for CacheInfo {
    type Raw = RawCacheInfo;
    const STRUCTURE: Structure = Structure::CacheInfo;

    fn header(raw: &RawCacheInfo) -> RawMetaHeader {
        raw.header
    }

    fn from_raw(raw: &RawCacheInfo) -> Self {
        let flags = raw.flags.get();
        // Masked fields fit their types.
        #[allow(clippy::cast_possible_truncation)]
        Self {
            seg_id: raw.seg_id.get(),
            n_segs: raw.n_segs.get(),
            data_crc: flags & CI_DATA_CRC != 0,
            init_done: flags & CI_INIT_DONE != 0,
            cache_mode: ((flags & CI_MODE_MASK) >> CI_MODE_SHIFT) as u8,
            gc_percent: ((flags & CI_GC_MASK) >> CI_GC_SHIFT) as u8,
            unknown_flags: flags & !CI_KNOWN,
            reserved: raw.reserved.get(),
        }
    }

    fn to_raw(&self, header: RawMetaHeader) -> RawCacheInfo {
        RawCacheInfo {
            header,
            seg_id: self.seg_id.into(),
            n_segs: self.n_segs.into(),
            flags: self.flags().into(),
            reserved: self.reserved.into(),
        }
    }
}

/// One copy of key_tail or dirty_tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailPos(pub CachePos);

impl TailPos {
    /// The 7.x checks: `cache_seg_id < n_segs` and `seg_off < data size`.
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] naming the field.
    pub fn validate(&self, n_segs: u32, structure: Structure, at: u64) -> Result<()> {
        if self.0.seg >= n_segs {
            return Err(FormatError::range(
                structure,
                at,
                "cache_seg_id",
                u64::from(self.0.seg),
                u64::from(n_segs),
            ));
        }
        if self.0.off >= SEG_DATA_SIZE {
            return Err(FormatError::range(
                structure,
                at,
                "seg_off",
                u64::from(self.0.off),
                u64::from(SEG_DATA_SIZE),
            ));
        }
        Ok(())
    }

    /// pcache's check beyond the kernel's: `seg_off` is a kset boundary, so a multiple of 8
    /// (every kset is `24 + 40 × n` bytes, packed from offset 0). The kernel would start
    /// reading ksets in the middle of one, find no magic there, and present an empty log.
    ///
    /// # Errors
    /// [`Reason::Misaligned`].
    pub fn validate_alignment(&self, structure: Structure, at: u64) -> Result<()> {
        if !self.0.off.is_multiple_of(KSET_ALIGN) {
            return Err(FormatError::new(
                structure,
                at,
                Reason::Misaligned {
                    field: "seg_off",
                    value: u64::from(self.0.off),
                    align: u64::from(KSET_ALIGN),
                },
            ));
        }
        Ok(())
    }
}

impl MetaRecord for TailPos {
    type Raw = RawPos;
    const STRUCTURE: Structure = Structure::KeyTail;

    fn header(raw: &RawPos) -> RawMetaHeader {
        raw.header
    }

    fn from_raw(raw: &RawPos) -> Self {
        Self(CachePos::new(raw.cache_seg_id.get(), raw.seg_off.get()))
    }

    fn to_raw(&self, header: RawMetaHeader) -> RawPos {
        RawPos {
            header,
            cache_seg_id: self.0.seg.into(),
            seg_off: self.0.off.into(),
        }
    }
}

/// `pcache_segment_info`: a segment's link in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegInfo {
    /// HAS_NEXT.
    pub has_next: bool,
    /// Segment type (bits 1..4); 1 is cache data. Not checked by the kernel.
    pub seg_type: u8,
    /// Flag bits 5..31, undefined.
    pub unknown_flags: u32,
    /// Physical id of the next segment (meaningful with `has_next`).
    pub next_seg: u32,
}

const SI_TYPE_SHIFT: u32 = 1;
const SI_TYPE_MASK: u32 = 0xF << SI_TYPE_SHIFT;

impl SegInfo {
    /// A cache-data segment, linked to `next` or the last of the chain.
    #[must_use]
    pub const fn data(next: Option<u32>) -> Self {
        Self {
            has_next: next.is_some(),
            seg_type: SEG_TYPE_CACHE_DATA,
            unknown_flags: 0,
            next_seg: match next {
                Some(n) => n,
                None => 0,
            },
        }
    }

    /// The `flags` word.
    #[must_use]
    pub fn flags(&self) -> u32 {
        u32::from(self.has_next)
            | ((u32::from(self.seg_type) << SI_TYPE_SHIFT) & SI_TYPE_MASK)
            | (self.unknown_flags & !(SEG_INFO_HAS_NEXT | SI_TYPE_MASK))
    }

    /// The next physical segment, if linked.
    #[must_use]
    pub const fn next(&self) -> Option<u32> {
        if self.has_next {
            Some(self.next_seg)
        } else {
            None
        }
    }
}

impl MetaRecord for SegInfo {
    type Raw = RawSegInfo;
    const STRUCTURE: Structure = Structure::SegmentInfo;

    fn header(raw: &RawSegInfo) -> RawMetaHeader {
        raw.header
    }

    fn from_raw(raw: &RawSegInfo) -> Self {
        let flags = raw.flags.get();
        // Masked to 4 bits.
        #[allow(clippy::cast_possible_truncation)]
        Self {
            has_next: flags & SEG_INFO_HAS_NEXT != 0,
            seg_type: ((flags & SI_TYPE_MASK) >> SI_TYPE_SHIFT) as u8,
            unknown_flags: flags & !(SEG_INFO_HAS_NEXT | SI_TYPE_MASK),
            next_seg: raw.next_seg.get(),
        }
    }

    fn to_raw(&self, header: RawMetaHeader) -> RawSegInfo {
        RawSegInfo {
            header,
            flags: self.flags().into(),
            next_seg: self.next_seg.into(),
        }
    }
}

/// `pcache_cache_seg_gen`: a segment's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegGen(pub u64);

impl MetaRecord for SegGen {
    type Raw = RawSegGen;
    const STRUCTURE: Structure = Structure::SegmentGen;

    fn header(raw: &RawSegGen) -> RawMetaHeader {
        raw.header
    }

    fn from_raw(raw: &RawSegGen) -> Self {
        Self(raw.gen.get())
    }

    fn to_raw(&self, header: RawMetaHeader) -> RawSegGen {
        RawSegGen {
            header,
            gen: self.0.into(),
        }
    }
}

#[cfg(test)]
mod tests;
