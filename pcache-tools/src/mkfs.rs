//! Writing a fresh cache, exactly as the kernel's first activation does
//! (upstream-format.md F.1 and its appendix), in a crash-safe order.
//!
//! The bytes come from [`pcache_format::fresh`]; this module only decides the geometry,
//! refuses what must be refused *before* the first write, and writes the steps of
//! [`Step`] in order, making each durable before the next:
//!
//! 1. zero both cache_info copies and the tail block, so no old cache can be found while
//!    the format is incomplete;
//! 2. the superblock;
//! 3. every segment's seg_info and generation records and its empty kset;
//! 4. the tails;
//! 5. cache_info with INIT_DONE, the last write.
//!
//! A crash before step 5 leaves a superblock without a valid cache_info, which the kernel
//! formats again on activation (upstream-format.md G.19).

use crate::device::{Image, ImageMut};
use crate::probe::{self, Found};
use pcache_format::fresh::{self, Step};
use pcache_format::layout::{self, KSET_HEADER_SIZE};
use pcache_format::record::GC_PERCENT_MAX;
use pcache_format::{CacheInfo, CacheMode};
use serde::Serialize;
use std::io;

/// What to format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MkfsOptions {
    /// Keys carry a CRC of their data (the table line's `data_crc true`).
    pub data_crc: bool,
    /// GC threshold in percent of segments used, 0..=90.
    pub gc_percent: u8,
    /// The cache mode recorded in cache_info.
    pub cache_mode: CacheMode,
    /// Format even over recognisable content.
    pub force: bool,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        Self {
            data_crc: false,
            gc_percent: pcache_format::record::GC_PERCENT_DEFAULT,
            cache_mode: CacheMode::Writeback,
            force: false,
        }
    }
}

/// The geometry of a cache as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Geometry {
    /// Device size in bytes.
    pub device_size: u64,
    /// Segments written (`seg_num` = `n_segs`).
    pub seg_num: u32,
    /// Whether the device holds more than the kernel's maximum of 1 048 576 segments, so
    /// the count was capped.
    pub capped: bool,
    /// Bytes past the last segment, unused.
    pub unused_tail: u64,
    /// DATA_CRC.
    pub data_crc: bool,
    /// gc_percent.
    pub gc_percent: u8,
    /// The cache mode.
    #[serde(serialize_with = "mode_name")]
    pub cache_mode: CacheMode,
    /// The cache_info flags word written.
    pub cache_info_flags: u32,
}

