//! The kset log: replay from key_tail to key_head as the kernel does it on activation
//! (upstream-format.md F.2; stale keys per Errata 1), plus the checks replay does not make.
//!
//! The walk itself is the engine's ([`LogWalker`], the one walker of pcache); this module
//! turns what it yields into findings and views.

use super::finding::{Finding, Findings, Severity};
use super::image::Image;
use super::{Pos, ScanOptions};
use crate::media::MediaError;
use crate::walk::{
    behind, judge_end, Behind, EndEvidence, KeyContext, KeyOrder, LogSource, LogWalker, WalkError,
    WalkItem,
};
use pcache_format::layout::{CachePos, SegmentChain, KSET_HEADER_SIZE};
use pcache_format::{KeyBounds, LogEnd, Reason};
use serde::Serialize;
use std::io;

mod keys;

use keys::Extent;

/// What replay needs to know about the cache.
pub(crate) struct LogInput<'a> {
    /// The segment chain (physical id of each cache segment).
    pub chain: &'a SegmentChain,
    /// Generation of each cache segment.
    pub gens: &'a [u64],
    pub n_segs: u32,
    pub data_crc: bool,
    pub key_tail: CachePos,
    pub dirty_tail: CachePos,
}

/// How the log uses one cache segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegUsage {
    /// It holds part of the log.
    pub log: bool,
    /// Live keys pointing into it.
    pub live: u64,
    /// Stale keys pointing into it.
    pub stale: u64,
    /// Live dirty keys pointing into it.
    pub dirty: u64,
}

/// Why the log ends where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEndKind {
    /// An end-of-log terminator (no kset magic): the normal end.
    Terminator,
    /// Less than a kset header left in the segment.
    NoRoom,
    /// A kset with more than 128 keys.
    TooManyKeys,
    /// A kset with a bad CRC (a torn write, or damage).
    BadCrc,
    /// Replay fails here.
    Failed,
}

/// A kset's kind and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KsetKind {
    /// A normal kset.
    Keys {
        /// Number of keys.
        key_num: u32,
        /// On-media size.
        size: u32,
    },
    /// A LAST kset.
    Last {
        /// Cache segment id the log continues in.
        next: u32,
    },
}

/// One kset of the log.
#[derive(Debug, Clone, Serialize)]
pub struct KsetView {
    /// Log position.
    pub pos: Pos,
    /// Absolute offset.
    pub offset: u64,
    /// Kind and size.
    #[serde(flatten)]
    pub kind: KsetKind,
    /// At or after dirty_tail: not yet written back.
    pub dirty: bool,
    /// The keys, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyView>,
}

/// What replay makes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Inserted into the index.
    Live,
    /// `seg_gen` below the segment's gen: dropped.
    Stale,
    /// Fails the kernel's decode: replay fails.
    Invalid,
}

/// One key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// Index in its kset.
    pub index: u32,
    /// Logical offset on the backing device.
    pub off: u64,
    /// Length in bytes.
    pub len: u32,
    /// Flags (2 = CLEAN).
    pub flags: u32,
    /// Data position: cache segment and offset.
    pub data: Pos,
    /// Generation recorded in the key.
    pub seg_gen: u64,
    /// Stored data CRC.
    pub data_crc: u32,
    /// Live, stale or invalid.
    pub state: KeyState,
    /// Not yet written back (after dirty_tail, live, not CLEAN).
    pub dirty: bool,
    /// Whether the data matches `data_crc` (checked only with DATA_CRC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc_ok: Option<bool>,
}

/// The log as replay sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LogView {
    /// Where replay starts.
    pub key_tail: Pos,
    /// Where writeback resumes.
    pub dirty_tail: Pos,
    /// The first invalid kset: where the next kset goes.
    pub key_head: Pos,
    /// Why the log ends there.
    pub end: LogEndKind,
    /// Whether dirty_tail lies on the log (it must).
    pub dirty_tail_on_log: bool,
    /// LAST ksets followed.
    pub last_hops: u32,
    /// Ksets between key_tail and key_head (LAST ones included).
    pub ksets: u64,
    /// Keys in them.
    pub keys: u64,
    /// Keys replay inserts.
    pub live_keys: u64,
    /// Keys replay drops as stale.
    pub stale_keys: u64,
    /// Live keys not yet written back.
    pub dirty_keys: u64,
    /// Keys that fail decoding.
    pub invalid_keys: u64,
    /// Segments replay marks used (the `segs_used` of the status line).
    pub segs_used: u32,
    /// The ksets selected for display, in log order.
    pub listed: Vec<KsetView>,
    /// One past the highest logical byte a decodable key names.
    #[serde(skip)]
    pub max_key_end: u64,
    /// Ksets walked but not selected.
    pub not_listed: u64,
}

