//! The segment chain: cache segment id → physical segment, with each segment's seg_info
//! and generation copies, walked as the kernel walks it on activation (F.0 step 3.2).

use super::finding::{Finding, Findings, Severity};
use super::image::Image;
use super::log::SegUsage;
use super::{check_copies, read_dual, DualView, ScanOptions};
use pcache_format::layout;
use pcache_format::record::{CacheInfo, SegGen, SegInfo, SEG_TYPE_CACHE_DATA};
use pcache_format::Structure;
use serde::Serialize;
use std::io;

/// seg_info's fields, flags decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegInfoView {
    /// The whole flags word.
    pub flags: u32,
    /// HAS_NEXT.
    pub has_next: bool,
    /// Segment type (1 = cache data).
    pub seg_type: u8,
    /// Physical id of the next segment.
    pub next_seg: u32,
}

impl From<SegInfo> for SegInfoView {
    fn from(s: SegInfo) -> Self {
        Self {
            flags: s.flags(),
            has_next: s.has_next,
            seg_type: s.seg_type,
            next_seg: s.next_seg,
        }
    }
}

/// What a segment holds, as far as the log tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not derived (the log was not walked).
    Unknown,
    /// Part of the kset log between key_tail and key_head.
    Log,
    /// Holds data of live (non-stale) keys.
    Data,
    /// Neither: free for allocation after activation.
    Free,
    /// Both log and data: an error.
    LogAndData,
}

/// One segment of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentView {
    /// Cache (logical) segment id.
    pub cache_id: u32,
    /// Physical segment id.
    pub phys: u32,
    /// Absolute offset of the segment.
    pub offset: u64,
    /// Both seg_info copies.
    pub seg_info: DualView<SegInfoView>,
    /// Both generation copies.
    pub gen_records: DualView<u64>,
    /// The generation the kernel uses (0 when no copy is valid).
    pub gen: u64,
    /// Role derived from the log.
    pub role: Role,
    /// Live keys whose data is here.
    pub live_keys: u64,
    /// Stale keys pointing here (dropped by replay).
    pub stale_keys: u64,
    /// Live dirty keys whose data is here (not yet written back).
    pub dirty_keys: u64,
}

/// The chain as found.
#[derive(Debug, Clone, Serialize)]
pub struct ChainView {
    /// Physical id of cache segment 0 (`cache_info.seg_id`).
    pub head: u32,
    /// Number of cache segments (`cache_info.n_segs`).
    pub n_segs: u32,
    /// Segments found before the chain ended (all of them when it is sound).
    pub found: u32,
    /// Whether the chain is sound: `n_segs` distinct segments, each with a valid seg_info.
    pub complete: bool,
    /// The segments selected for display.
    pub segments: Vec<SegmentView>,
}

/// The chain and what the log walk needs from it.
pub(crate) struct ChainScan {
    pub complete: bool,
    /// Physical id of each cache segment found.
    pub phys: Vec<u32>,
    /// Generation of each cache segment found.
    pub gens: Vec<u64>,
    pub view: ChainView,
}