/// Why a device was not formatted. Except for [`MkfsError::Write`], the device
/// is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MkfsError {
    /// The device is below the kernel's minimum.
    #[error(
        "the device is {size} bytes; a cache needs at least {} bytes (512 MiB)",
        layout::CACHE_DEV_SIZE_MIN
    )]
    TooSmall {
        /// Device size.
        size: u64,
    },
    /// gc_percent is over 90.
    #[error("gc_percent {0} is out of range (0..=90)")]
    GcPercent(u8),
    /// The device holds something recognisable and `force` was not given.
    #[error("the device is not empty: {}; use --force to overwrite it", describe(.0))]
    NotEmpty(Vec<Found>),
    /// Reading the device before writing failed; nothing was written.
    #[error("cannot read the device")]
    Read(#[source] io::Error),
    /// A write or a flush failed during `step`: the cache is not formatted (the kernel
    /// would format it again on activation if the superblock made it).
    #[error("writing failed during {step:?}")]
    Write {
        /// The step that failed.
        step: Step,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn describe(found: &[Found]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A fresh cache's cache_info: the kernel's, with the cache mode recorded.
fn cache_info(seg_num: u32, data_crc: bool, gc_percent: u8, mode: CacheMode) -> CacheInfo {
    CacheInfo {
        cache_mode: mode.value(),
        ..CacheInfo::fresh(seg_num, data_crc, gc_percent)
    }
}

fn mode_name<S: serde::Serializer>(m: &CacheMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// The geometry for a device of `device_size` bytes, or why it cannot be formatted.
///
/// # Errors
/// [`MkfsError::TooSmall`] or [`MkfsError::GcPercent`].
pub fn plan(device_size: u64, opts: &MkfsOptions) -> Result<Geometry, MkfsError> {
    if opts.gc_percent > GC_PERCENT_MAX {
        return Err(MkfsError::GcPercent(opts.gc_percent));
    }
    let seg_num = layout::seg_num_for_device(device_size)
        .map_err(|_| MkfsError::TooSmall { size: device_size })?;
    let raw = layout::raw_seg_count(device_size).unwrap_or(0);
    let used_end = layout::segment_base(seg_num);
    let info = cache_info(seg_num, opts.data_crc, opts.gc_percent, opts.cache_mode);
    Ok(Geometry {
        device_size,
        seg_num,
        capped: raw > u64::from(seg_num),
        unused_tail: device_size.saturating_sub(used_end),
        data_crc: opts.data_crc,
        gc_percent: opts.gc_percent,
        cache_mode: opts.cache_mode,
        cache_info_flags: info.flags(),
    })
}

/// Everything that must hold before the first write: the geometry and, unless forced, an
/// empty device. Reads only.
///
/// # Errors
/// As [`plan`], or [`MkfsError::NotEmpty`] with what was found, or a failed read.
pub fn preflight<M: Image + ?Sized>(m: &M, opts: &MkfsOptions) -> Result<Geometry, MkfsError> {
    let geometry = plan(m.size(), opts)?;
    if !opts.force {
        let found = probe::probe(m).map_err(MkfsError::Read)?;
        if !found.is_empty() {
            return Err(MkfsError::NotEmpty(found));
        }
    }
    Ok(geometry)
}

/// Progress of a format, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A step begins. For [`Step::Segments`], `total` segments follow.
    Begin {
        /// The step.
        step: Step,
        /// Units of work in the step.
        total: u64,
    },
    /// `done` units of the current step are written.
    Advance {
        /// Units done so far.
        done: u64,
    },
    /// The step is written and durable.
    Durable(Step),
}

/// Formats the device: [`preflight`], then the writes of the module documentation.
/// `progress` is told about each step.
///
/// # Persistence
/// Each [`Step`] is made durable with [`ImageMut::sync`] before the next begins; when this
/// returns `Ok`, the whole cache is durable.
///
/// # Errors
/// As [`preflight`] (nothing written), or [`MkfsError::Write`].
pub fn mkfs<M: ImageMut + ?Sized>(
    m: &mut M,
    opts: &MkfsOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Geometry, MkfsError> {
    let g = preflight(m, opts)?;
    write_fresh(m, &g, progress)?;
    Ok(g)
}

/// Writes a fresh cache of geometry `g` without any check (see [`mkfs`]).
///
/// # Errors
/// [`MkfsError::Write`].
pub fn write_fresh<M: ImageMut + ?Sized>(
    m: &mut M,
    g: &Geometry,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MkfsError> {
    let err = |step| move |source| MkfsError::Write { step, source };

    let step = Step::InvalidateCacheInfo;
    progress(Progress::Begin { step, total: 1 });
    let (off, len) = fresh::INVALIDATE_RANGE;
    m.write_at(off, &vec![0; usize::try_from(len).unwrap_or(0)])
        .and_then(|()| m.sync())
        .map_err(err(step))?;
    progress(Progress::Durable(step));

    let step = Step::Superblock;
    progress(Progress::Begin { step, total: 1 });
    m.write_at(layout::SB_OFF, &fresh::superblock(g.seg_num))
        .and_then(|()| m.sync())
        .map_err(err(step))?;
    progress(Progress::Durable(step));

    let step = Step::Segments;
    progress(Progress::Begin {
        step,
        total: u64::from(g.seg_num),
    });
    let terminator = [0u8; KSET_HEADER_SIZE as usize];
    for phys in 0..g.seg_num {
        let meta = fresh::segment_meta(phys, g.seg_num);
        m.write_at(layout::segment_base(phys), &meta[..])
            .and_then(|()| m.write_at(layout::data_area_off(phys), &terminator))
            .map_err(err(step))?;
        let done = u64::from(phys) + 1;
        if done % 64 == 0 || done == u64::from(g.seg_num) {
            progress(Progress::Advance { done });
        }
    }
    m.sync().map_err(err(step))?;
    progress(Progress::Durable(step));

    // dirty_tail, then key_tail, in one block: cache_info is still invalid, so their
    // relative order cannot be observed.
    let step = Step::Tails;
    progress(Progress::Begin { step, total: 1 });
    m.write_at(layout::CACHE_CTRL_OFF, &fresh::ctrl_block())
        .and_then(|()| m.sync())
        .map_err(err(step))?;
    progress(Progress::Durable(step));

    let step = Step::CacheInfo;
    progress(Progress::Begin { step, total: 1 });
    let info = cache_info(g.seg_num, g.data_crc, g.gc_percent, g.cache_mode);
    let info = pcache_format::record::encode_meta(&info, 1);
    m.write_at(
        layout::cache_info_off(fresh::CACHE_INFO_SLOT),
        zerocopy::IntoBytes::as_bytes(&info),
    )
    .and_then(|()| m.sync())
    .map_err(err(step))?;
    progress(Progress::Durable(step));
    Ok(())
}

#[cfg(test)]
mod tests;
