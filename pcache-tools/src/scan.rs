//! The image model shared by `pcache-dump` and `pcache-fsck`: one read-only pass over a
//! cache device that decodes every structure the kernel reads on activation, the way the
//! kernel reads it, and records [`Finding`]s on the way.
//!
//! The pass follows the kernel's activation (upstream-format.md F.0): superblock, both
//! cache_info copies, the segment chain with every segment's seg_info and generation
//! copies, both tails, then replay of the kset log from key_tail to key_head (F.2, with the
//! 7.3.4 treatment of stale keys of Errata 1). It never writes, never panics, and reads
//! only ranges it has checked against the device size.

use crate::chain::{self, ChainView};
use crate::device::Media;
use crate::finding::{Finding, Findings, Repair, Severity};
use crate::log::{self, LogView};
use pcache_format::layout::{self, CachePos, SB_OFF};
use pcache_format::raw::RawSuperblock;
use pcache_format::record::{CacheInfo, Dual, MetaRecord, Slot, TailPos, SB_F_BIGENDIAN};
use pcache_format::{Reason, Structure, Superblock};
use serde::Serialize;
use std::fmt;
use std::io;
use std::ops::Range;
use zerocopy::FromBytes;

/// What a scan reads beyond the metadata, and how much of the log it keeps for display.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Size of the backing device, to check that keys lie inside it (the kernel's
    /// `off + len ≤ backing size`). Unknown when `None`: only overflow is checked.
    pub backing_size: Option<u64>,
    /// Verify every key's data CRC when the cache has DATA_CRC (as replay does).
    pub verify_data_crc: bool,
    /// Keep the segments with these cache ids, and the ksets stored in them, in the
    /// result (all when `None`).
    pub segments: Option<Range<u32>>,
    /// Keep at most this many ksets in the result (all when `None`).
    pub max_ksets: Option<u64>,
    /// Keep each kept kset's keys.
    pub keys: bool,
    /// Keep at most this many findings of each kind.
    pub findings_cap: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            backing_size: None,
            verify_data_crc: true,
            segments: None,
            max_ksets: None,
            keys: false,
            findings_cap: 50,
        }
    }
}

impl ScanOptions {
    /// Options that keep no ksets: for checking only.
    #[must_use]
    pub fn check_only() -> Self {
        Self {
            max_ksets: Some(0),
            segments: Some(0..0),
            ..Self::default()
        }
    }
}

/// A position in the cache: cache segment id and offset in its data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// The summary the kernel prints for `dmsetup status` (upstream-format.md F.9), as it would
/// read right after activating this image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Superblock flags.
    pub sb_flags: u32,
    /// Segments on the device (superblock).
    pub seg_num: u32,
    /// The kernel's in-memory segment count, which it sets to `seg_num`.
    pub n_segs: u32,
    /// Segments marked used by replay: key_tail's segment, the segments reached through
    /// LAST ksets, and the segments of non-stale keys (Errata 1).
    pub segs_used: u32,
    /// gc_percent.
    pub gc_percent: u8,
    /// cache_info flags.
    pub cache_flags: u32,
    /// key_head after replay.
    pub key_head: Pos,
    /// dirty_tail.
    pub dirty_tail: Pos,
    /// key_tail.
    pub key_tail: Pos,
    /// False when the kernel would refuse this cache (the line is then what it would
    /// print if it did not).
    pub kernel_would_load: bool,
}

impl fmt::Display for Status {
    /// The kernel's `%x %u %u %u %u %x %u:%u %u:%u %u:%u`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:x} {} {} {} {} {:x} {} {} {}",
            self.sb_flags,
            self.seg_num,
            self.n_segs,
            self.segs_used,
            self.gc_percent,
            self.cache_flags,
            self.key_head,
            self.dirty_tail,
            self.key_tail
        )
    }
}

/// Everything a scan found.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// Device size in bytes.
    pub device_size: u64,
    /// The superblock.
    pub superblock: SbView,
    /// Both cache_info copies (when the superblock is valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_info: Option<DualView<CacheInfoView>>,
    /// Both key_tail copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_tail: Option<DualView<Pos>>,
    /// Both dirty_tail copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_tail: Option<DualView<Pos>>,
    /// The segment chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainView>,
    /// The kset log, key_tail to key_head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogView>,
    /// The `dmsetup status` line the kernel would show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// What is wrong or odd.
    pub findings: Findings,
}