/// A tool's device as the engine's walker reads it: a read past the end of the device is
/// [`MediaError::OutOfRange`] (a truncated image), anything else an I/O error.
pub(crate) struct Src<'a, M: ?Sized>(pub &'a M);

impl<M: Image + ?Sized> LogSource for Src<'_, M> {
    fn read_log(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let size = self.0.size();
        match off.checked_add(buf.len() as u64) {
            Some(end) if end <= size => self
                .0
                .read_at(off, buf)
                .map_err(|source| MediaError::Io { op: "read", source }),
            _ => Err(MediaError::OutOfRange {
                off,
                len: buf.len() as u64,
                size,
            }),
        }
    }
}

/// A media error as the I/O error it is (a read past the end counts as one here).
fn media_io<T>(e: MediaError) -> io::Result<T> {
    Err(match e {
        MediaError::Io { source, .. } => source,
        other => io::Error::other(other),
    })
}

/// A media error the walk met: `None` for a read past the end of the device (reported as
/// a finding), the I/O error otherwise.
fn io_error(e: MediaError) -> Option<io::Error> {
    match e {
        MediaError::OutOfRange { .. } => None,
        MediaError::Io { source, .. } => Some(source),
        other => Some(io::Error::other(other)),
    }
}

struct Walker<'a, 'f, M: Image + ?Sized> {
    m: &'a M,
    input: &'a LogInput<'a>,
    opts: &'a ScanOptions,
    f: &'f mut Findings,
    bounds: KeyBounds,
    usage: Vec<SegUsage>,
    /// Data extents of live keys.
    extents: Vec<Extent>,
    view: LogView,
}

/// Replays the log. Returns the log and how it uses each cache segment.
pub(crate) fn walk<M: Image + ?Sized>(
    m: &M,
    input: &LogInput<'_>,
    opts: &ScanOptions,
    f: &mut Findings,
) -> io::Result<(LogView, Vec<SegUsage>)> {
    let mut w = Walker {
        m,
        input,
        opts,
        f,
        bounds: KeyBounds {
            backing_size: opts.backing_size.unwrap_or(u64::MAX),
            n_segs: input.n_segs,
        },
        usage: vec![SegUsage::default(); input.n_segs as usize],
        extents: Vec::new(),
        view: LogView {
            key_tail: input.key_tail.into(),
            dirty_tail: input.dirty_tail.into(),
            key_head: input.key_tail.into(),
            end: LogEndKind::Failed,
            dirty_tail_on_log: false,
            last_hops: 0,
            ksets: 0,
            keys: 0,
            live_keys: 0,
            stale_keys: 0,
            dirty_keys: 0,
            invalid_keys: 0,
            segs_used: 0,
            listed: Vec::new(),
            max_key_end: 0,
            not_listed: 0,
        },
    };
    w.run()?;
    w.check_overlaps();
    if !w.view.dirty_tail_on_log {
        w.f.push(Finding::new(
            Severity::Error,
            "dirty_tail_off_log",
            "dirty_tail",
            None,
            format!(
                "dirty_tail {} is not a kset position between key_tail {} and key_head {}: \
                 writeback and GC would work on the wrong ksets",
                w.view.dirty_tail, w.view.key_tail, w.view.key_head
            ),
        ));
        w.dirty_chain()?;
    }
    for (seg, u) in w.usage.iter().enumerate() {
        if u.log && u.live > 0 {
            w.f.push(Finding::new(
                Severity::Error,
                "seg_log_and_data",
                format!("segment {seg}"),
                None,
                format!(
                    "holds ksets of the log and the data of {} live keys: one overwrites \
                     the other",
                    u.live
                ),
            ));
        }
    }
    let used = w.usage.iter().filter(|u| u.log || u.live > 0).count();
    w.view.segs_used = u32::try_from(used).unwrap_or(u32::MAX);
    Ok((w.view, w.usage))
}