/// Walks the chain from `ci.seg_id` for `ci.n_segs` segments. `seg_limit` is the number of
/// physical segments the device really holds (≤ `seg_num`).
pub(crate) fn scan_chain<M: Image + ?Sized>(
    m: &M,
    ci: &CacheInfo,
    seg_num: u32,
    seg_limit: u32,
    opts: &ScanOptions,
    f: &mut Findings,
) -> io::Result<ChainScan> {
    let n = ci.n_segs;
    let mut seen: Vec<Option<u32>> = vec![None; seg_limit as usize];
    let mut phys = Vec::with_capacity(n.min(seg_limit) as usize);
    let mut gens = Vec::with_capacity(n.min(seg_limit) as usize);
    let mut segments = Vec::new();
    let mut complete = false;
    let mut cur = ci.seg_id;
    for i in 0..n {
        let (what, at) = if i == 0 {
            ("cache_info.seg_id".to_owned(), layout::CACHE_INFO_OFF)
        } else {
            (
                format!(
                    "segment {} (phys {}): seg_info",
                    i - 1,
                    phys[i as usize - 1]
                ),
                layout::segment_base(phys[i as usize - 1]),
            )
        };
        if cur >= seg_num {
            f.push(Finding::refusal(
                "chain_range",
                what,
                Some(at),
                format!("links to physical segment {cur}, but seg_num is {seg_num}"),
            ));
            break;
        }
        let Some(seen_as) = seen.get_mut(cur as usize) else {
            f.push(Finding::refusal(
                "chain_truncated",
                what,
                Some(at),
                format!("links to physical segment {cur}, which lies beyond the end of the device"),
            ));
            break;
        };
        if let Some(prev) = *seen_as {
            f.push(Finding::new(
                Severity::Error,
                "chain_cycle",
                what,
                Some(at),
                format!(
                    "links to physical segment {cur}, which is already cache segment {prev}: \
                     the kernel does not notice and would use the segment twice"
                ),
            ));
            break;
        }
        *seen_as = Some(i);
        let label = format!("segment {i} (phys {cur})");
        let (si_dual, si_view) = read_dual::<_, SegInfo, _>(
            m,
            [layout::seg_info_off(cur, 0), layout::seg_info_off(cur, 1)],
            Structure::SegmentInfo,
            SegInfoView::from,
        )?;
        let needs_next = i + 1 < n;
        check_copies(&si_view, &format!("{label}: seg_info"), 16, f, |v| {
            !needs_next || v.has_next
        });
        let (gen_dual, gen_view) = read_dual::<_, SegGen, _>(
            m,
            [layout::seg_gen_off(cur, 0), layout::seg_gen_off(cur, 1)],
            Structure::SegmentGen,
            |g| g.0,
        )?;
        check_copies(&gen_view, &format!("{label}: gen"), 16, f, |_| true);
        let gen = if let Some(v) = gen_dual.latest() {
            v.value.0
        } else {
            f.push(Finding::new(
                Severity::Error,
                "seg_gen_missing",
                format!("{label}: gen"),
                Some(layout::seg_gen_off(cur, 0)),
                "neither generation copy is valid: the kernel assumes gen 0, which can make \
                 stale keys look live",
            ));
            0
        };
        phys.push(cur);
        gens.push(gen);
        if opts.segments.as_ref().is_none_or(|r| r.contains(&i)) {
            segments.push(SegmentView {
                cache_id: i,
                phys: cur,
                offset: layout::segment_base(cur),
                seg_info: si_view,
                gen_records: gen_view,
                gen,
                role: Role::Unknown,
                live_keys: 0,
                stale_keys: 0,
                dirty_keys: 0,
            });
        }
        let Some(si) = si_dual.latest().map(|v| v.value) else {
            f.push(Finding::refusal(
                "seg_info_missing",
                format!("{label}: seg_info"),
                Some(layout::seg_info_off(cur, 0)),
                "neither seg_info copy is valid",
            ));
            break;
        };
        if si.seg_type != SEG_TYPE_CACHE_DATA || si.unknown_flags != 0 {
            f.push(Finding::new(
                Severity::Warning,
                "seg_info_odd",
                format!("{label}: seg_info"),
                Some(layout::seg_info_off(cur, 0)),
                format!(
                    "flags {:#x}: type {} or undefined bits (the kernel does not check them)",
                    si.flags(),
                    si.seg_type
                ),
            ));
        }
        if i + 1 == n {
            complete = true;
            break;
        }
        match si.next() {
            Some(next) => cur = next,
            None => {
                f.push(Finding::refusal(
                    "chain_short",
                    format!("{label}: seg_info"),
                    Some(layout::seg_info_off(cur, 0)),
                    format!("has no HAS_NEXT, but the chain needs {n} segments"),
                ));
                break;
            }
        }
    }
    let found = u32::try_from(phys.len()).unwrap_or(u32::MAX);
    Ok(ChainScan {
        complete,
        phys,
        gens,
        view: ChainView {
            head: ci.seg_id,
            n_segs: n,
            found,
            complete,
            segments,
        },
    })
}

/// Fills in each displayed segment's role and key counts from the log walk.
pub(crate) fn apply_usage(view: &mut ChainView, usage: &[SegUsage]) {
    for s in &mut view.segments {
        let Some(u) = usage.get(s.cache_id as usize) else {
            continue;
        };
        s.role = match (u.log, u.live > 0) {
            (true, true) => Role::LogAndData,
            (true, false) => Role::Log,
            (false, true) => Role::Data,
            (false, false) => Role::Free,
        };
        s.live_keys = u.live;
        s.stale_keys = u.stale;
        s.dirty_keys = u.dirty;
    }
}
