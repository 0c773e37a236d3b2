//! The one log walker: every reader of the kset log (replay at open, writeback, GC, and
//! the checks of `pcache-fsck` and `pcache-dump`) goes through it.
//!
//! A [`LogWalker`] starts at a log position and yields what it finds there, kset by kset
//! ([`WalkItem`]): a normal kset with its raw keys, a LAST kset (the walker follows its
//! link), or the end of the log (and why). It reads only the media, the segment chain and
//! the start position; it never writes, and it reads only a kset's own bytes (its header,
//! then the keys the header announces), never beyond: the bytes after the last durable
//! kset may be being written by a close.
//!
//! It owns the rules that are the same for every reader:
//! - the kernel's checks of a kset and their order ([`read_kset`]: magic, key count, CRC;
//!   a LAST link out of range or a kset overrunning its segment is an error);
//! - the hop limit: replay is deterministic, so entering a segment at offset 0 a second
//!   time repeats the same walk until the kernel's limit of `n_segs` LAST hops fails the
//!   load ([`WalkError::Cycle`]); only the start segment may be entered at 0 once after
//!   starting in its middle.
//!
//! What a key means is decided by [`examine_key`] and [`KeyFacts::verdict`] (or both at
//! once, [`judge_key`]), with the check order an explicit [`KeyOrder`].
//!
//! The walker reads through [`LogSource`]: every [`CacheMedia`] is one, and a checker may
//! bring its own (a tool's view of a device or an image).

use crate::media::{CacheMedia, MediaError};
use pcache_format::bitrot::{one_bit_damage, BitFlip, KsetShape};
use pcache_format::kset::{read_kset, KsetRead, LogEnd, KSET_FLAG_LAST, KSET_MAGIC};
use pcache_format::layout::{
    self, CachePos, SegmentChain, KSET_HEADER_SIZE, KSET_SIZE_MAX, SEG_DATA_SIZE,
};
use pcache_format::raw::{RawKey, RawKsetHeader};
use pcache_format::{FormatError, Key, KeyBounds};
use zerocopy::FromBytes;

/// The bytes the walker reads: a cache device.
pub trait LogSource {
    /// Copies `buf.len()` bytes at absolute offset `off` into `buf`.
    ///
    /// # Errors
    /// The range is outside the device, or it could not be read.
    fn read_log(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError>;
}

impl<T: CacheMedia + ?Sized> LogSource for T {
    fn read_log(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.read(off, buf)
    }
}

/// One step of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkItem<'b> {
    /// A valid normal kset.
    Kset {
        /// Its log position.
        pos: CachePos,
        /// Its absolute offset on the media.
        at: u64,
        /// Its on-media size (the next kset follows at `pos.off + size`).
        size: u32,
        /// Its raw keys, not yet judged ([`judge_key`]).
        keys: &'b [RawKey],
    },
    /// A valid LAST kset; the walk continues at `(next, 0)`.
    Last {
        /// Its log position.
        pos: CachePos,
        /// Its absolute offset.
        at: u64,
        /// The cache segment the log continues in.
        next: u32,
    },
    /// The end of the log: nothing valid at `pos` (where the next kset goes).
    End {
        /// The position of the first invalid kset: key_head, for a walk from key_tail.
        pos: CachePos,
        /// Its absolute offset.
        at: u64,
        /// Why it is not a kset.
        end: LogEnd,
        /// The bytes of its header, as far as the segment has them (for the evidence a
        /// checker looks at: a zero terminator, or the debris of a torn or damaged kset).
        header: &'b [u8],
    },
}

impl WalkItem<'_> {
    /// The item's log position.
    #[must_use]
    pub fn pos(&self) -> CachePos {
        match *self {
            WalkItem::Kset { pos, .. } | WalkItem::Last { pos, .. } | WalkItem::End { pos, .. } => {
                pos
            }
        }
    }
}