impl<M: Image + ?Sized> Walker<'_, '_, M> {
    fn run(&mut self) -> io::Result<()> {
        let src = Src(self.m);
        let mut walk = LogWalker::new(&src, self.input.chain, self.input.key_tail);
        let mut dirty = false;
        self.mark_log(self.input.key_tail.seg);
        loop {
            let pos = walk.pos();
            if pos == self.input.dirty_tail {
                dirty = true;
                self.view.dirty_tail_on_log = true;
            }
            self.view.key_head = pos.into();
            let what = format!("kset {}", Pos::from(pos));
            let item = match walk.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(()),
                Err(e) => return self.walk_failed(e, &what, dirty),
            };
            match item {
                WalkItem::End {
                    pos,
                    at,
                    end,
                    header,
                } => {
                    let header = header.to_vec();
                    self.end(end, &what, at, pos, &header)?;
                    return Ok(());
                }
                WalkItem::Last { pos, at, next } => {
                    self.view.ksets += 1;
                    self.view.last_hops += 1;
                    self.list(pos, at, KsetKind::Last { next }, dirty, Vec::new());
                    if next == self.input.key_tail.seg {
                        self.f.push(Finding::new(
                            Severity::Error,
                            "log_revisits_tail",
                            what,
                            Some(at),
                            format!(
                                "the LAST kset links back to key_tail's segment {next}: \
                                 replay re-reads ksets that GC has already consumed"
                            ),
                        ));
                    }
                    self.mark_log(next);
                }
                WalkItem::Kset {
                    pos,
                    at,
                    size,
                    keys,
                } => {
                    self.view.ksets += 1;
                    if keys.is_empty() {
                        self.f.push(Finding::new(
                            Severity::Error,
                            "kset_empty",
                            what.clone(),
                            Some(at),
                            "a valid kset with no keys: neither the kernel (which never closes \
                             an empty kset) nor pcache writes one, so something else wrote \
                             this log; the kernel and pcache step over its 24 bytes",
                        ));
                    }
                    let mut views = Vec::new();
                    for (i, raw) in (0u32..).zip(keys) {
                        let label = format!("key {}#{i}", Pos::from(pos));
                        let v = self.check_key(raw, pos.into(), i, at, &label, dirty)?;
                        if self.opts.keys {
                            views.push(v);
                        }
                    }
                    let kind = KsetKind::Keys {
                        key_num: u32::try_from(keys.len()).unwrap_or(u32::MAX),
                        size,
                    };
                    self.list(pos, at, kind, dirty, views);
                }
            }
        }
    }

    /// Reports why the walk could not go on: each of these fails the kernel's load.
    fn walk_failed(&mut self, e: WalkError, what: &str, dirty: bool) -> io::Result<()> {
        self.view.end = LogEndKind::Failed;
        let at = self.input.chain.abs(e.pos());
        match e {
            WalkError::Kset { source, .. } => {
                let code = match source.reason {
                    Reason::OutOfRange {
                        field: "next_cache_seg_id",
                        ..
                    } => "kset_bad_link",
                    _ => "kset_overrun",
                };
                self.f
                    .push(Finding::refusal(code, what, at, source.reason.to_string()));
            }
            WalkError::Cycle {
                pos,
                at,
                next,
                limit,
            } => {
                // The LAST kset is valid: it is part of the log replay walks.
                self.view.ksets += 1;
                self.view.last_hops += 1;
                self.list(pos, at, KsetKind::Last { next }, dirty, Vec::new());
                self.f.push(Finding::refusal(
                    "kset_cycle",
                    what,
                    Some(at),
                    format!(
                        "the LAST kset links back to log segment {next}: replay loops until \
                         it has made more than {limit} hops, then fails"
                    ),
                ));
            }
            WalkError::OffDevice(_) => self.truncated(what),
            WalkError::Media { source, .. } => match io_error(source) {
                None => self.truncated(what),
                Some(e) => return Err(e),
            },
        }
        Ok(())
    }

    fn truncated(&mut self, what: &str) {
        self.f.push(Finding::refusal(
            "log_truncated",
            what,
            None,
            "the log position lies beyond the end of the device",
        ));
    }

    fn mark_log(&mut self, seg: u32) {
        if let Some(u) = self.usage.get_mut(seg as usize) {
            u.log = true;
        }
    }

    fn list(&mut self, pos: CachePos, abs: u64, kind: KsetKind, dirty: bool, keys: Vec<KeyView>) {
        let in_range = self
            .opts
            .segments
            .as_ref()
            .is_none_or(|r| r.contains(&pos.seg));
        let room = self
            .opts
            .max_ksets
            .is_none_or(|max| (self.view.listed.len() as u64) < max);
        if in_range && room {
            self.view.listed.push(KsetView {
                pos: pos.into(),
                offset: abs,
                kind,
                dirty,
                keys,
            });
        } else {
            self.view.not_listed += 1;
        }
    }

    /// Records why the log ends at `pos` (whose bytes are `bytes`), and whether that end
    /// looks like damage: the normal end is the 24-byte zero terminator; anything else
    /// there is a torn write (after a crash) or damage, and a valid kset right after it
    /// means the log was cut and everything after it is lost.
    fn end(
        &mut self,
        end: LogEnd,
        what: &str,
        abs: u64,
        pos: CachePos,
        bytes: &[u8],
    ) -> io::Result<()> {
        let header = bytes.get(..KSET_HEADER_SIZE as usize).unwrap_or(bytes);
        let zero = header.iter().all(|&b| b == 0);
        let (kind, note) = match end {
            LogEnd::BadMagic if zero => (LogEndKind::Terminator, None),
            LogEnd::BadMagic => (
                LogEndKind::Terminator,
                Some(
                    "the log ends at a kset header that is neither a kset nor the zero \
                      terminator: a torn write or damage"
                        .to_owned(),
                ),
            ),
            LogEnd::NoRoom => (
                LogEndKind::NoRoom,
                Some(
                    "the log runs to the end of its segment without a LAST kset (a writer \
                     always keeps room for one)"
                        .to_owned(),
                ),
            ),
            LogEnd::TooManyKeys(n) => (
                LogEndKind::TooManyKeys,
                Some(format!(
                    "the log ends at a kset claiming {n} keys (more than 128): a torn write \
                     or damage"
                )),
            ),
            LogEnd::BadCrc => (
                LogEndKind::BadCrc,
                Some(
                    "the log ends at a kset with the kset magic but a bad crc: a torn write \
                     or damage"
                        .to_owned(),
                ),
            ),
        };
        self.view.end = kind;
        let Some(note) = note else { return Ok(()) };
        // What lies at the end and behind it: the engine's judgement, the same that makes
        // `pcache-ublk add` refuse the cache.
        let src = Src(self.m);
        let cx = KeyContext {
            bounds: self.bounds,
            gen: &self.input.gens,
            data: None,
            order: KeyOrder::Kernel,
            kernel_decode: true,
        };
        let chain = self.input.chain;
        let ev = judge_end(&src, chain, pos, &cx).or_else(media_io)?;
        let lost = match ev.resume(pos) {
            Some(resume) => Some(behind(&src, chain, resume, &cx).or_else(media_io)?),
            None => None,
        };
        let counts = |b: &Behind| {
            format!(
                "replay loses everything from here: {} ksets, {} keys and {} dirty bytes \
                 behind it (pcache-replay --salvage recovers them)",
                b.ksets, b.keys, b.dirty_bytes
            )
        };
        match (ev, lost) {
            (EndEvidence::BitFlip(flip), Some(b)) => self.f.push(Finding::new(
                Severity::Error,
                "kset_damaged",
                what,
                Some(abs),
                format!(
                    "{note}; it is a valid kset with bit {} of its byte {} flipped: damage \
                     after it was written, not a torn write, so it and the log behind it \
                     were durable; {}",
                    flip.bit,
                    flip.byte,
                    counts(&b)
                ),
            )),
            (EndEvidence::Cut { next }, Some(b)) => self.f.push(Finding::new(
                Severity::Error,
                "log_cut",
                what,
                Some(abs),
                format!(
                    "{note}; a valid kset with current keys follows at {}, so the log was \
                     cut here; {}",
                    Pos::from(next),
                    counts(&b)
                ),
            )),
            _ => {
                let code = if end == LogEnd::NoRoom {
                    "log_end_no_room"
                } else {
                    "log_end_damaged"
                };
                self.f
                    .push(Finding::new(Severity::Warning, code, what, Some(abs), note));
            }
        }
        Ok(())
    }

    /// The kernel's load-time check of the dirty-tail chain (7.x), for a dirty_tail that is
    /// not on the replayed log: follow ksets from dirty_tail to the first invalid one.
    fn dirty_chain(&mut self) -> io::Result<()> {
        let src = Src(self.m);
        let mut walk = LogWalker::new(&src, self.input.chain, self.input.dirty_tail);
        loop {
            let what = format!("dirty_tail chain: kset {}", Pos::from(walk.pos()));
            match walk.next_item() {
                Ok(None | Some(WalkItem::End { .. })) => return Ok(()),
                Ok(Some(_)) => {}
                Err(WalkError::Kset { source, .. }) => {
                    let at = self.input.chain.abs(walk.pos());
                    self.f.push(Finding::refusal(
                        "dirty_chain",
                        what,
                        at,
                        source.reason.to_string(),
                    ));
                    return Ok(());
                }
                Err(WalkError::Cycle { at, next, .. }) => {
                    self.f.push(Finding::refusal(
                        "dirty_chain",
                        what,
                        Some(at),
                        format!("the LAST chain from dirty_tail loops (back to {next})"),
                    ));
                    return Ok(());
                }
                Err(WalkError::Media { source, .. }) => {
                    return match io_error(source) {
                        None => Ok(()),
                        Some(e) => Err(e),
                    }
                }
                Err(_) => return Ok(()),
            }
        }
    }
}