/// Reads `len` bytes at `off`, or `None` when the range is not inside the device.
pub(crate) fn read_opt<M: Media + ?Sized>(
    m: &M,
    off: u64,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= m.size() => {
            let mut buf = vec![0; len];
            m.read_at(off, &mut buf)?;
            Ok(Some(buf))
        }
        _ => Ok(None),
    }
}

/// Decodes both copies of a dual record of `R` at `at` and describes them, turning each
/// value into a view with `view`. The caller guarantees both ranges are on the device.
pub(crate) fn read_dual<M: Media + ?Sized, R: MetaRecord, V>(
    m: &M,
    at: [u64; 2],
    structure: Structure,
    view: impl Fn(R) -> V,
) -> io::Result<(Dual<R>, DualView<V>)> {
    let size = std::mem::size_of::<R::Raw>();
    let b0 = read_opt(m, at[0], size)?.unwrap_or_default();
    let b1 = read_opt(m, at[1], size)?.unwrap_or_default();
    let dual = Dual::<R>::decode([&b0, &b1], at).relabel(structure);
    let slot = |i: usize, bytes: &[u8]| {
        let empty = bytes.len() == size && bytes.iter().all(|&b| b == 0);
        match &dual.slots[i] {
            Slot::Valid(v) => SlotView {
                offset: at[i],
                state: SlotState::Valid,
                seq: Some(v.seq),
                value: Some(view(v.value)),
                error: None,
            },
            Slot::Invalid(e) => SlotView {
                offset: at[i],
                state: if empty {
                    SlotState::Empty
                } else {
                    SlotState::Damaged
                },
                seq: None,
                value: None,
                error: (!empty).then(|| e.reason.to_string()),
            },
        }
    };
    let views = DualView {
        slots: [slot(0, &b0), slot(1, &b1)],
        current: dual.latest_slot(),
    };
    Ok((dual, views))
}

/// Reports damaged copies of a dual record. A damaged copy whose twin is valid is a
/// warning with a repair; with no valid copy at all the caller decides.
///
/// `repairable` says whether the valid twin is a sound replacement; when it is not (a
/// seg_info copy without HAS_NEXT in the middle of the chain), no repair is offered, since
/// copying it would only destroy the evidence a person could recover the chain from.
pub(crate) fn check_copies<V: PartialEq>(
    view: &DualView<V>,
    what: &str,
    len: u32,
    findings: &mut Findings,
    repairable: impl Fn(&V) -> bool,
) {
    for (i, slot) in view.slots.iter().enumerate() {
        let twin = &view.slots[1 - i];
        if slot.state == SlotState::Damaged && twin.state == SlotState::Valid {
            let error = slot.error.as_deref().unwrap_or("bad crc");
            let sound = twin.value.as_ref().is_some_and(&repairable);
            let message = if sound {
                format!("damaged copy ({error}); the kernel uses copy {}", 1 - i)
            } else {
                format!(
                    "damaged copy ({error}); the kernel uses copy {}, which is not a sound \
                     replacement, so --repair leaves it",
                    1 - i
                )
            };
            let finding = Finding::new(
                Severity::Warning,
                "copy_damaged",
                format!("{what}[{i}]"),
                Some(slot.offset),
                message,
            );
            findings.push(if sound {
                finding.with_repair(Repair {
                    from: twin.offset,
                    to: slot.offset,
                    len,
                })
            } else {
                finding
            });
        }
    }
    if let [SlotView {
        seq: Some(a),
        value: Some(va),
        ..
    }, SlotView {
        seq: Some(b),
        value: Some(vb),
        ..
    }] = &view.slots
    {
        if a == b && va != vb {
            findings.push(Finding::new(
                Severity::Warning,
                "copies_disagree",
                what,
                Some(view.slots[0].offset),
                format!("both copies have seq {a} but differ; the kernel takes copy 0"),
            ));
        }
    }
}