/// Why a walk cannot go on. Unlike [`WalkItem::End`], which is the normal end of a log,
/// these fail the kernel's load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The position is not inside the cache (a tail or link pointing outside it).
    #[error("log position {0} is outside the cache")]
    OffDevice(CachePos),
    /// A valid kset that cannot be right: a LAST link out of range, or a normal kset that
    /// overruns its segment (the 7.x hardening fails the load).
    #[error("kset at {pos}")]
    Kset {
        /// Its log position.
        pos: CachePos,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// The LAST links loop: the kernel follows them until it has made more than `n_segs`
    /// hops, then fails.
    #[error(
        "the log loops: the LAST kset at {pos} links back to segment {next}, which the walk \
         already entered (the kernel fails after {limit} hops)"
    )]
    Cycle {
        /// The LAST kset's position.
        pos: CachePos,
        /// Its absolute offset.
        at: u64,
        /// Where it links.
        next: u32,
        /// The hop limit (`n_segs`).
        limit: u32,
    },
    /// Reading the media failed.
    #[error("reading the kset at {pos}")]
    Media {
        /// The position being read.
        pos: CachePos,
        /// The cause.
        #[source]
        source: MediaError,
    },
}

impl WalkError {
    /// The log position the walk failed at.
    #[must_use]
    pub fn pos(&self) -> CachePos {
        match *self {
            WalkError::OffDevice(pos)
            | WalkError::Kset { pos, .. }
            | WalkError::Cycle { pos, .. }
            | WalkError::Media { pos, .. } => pos,
        }
    }
}

/// The segments a walk has entered at offset 0.
#[derive(Debug, Clone)]
struct Entered(Vec<bool>);

impl Entered {
    /// A walk starting at `start`, which counts as entering its segment only at offset 0.
    fn new(n_segs: u32, start: CachePos) -> Self {
        let mut v = vec![false; n_segs as usize];
        if start.off == 0 {
            if let Some(e) = v.get_mut(start.seg as usize) {
                *e = true;
            }
        }
        Self(v)
    }

    /// Records entering `seg` at offset 0; false when that already happened (or `seg` is
    /// out of range): the walk loops.
    fn enter(&mut self, seg: u32) -> bool {
        match self.0.get_mut(seg as usize) {
            Some(e) if !*e => {
                *e = true;
                true
            }
            _ => false,
        }
    }
}

/// A walk along the kset log from a start position; see the module documentation.
pub struct LogWalker<'a, S: LogSource + ?Sized = dyn CacheMedia> {
    media: &'a S,
    chain: &'a SegmentChain,
    pos: CachePos,
    hops: u32,
    entered: Entered,
    buf: Vec<u8>,
    ended: bool,
}

