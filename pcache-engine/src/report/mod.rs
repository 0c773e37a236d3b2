//! Loading in *report* mode: one read-only pass over a cache device that decodes every
//! structure the kernel reads on activation, the way the kernel reads it, and records each
//! problem as a [`Finding`] instead of stopping at the first — the model `pcache-dump` and
//! `pcache-fsck` print.
//!
//! pcache loads a cache in one of three modes:
//!
//! - *strict* ([`Cache::open`](crate::Cache::open)): the first problem refuses the cache;
//! - *report* ([`scan`], here): every problem is collected, and the walk goes on wherever
//!   the format allows; nothing is written;
//! - *salvage* ([`CacheConfig::salvage`](crate::CacheConfig)): read-only, replay skips
//!   what fails and reports it ([`crate::salvage`]).
//!
//! The pass follows the kernel's activation (upstream-format.md F.0): superblock, both
//! cache_info copies, the segment chain with every segment's seg_info and generation
//! copies, both tails, then replay of the kset log from key_tail to key_head (F.2, with the
//! 7.3.4 treatment of stale keys of Errata 1), through the engine's own log walker
//! ([`crate::walk`]). It never writes, never panics, and reads only ranges it has checked
//! against the device size.

use chain::ChainView;
use log::LogView;
use pcache_format::layout::{self, CachePos, SB_OFF};
use pcache_format::raw::RawSuperblock;
use pcache_format::record::{CacheInfo, Dual, TailPos, GC_PERCENT_MAX, SB_F_BIGENDIAN};
use pcache_format::{Reason, Structure, Superblock};
use serde::Serialize;
use std::io;
use std::ops::Range;
use zerocopy::FromBytes;

pub mod chain;
mod dual;
pub mod finding;
pub mod image;
pub mod log;
mod stride_618;
mod views;

pub use crate::status::KernelStatus as Status;
pub(crate) use dual::{check_copies, read_dual, read_opt};
pub use finding::{Finding, Findings, Repair, Severity};
pub use image::Image;
pub use views::{CacheInfoView, DualView, Pos, SbFields, SbView, SlotState, SlotView};

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
    /// Whether the kernel's dm-pcache would activate this cache (`status` is then the
    /// line it would show).
    pub kernel_would_load: bool,
    /// What is wrong or odd.
    pub findings: Findings,
}

/// Scans an image. Problems of the image become findings; only a failing read is an error.
///
/// # Errors
/// A read from the device failed.
pub fn scan<M: Image + ?Sized>(m: &M, opts: &ScanOptions) -> io::Result<Scan> {
    let mut s = scan_image(m, opts)?;
    s.kernel_would_load = !s.findings.kernel_refuses();
    Ok(s)
}

fn scan_image<M: Image + ?Sized>(m: &M, opts: &ScanOptions) -> io::Result<Scan> {
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
        kernel_would_load: false,
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
    stride_618::check(m, &ci_dual, sb.seg_num, f)?;
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
        let chain = pcache_format::layout::SegmentChain::from_phys(segs.phys.clone());
        let input = log::LogInput {
            chain: &chain,
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
            cache_info_flags: ci.flags(),
            key_head: log_view.key_head.into(),
            dirty_tail,
            key_tail,
        });
        out.log = Some(log_view);
    }
    out.chain = Some(chain_view);
    Ok(out)
}

fn scan_superblock<M: Image + ?Sized>(
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
    // pcache's checks beyond the kernel's: no writer stores these, and pcache refuses them.
    if ci.gc_percent > GC_PERCENT_MAX {
        f.push(Finding::new(
            Severity::Error,
            "cache_info_gc_percent",
            "cache_info",
            Some(at),
            format!(
                "gc_percent is {} (at most {GC_PERCENT_MAX}; the kernel's gc_percent message \
                 refuses more): the kernel accepts it, but GC would not start before the \
                 cache is full; pcache refuses the cache unless it is opened with a new \
                 gc_percent",
                ci.gc_percent
            ),
        ));
    }
    if ci.unknown_flags != 0 {
        f.push(Finding::new(
            Severity::Error,
            "cache_info_flags",
            "cache_info",
            Some(at),
            format!(
                "undefined flag bits {:#x} are set (flags {:#x}): a newer or foreign writer; \
                 the kernel ignores them, pcache refuses the cache",
                ci.unknown_flags,
                ci.flags()
            ),
        ));
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
    if let Err(e) = tail.validate_alignment(structure, at) {
        f.push(Finding::new(
            Severity::Error,
            "tail_misaligned",
            format!("{what}[{slot}]"),
            Some(at),
            format!(
                "{}: no kset starts there (ksets are 24 + 40 × n bytes, packed from 0); the \
                 kernel would read the log from the middle of a kset and find it empty, \
                 losing what it holds; pcache refuses the cache",
                e.reason
            ),
        ));
        return None;
    }
    Some(tail.0)
}