/// Scans an image. Problems of the image become findings; only a failing read is an error.
///
/// # Errors
/// A read from the device failed.
pub fn scan<M: Media + ?Sized>(m: &M, opts: &ScanOptions) -> io::Result<Scan> {
    let mut findings = Findings::new(opts.findings_cap);
    let size = m.size();
    let (superblock, sb) = scan_superblock(m, &mut findings)?;
    let mut out = Scan {
        device_size: size,
        superblock,
        cache_info: None,
        key_tail: None,
        dirty_tail: None,
        chain: None,
        log: None,
        status: None,
        findings,
    };
    let Some(sb) = sb else { return Ok(out) };
    let f = &mut out.findings;
    // Only segments the device holds can be read; a larger seg_num is already an error.
    let seg_limit = sb.seg_num.min(out.superblock.device_segments);
    if seg_limit == 0 {
        return Ok(out);
    }

    let (ci_dual, ci_view) = read_dual::<_, CacheInfo, _>(
        m,
        [layout::cache_info_off(0), layout::cache_info_off(1)],
        Structure::CacheInfo,
        CacheInfoView::from,
    )?;
    check_copies(&ci_view, "cache_info", 24, f, |_| true);
    let tail_at = |off: fn(usize) -> u64| [off(0), off(1)];
    let (kt_dual, kt_view) =
        read_dual::<_, TailPos, _>(m, tail_at(layout::key_tail_off), Structure::KeyTail, |t| {
            Pos::from(t.0)
        })?;
    let (dt_dual, dt_view) = read_dual::<_, TailPos, _>(
        m,
        tail_at(layout::dirty_tail_off),
        Structure::DirtyTail,
        |t| Pos::from(t.0),
    )?;
    check_copies(&kt_view, "key_tail", 16, f, |_| true);
    check_copies(&dt_view, "dirty_tail", 16, f, |_| true);
    // An interrupted format leaves no cache_info, and tails that are either unwritten or
    // the fresh (0:0, seq 1) ones, over a log that holds no kset.
    let fresh_tails = [&kt_view, &dt_view].iter().all(|t| is_fresh_tail(t));
    let tails_empty = kt_view.is_empty() && dt_view.is_empty();
    let log_start = read_opt(m, layout::data_area_off(0), 24)?.unwrap_or_default();
    let no_kset = log_start.get(8..16) != Some(&pcache_format::kset::KSET_MAGIC.to_le_bytes());
    let ci_empty = ci_view.is_empty();
    let tails_empty = tails_empty || (fresh_tails && no_kset);
    out.cache_info = Some(ci_view);
    out.key_tail = Some(kt_view);
    out.dirty_tail = Some(dt_view);

    let Some(ci) = check_cache_info(&ci_dual, sb.seg_num, ci_empty && tails_empty, f) else {
        return Ok(out);
    };
    let key_tail = check_tail(&kt_dual, "key_tail", ci.n_segs, f);
    let dirty_tail = check_tail(&dt_dual, "dirty_tail", ci.n_segs, f);

    let segs = chain::scan_chain(m, &ci, sb.seg_num, seg_limit, opts, f)?;
    let complete = segs.complete;
    let mut chain_view = segs.view;
    if let (true, Some(key_tail), Some(dirty_tail)) = (complete, key_tail, dirty_tail) {
        let input = log::LogInput {
            phys: &segs.phys,
            gens: &segs.gens,
            n_segs: ci.n_segs,
            data_crc: ci.data_crc,
            key_tail,
            dirty_tail,
        };
        let (log_view, usage) = log::walk(m, &input, opts, f)?;
        chain::apply_usage(&mut chain_view, &usage);
        out.status = Some(Status {
            sb_flags: sb.flags,
            seg_num: sb.seg_num,
            n_segs: sb.seg_num,
            segs_used: log_view.segs_used,
            gc_percent: ci.gc_percent,
            cache_flags: ci.flags(),
            key_head: log_view.key_head,
            dirty_tail: dirty_tail.into(),
            key_tail: key_tail.into(),
            kernel_would_load: !f.kernel_refuses(),
        });
        out.log = Some(log_view);
    }
    out.chain = Some(chain_view);
    Ok(out)
}