impl<S: LogSource + ?Sized> std::fmt::Debug for LogWalker<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWalker")
            .field("pos", &self.pos)
            .field("hops", &self.hops)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<'a, S: LogSource + ?Sized> LogWalker<'a, S> {
    /// A walk from `start` over the log stored on `media` in the segments of `chain`.
    #[must_use]
    pub fn new(media: &'a S, chain: &'a SegmentChain, start: CachePos) -> Self {
        Self {
            media,
            chain,
            pos: start,
            hops: 0,
            entered: Entered::new(chain.len(), start),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// Where the walk is: the position of the next item (after the end, the end's).
    #[must_use]
    pub fn pos(&self) -> CachePos {
        self.pos
    }

    /// LAST ksets followed so far.
    #[must_use]
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// The next item: a kset, a LAST kset (whose link the walker then follows), or the end
    /// of the log, after which it returns `None`.
    ///
    /// # Errors
    /// See [`WalkError`]; the walk cannot go on after an error.
    pub fn next_item(&mut self) -> Result<Option<WalkItem<'_>>, WalkError> {
        if self.ended {
            return Ok(None);
        }
        let pos = self.pos;
        let Some(at) = self.chain.abs(pos) else {
            self.ended = true;
            return Err(WalkError::OffDevice(pos));
        };
        let n_segs = self.chain.len();
        let room = SEG_DATA_SIZE.saturating_sub(pos.off);
        if let Err(source) = read_own_bytes(self.media, at, room, &mut self.buf) {
            self.ended = true;
            return Err(WalkError::Media { pos, source });
        }
        let read = match read_kset(&self.buf, room, n_segs, at) {
            Ok(r) => r,
            Err(source) => {
                self.ended = true;
                return Err(WalkError::Kset { pos, source });
            }
        };
        match read {
            KsetRead::End(end) => {
                self.ended = true;
                let n = self.buf.len().min(KSET_HEADER_SIZE as usize);
                Ok(Some(WalkItem::End {
                    pos,
                    at,
                    end,
                    header: &self.buf[..n],
                }))
            }
            KsetRead::Last { next } => {
                self.hops += 1;
                if !self.entered.enter(next) || self.hops > n_segs {
                    self.ended = true;
                    return Err(WalkError::Cycle {
                        pos,
                        at,
                        next,
                        limit: n_segs,
                    });
                }
                self.pos = CachePos::new(next, 0);
                Ok(Some(WalkItem::Last { pos, at, next }))
            }
            KsetRead::Keys { keys, size } => {
                self.pos = CachePos::new(pos.seg, pos.off + size);
                Ok(Some(WalkItem::Kset {
                    pos,
                    at,
                    size,
                    keys,
                }))
            }
        }
    }
}

/// Reads the kset at absolute offset `at` with `room` bytes left in its segment into
/// `buf`: its header, then the keys the header announces (for a kset that may be one),
/// never more.
fn read_own_bytes<S: LogSource + ?Sized>(
    media: &S,
    at: u64,
    room: u32,
    buf: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let hdr = KSET_HEADER_SIZE.min(room) as usize;
    buf.resize(hdr, 0);
    media.read_log(at, &mut buf[..hdr])?;
    let n = match RawKsetHeader::read_from_prefix(&buf[..]) {
        Ok((h, _)) if h.magic.get() == KSET_MAGIC && h.flags.get() & KSET_FLAG_LAST == 0 => {
            let keys = h.key_num.get().min(layout::KSET_KEYS_MAX);
            layout::kset_size(keys).min(room) as usize
        }
        _ => hdr,
    };
    if n > hdr {
        buf.resize(n, 0);
        media.read_log(at + hdr as u64, &mut buf[hdr..n])?;
    }
    Ok(())
}

/// In which order a key's checks are made, which decides what a key that fails two of
/// them is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// The kernel's (7.3): the data CRC is checked while decoding, before the generation,
    /// so a stale key whose segment was reused fails the load on a data_crc cache.
    Kernel,
    /// pcache's: a stale key is dropped before its data CRC is checked (reused space
    /// would fail it, and the key is dead anyway).
    Pcache,
}

/// What replay makes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Decoded, current generation, data CRC matching (or not checked): replay inserts it.
    Live(Key),
    /// Its segment's generation moved past the key's: replay drops it.
    Stale(Key),
    /// Its data does not match its CRC: replay fails.
    BadCrc {
        /// The key.
        key: Key,
        /// The CRC of the data found.
        found: u32,
    },
    /// It fails decoding (length, bounds, segment): replay fails.
    Invalid(FormatError),
}

impl KeyVerdict {
    /// Whether replay fails on this key.
    #[must_use]
    pub fn fails(&self) -> bool {
        matches!(self, KeyVerdict::BadCrc { .. } | KeyVerdict::Invalid(_))
    }
}

/// The current generation of each cache segment, as a key is judged against it.
pub trait Generations {
    /// The generation of cache segment `seg` (0 for one that does not exist).
    fn gen(&self, seg: u32) -> u64;
}

impl Generations for &[u64] {
    fn gen(&self, seg: u32) -> u64 {
        self.get(seg as usize).copied().unwrap_or(0)
    }
}

impl<F: Fn(u32) -> u64> Generations for F {
    fn gen(&self, seg: u32) -> u64 {
        self(seg)
    }
}