fn scan_superblock<M: Media + ?Sized>(
    m: &M,
    f: &mut Findings,
) -> io::Result<(SbView, Option<Superblock>)> {
    let size = m.size();
    let mut view = SbView {
        offset: SB_OFF,
        valid: false,
        error: None,
        raw: None,
        device_segments: layout::max_seg_num(size),
    };
    let Some(bytes) = read_opt(m, SB_OFF, 24)? else {
        let msg = format!("the device is {size} bytes long, too short to hold a superblock");
        view.error = Some(msg.clone());
        f.push(Finding::refusal(
            "device_truncated",
            "superblock",
            Some(SB_OFF),
            msg,
        ));
        return Ok((view, None));
    };
    if let Ok(raw) = RawSuperblock::read_from_bytes(&bytes) {
        view.raw = Some(SbFields {
            crc: raw.crc.get(),
            flags: raw.flags.get(),
            magic: raw.magic.get(),
            seg_num: raw.seg_num.get(),
            pad: raw.pad,
        });
    }
    let sb = match Superblock::parse(&bytes) {
        Ok(sb) => sb,
        Err(e) => {
            let (code, msg) = match e.reason {
                Reason::BadMagic { found: 0 } => (
                    "sb_unformatted",
                    "no pcache superblock (magic 0): the device is not formatted".to_owned(),
                ),
                Reason::BadMagic { found } => (
                    "sb_bad_magic",
                    format!("not a pcache superblock (magic {found:#018x})"),
                ),
                Reason::BadCrc { .. } => ("sb_bad_crc", e.reason.to_string()),
                Reason::BigEndian => ("sb_big_endian", e.reason.to_string()),
                _ => ("sb_invalid", e.reason.to_string()),
            };
            let mut msg = msg;
            if matches!(e.reason, Reason::BadMagic { .. }) {
                let found = crate::probe::probe(m)?;
                let other: Vec<String> = found
                    .iter()
                    .filter(|f| !matches!(f, crate::probe::Found::Pcache { .. }))
                    .map(ToString::to_string)
                    .collect();
                if !other.is_empty() {
                    msg = format!("{msg}; the device holds {}", other.join("; "));
                }
            }
            view.error = Some(msg.clone());
            let finding = if code == "sb_unformatted" {
                Finding::new(Severity::Error, code, "superblock", Some(SB_OFF), msg)
            } else {
                Finding::refusal(code, "superblock", Some(SB_OFF), msg)
            };
            f.push(finding);
            return Ok((view, None));
        }
    };
    view.valid = true;
    if size < layout::CACHE_DEV_SIZE_MIN {
        f.push(Finding::refusal(
            "device_too_small",
            "device",
            None,
            format!(
                "the device is {size} bytes; the kernel needs at least {} (512 MiB)",
                layout::CACHE_DEV_SIZE_MIN
            ),
        ));
    }
    if let Err(e) = sb.check_device(size) {
        view.valid = false;
        let msg = if sb.seg_num == 0 {
            "seg_num is 0".to_owned()
        } else {
            format!(
                "seg_num {} is more than the device holds ({} segments in {size} bytes, at \
                 most {})",
                sb.seg_num,
                view.device_segments,
                layout::CACHE_SEGS_MAX
            )
        };
        view.error = Some(e.reason.to_string());
        f.push(Finding::refusal(
            "sb_seg_num",
            "superblock",
            Some(SB_OFF),
            msg,
        ));
    } else if sb.seg_num < view.device_segments {
        f.push(Finding::new(
            Severity::Info,
            "device_larger",
            "superblock",
            Some(SB_OFF),
            format!(
                "the device holds {} segments, the cache uses {}",
                view.device_segments, sb.seg_num
            ),
        ));
    }
    if sb.flags & !SB_F_BIGENDIAN != 0 {
        f.push(Finding::new(
            Severity::Warning,
            "sb_unknown_flags",
            "superblock",
            Some(SB_OFF),
            format!("undefined flag bits set: {:#x}", sb.flags),
        ));
    }
    if sb.pad != [0; 4] {
        f.push(Finding::new(
            Severity::Info,
            "sb_padding",
            "superblock",
            Some(SB_OFF + 20),
            format!(
                "padding bytes are {:02x?} (the kernel keeps whatever was on the media; \
                 they are covered by the crc)",
                sb.pad
            ),
        ));
    }
    Ok((view, Some(sb)))
}