/// What [`examine_key`] checks a key against.
pub struct KeyContext<'a, S: LogSource + ?Sized = dyn CacheMedia> {
    /// The backing size and the number of segments.
    pub bounds: KeyBounds,
    /// The current generation of each cache segment.
    pub gen: &'a dyn Generations,
    /// Where to read a key's data to check its CRC; `None` when the cache has no data
    /// CRCs (or they are not to be checked).
    pub data: Option<(&'a S, &'a SegmentChain)>,
    /// The check order; with [`KeyOrder::Pcache`] a stale key's data is not read.
    pub order: KeyOrder,
    /// Only the kernel's decode checks, without pcache's refusal of a key that crosses a
    /// 4 MiB logical boundary (a checker reports that one on its own).
    pub kernel_decode: bool,
}

impl<S: LogSource + ?Sized> Clone for KeyContext<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: LogSource + ?Sized> Copy for KeyContext<'_, S> {}

impl<S: LogSource + ?Sized> std::fmt::Debug for KeyContext<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyContext")
            .field("bounds", &self.bounds)
            .field("data_crc", &self.data.is_some())
            .field("order", &self.order)
            .field("kernel_decode", &self.kernel_decode)
            .finish_non_exhaustive()
    }
}

/// Everything known about a key that decoded: its generation and, where it was read,
/// its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFacts {
    /// The decoded key.
    pub key: Key,
    /// The segment's current generation.
    pub seg_gen: u64,
    /// Its data was read and its CRC is this, where it does not match the key's; `None`
    /// when the data matches or was not read.
    pub bad_crc: Option<u32>,
    /// Whether the data was read.
    pub crc_checked: bool,
}

impl KeyFacts {
    /// Whether the key's segment moved past it.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.key.seg_gen < self.seg_gen
    }

    /// What replay makes of the key when its checks are made in `order`.
    #[must_use]
    pub fn verdict(&self, order: KeyOrder) -> KeyVerdict {
        let stale = self.is_stale();
        match (order, stale, self.bad_crc) {
            (KeyOrder::Pcache, true, _) | (KeyOrder::Kernel, true, None) => {
                KeyVerdict::Stale(self.key)
            }
            (_, _, Some(found)) => KeyVerdict::BadCrc {
                key: self.key,
                found,
            },
            (_, false, None) => KeyVerdict::Live(self.key),
        }
    }
}

/// The absolute offset of key `index` of the kset at `at`.
#[must_use]
pub fn key_offset(at: u64, index: usize) -> u64 {
    at + u64::from(KSET_HEADER_SIZE) + 40 * index as u64
}