/// Whether a tail is as a format leaves it: copy 0 at 0:0 with seq 1, copy 1 unwritten.
fn is_fresh_tail(t: &DualView<Pos>) -> bool {
    matches!(
        &t.slots,
        [
            SlotView {
                state: SlotState::Valid,
                seq: Some(1),
                value: Some(Pos { seg: 0, off: 0 }),
                ..
            },
            SlotView {
                state: SlotState::Empty,
                ..
            }
        ]
    )
}

/// Picks the current cache_info and checks it; `None` when the kernel would not use it
/// (and would instead initialise a new cache over the device).
fn check_cache_info(
    dual: &Dual<CacheInfo>,
    seg_num: u32,
    nothing_written: bool,
    f: &mut Findings,
) -> Option<CacheInfo> {
    let at = layout::cache_info_off(dual.latest_slot().unwrap_or(0));
    let Some(ci) = dual.latest().map(|v| v.value) else {
        f.push(if nothing_written {
            Finding::new(
                Severity::Warning,
                "cache_uninitialised",
                "cache_info",
                Some(layout::CACHE_INFO_OFF),
                "the cache was never initialised, or its format was interrupted (no \
                 cache_info, nothing logged): the kernel will format it on first activation",
            )
        } else {
            Finding::new(
                Severity::Error,
                "cache_info_missing",
                "cache_info",
                Some(layout::CACHE_INFO_OFF),
                "neither cache_info copy is valid: the kernel would initialise a new cache \
                 and discard everything cached, dirty data included",
            )
        });
        return None;
    };
    if !ci.init_done {
        f.push(Finding::new(
            Severity::Error,
            "cache_info_not_done",
            "cache_info",
            Some(at),
            "INIT_DONE is not set: the kernel would initialise a new cache and discard \
             everything cached, dirty data included",
        ));
        return None;
    }
    if let Err(e) = ci.validate(seg_num, at) {
        f.push(Finding::refusal(
            "cache_info_range",
            "cache_info",
            Some(at),
            e.reason.to_string(),
        ));
        return None;
    }
    for lint in ci.lint() {
        f.push(Finding::new(
            Severity::Warning,
            "cache_info_odd",
            "cache_info",
            Some(at),
            format!("{lint} (the kernel accepts it but never writes it)"),
        ));
    }
    if ci.n_segs < seg_num {
        f.push(Finding::new(
            Severity::Warning,
            "n_segs_short",
            "cache_info",
            Some(at),
            format!(
                "n_segs {} is less than seg_num {seg_num}; the kernel always writes them \
                 equal",
                ci.n_segs
            ),
        ));
    }
    Some(ci)
}

/// Picks the current copy of a tail and checks its range; `None` when the kernel would
/// refuse it.
fn check_tail(dual: &Dual<TailPos>, what: &str, n_segs: u32, f: &mut Findings) -> Option<CachePos> {
    let base = if what == "key_tail" {
        layout::key_tail_off(0)
    } else {
        layout::dirty_tail_off(0)
    };
    let Some(slot) = dual.latest_slot() else {
        f.push(Finding::refusal(
            "tail_missing",
            what,
            Some(base),
            "neither copy is valid (the kernel fails with \"Corrupted key tail or dirty tail\")",
        ));
        return None;
    };
    let tail = dual.latest()?.value;
    let at = base + slot as u64 * layout::TAIL_STRIDE;
    let structure = if what == "key_tail" {
        Structure::KeyTail
    } else {
        Structure::DirtyTail
    };
    if let Err(e) = tail.validate(n_segs, structure, at) {
        f.push(Finding::refusal(
            "tail_range",
            format!("{what}[{slot}]"),
            Some(at),
            e.reason.to_string(),
        ));
        return None;
    }
    Some(tail.0)
}