/// Decodes key `index` of the kset at absolute offset `at` and gathers its facts: the
/// decode error, or its generation and (where `cx.data` allows, and `cx.order` needs it)
/// its data CRC.
///
/// # Errors
/// Reading the key's data failed.
pub fn examine_key<S: LogSource + ?Sized>(
    raw: &RawKey,
    at: u64,
    index: usize,
    cx: &KeyContext<'_, S>,
) -> Result<Result<KeyFacts, FormatError>, MediaError> {
    let key_at = key_offset(at, index);
    let decoded = if cx.kernel_decode {
        Key::decode_kernel(raw, &cx.bounds, key_at)
    } else {
        Key::decode(raw, &cx.bounds, key_at)
    };
    let key = match decoded {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let mut facts = KeyFacts {
        key,
        seg_gen: cx.gen.gen(key.pos.seg),
        bad_crc: None,
        crc_checked: false,
    };
    if facts.is_stale() && cx.order == KeyOrder::Pcache {
        return Ok(Ok(facts));
    }
    if let Some((media, chain)) = cx.data {
        facts.bad_crc = data_crc_mismatch(media, chain, &key)?;
        facts.crc_checked = true;
    }
    Ok(Ok(facts))
}

/// Judges one key (the one place that says what replay makes of a key): [`examine_key`]
/// then [`KeyFacts::verdict`] in `cx.order`.
///
/// # Errors
/// Reading the key's data failed.
pub fn judge_key<S: LogSource + ?Sized>(
    raw: &RawKey,
    at: u64,
    index: usize,
    cx: &KeyContext<'_, S>,
) -> Result<KeyVerdict, MediaError> {
    Ok(match examine_key(raw, at, index, cx)? {
        Ok(facts) => facts.verdict(cx.order),
        Err(e) => KeyVerdict::Invalid(e),
    })
}

/// The CRC of a key's data if it does not match the key's, `None` if it does.
///
/// # Errors
/// Reading the data failed (a position outside the cache is a mismatch, not an error).
pub fn data_crc_mismatch<S: LogSource + ?Sized>(
    media: &S,
    chain: &SegmentChain,
    key: &Key,
) -> Result<Option<u32>, MediaError> {
    let Some(abs) = chain.abs(key.pos) else {
        return Ok(Some(0));
    };
    let mut data = vec![0; key.len as usize];
    media.read_log(abs, &mut data)?;
    let found = pcache_format::pcache_crc(&data);
    Ok((found != key.data_crc).then_some(found))
}

/// What the end of a log is, judged from what lies at it and right behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndEvidence {
    /// The zero terminator, or no room for a kset: the normal end.
    Clean,
    /// A torn last write (never promised): its commit word is zero, as pcache leaves a
    /// torn kset; or anything else without evidence of a durable log behind it.
    Torn,
    /// A valid kset with one flipped bit (and its commit word written): it was written
    /// whole, so it and the log behind it were durable; replay loses them. (A kset torn
    /// by the kernel, which writes it at once, can look so in rare cases.)
    BitFlip(BitFlip),
    /// A valid kset with current keys follows right after this one (by its own size): the
    /// log went on, and replay loses everything from here.
    Cut {
        /// Where the log goes on.
        next: CachePos,
    },
}

impl EndEvidence {
    /// A short name for reports and JSON: `clean`, `torn`, `bit_flip` or `cut`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            EndEvidence::Clean => "clean",
            EndEvidence::Torn => "torn",
            EndEvidence::BitFlip(_) => "bit_flip",
            EndEvidence::Cut { .. } => "cut",
        }
    }

    /// Whether durable ksets are lost behind the end: the log is damaged in the middle.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        matches!(self, EndEvidence::BitFlip(_) | EndEvidence::Cut { .. })
    }

    /// Where the log goes on behind a damaged kset at `pos`: after the repaired kset, or
    /// at the valid kset that follows.
    #[must_use]
    pub fn resume(&self, pos: CachePos) -> Option<CachePos> {
        match *self {
            EndEvidence::BitFlip(f) => Some(match f.was {
                KsetShape::Last { next } => CachePos::new(next, 0),
                KsetShape::Keys { size, .. } => CachePos::new(pos.seg, pos.off + size),
            }),
            EndEvidence::Cut { next } => Some(next),
            _ => None,
        }
    }
}

/// Judges the end of a log at `pos` (the first invalid kset a walk met): see
/// [`EndEvidence`]. Reads up to a whole kset there, and the kset after it.
///
/// # Errors
/// Reading the media failed.
pub fn judge_end<S: LogSource + ?Sized>(
    src: &S,
    chain: &SegmentChain,
    pos: CachePos,
    cx: &KeyContext<'_, S>,
) -> Result<EndEvidence, MediaError> {
    let Some(at) = chain.abs(pos) else {
        return Ok(EndEvidence::Torn);
    };
    let room = SEG_DATA_SIZE.saturating_sub(pos.off);
    if room < KSET_HEADER_SIZE {
        return Ok(EndEvidence::Clean);
    }
    let mut bytes = vec![0; room.min(KSET_SIZE_MAX) as usize];
    if let Err(e) = src.read_log(at, &mut bytes) {
        // The end of a truncated device: the header alone.
        bytes.truncate(KSET_HEADER_SIZE as usize);
        if src.read_log(at, &mut bytes).is_err() {
            return Err(e);
        }
    }
    let header = &bytes[..KSET_HEADER_SIZE as usize];
    if header.iter().all(|&b| b == 0) {
        return Ok(EndEvidence::Clean);
    }
    // pcache writes a kset's first 8 bytes (its CRC and key count) last, after the rest
    // is durable (K2b, L2b in docs/design.md): a kset torn by a power cut has them zero,
    // as the terminator it was written over.
    if header[..8].iter().all(|&b| b == 0) {
        return Ok(EndEvidence::Torn);
    }
    if let Some(flip) = one_bit_damage(&bytes, room, chain.len()) {
        return Ok(EndEvidence::BitFlip(flip));
    }
    // Its own size, as far as its header says.
    let Ok((hdr, _)) = RawKsetHeader::read_from_prefix(header) else {
        return Ok(EndEvidence::Torn);
    };
    let size = if hdr.flags.get() & KSET_FLAG_LAST != 0 {
        KSET_HEADER_SIZE
    } else if hdr.key_num.get() <= layout::KSET_KEYS_MAX {
        layout::kset_size(hdr.key_num.get())
    } else {
        return Ok(EndEvidence::Torn);
    };
    let next = CachePos::new(pos.seg, pos.off + size);
    let mut walk = LogWalker::new(src, chain, next);
    // The first normal kset behind it, through LAST links (a damaged kset may have been
    // the last of its segment).
    let mut hops = 0;
    let (at, keys) = loop {
        match walk.next_item() {
            Ok(Some(WalkItem::Last { .. })) if hops < 2 => hops += 1,
            Ok(Some(WalkItem::Kset { at, keys, .. })) => break (at, keys),
            _ => return Ok(EndEvidence::Torn),
        }
    };
    // A kset of an earlier lap of this segment may lie there: its keys are stale (their
    // segments were reused since) or do not decode any more. The log's own are current.
    let no_data = KeyContext { data: None, ..*cx };
    let mut current = !keys.is_empty();
    for (i, raw) in keys.iter().enumerate() {
        current &= matches!(judge_key(raw, at, i, &no_data)?, KeyVerdict::Live(_));
    }
    Ok(if current {
        EndEvidence::Cut { next }
    } else {
        EndEvidence::Torn
    })
}

/// What replay loses behind a damaged end of the log: the ksets from `resume` (see
/// [`EndEvidence::resume`]) to the log's real end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behind {
    /// Ksets (LAST ones included).
    pub ksets: u64,
    /// Keys in them.
    pub keys: u64,
    /// Bytes of their live, dirty (not CLEAN) keys.
    pub dirty_bytes: u64,
    /// The logical ranges of those keys, merged, in offset order.
    pub ranges: Vec<(u64, u64)>,
}

/// Walks the log behind a damaged end, from `resume`, and counts what is there.
///
/// # Errors
/// Reading the media failed.
pub fn behind<S: LogSource + ?Sized>(
    src: &S,
    chain: &SegmentChain,
    resume: CachePos,
    cx: &KeyContext<'_, S>,
) -> Result<Behind, MediaError> {
    let mut b = Behind::default();
    let mut ranges = Vec::new();
    let mut walk = LogWalker::new(src, chain, resume);
    let no_data = KeyContext { data: None, ..*cx };
    loop {
        match walk.next_item() {
            Ok(Some(WalkItem::Kset { at, keys, .. })) => {
                b.ksets += 1;
                for (i, raw) in keys.iter().enumerate() {
                    b.keys += 1;
                    if let KeyVerdict::Live(k) = judge_key(raw, at, i, &no_data)? {
                        if !k.is_clean() {
                            b.dirty_bytes += u64::from(k.len);
                            ranges.push((k.off, k.end()));
                        }
                    }
                }
            }
            Ok(Some(WalkItem::Last { .. })) => b.ksets += 1,
            Ok(Some(WalkItem::End { .. }) | None) => break,
            Err(WalkError::Media { source, .. }) => return Err(source),
            Err(_) => break,
        }
    }
    ranges.sort_unstable();
    for (s, e) in ranges {
        match b.ranges.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => b.ranges.push((s, e)),
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests;
