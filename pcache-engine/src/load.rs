//! Opening a cache device: validating what is on it, and formatting the cache when the
//! superblock has no initialised cache behind it, as the kernel's activation does
//! (upstream-format.md F.0 and F.1).

use crate::error::{EngineError, Result};
use crate::media::CacheMedia;
use crate::meta::DualState;
use crate::mutants::{skip, Step};
use crate::segments::MIN_WRITABLE_SEGS;
use pcache_format::layout::{
    self, cache_info_off, data_area_off, dirty_tail_off, key_tail_off, seg_gen_off, seg_info_off,
    CachePos, SegmentChain, CACHE_CTRL_OFF, CACHE_DEV_SIZE_MIN, KSET_HEADER_SIZE, SB_OFF,
};
use pcache_format::raw::RawCacheInfo;
use pcache_format::record::{
    decode_meta, CacheInfo, Dual, MetaRecord, SegGen, SegInfo, TailPos, GC_PERCENT_DEFAULT,
};
use pcache_format::{fresh, FormatError, Reason, Structure, Superblock};

/// What the engine needs to know about the media before replay.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub sb: Superblock,
    pub info: CacheInfo,
    pub info_state: DualState,
    pub chain: SegmentChain,
    /// Generation of each cache segment, and where its record lives.
    pub gens: Vec<(u64, DualState)>,
    pub key_tail: (CachePos, DualState),
    pub dirty_tail: (CachePos, DualState),
    /// Whether this open formatted the cache.
    pub formatted: bool,
}

/// How the cache is to be opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    pub data_crc: bool,
    pub gc_percent: Option<u8>,
    pub read_only: bool,
}

fn read_vec(media: &dyn CacheMedia, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut v = vec![0; len];
    media
        .read(off, &mut v)
        .map_err(EngineError::media("read metadata"))?;
    Ok(v)
}

fn read_dual<R: MetaRecord>(media: &dyn CacheMedia, offs: [u64; 2]) -> Result<Dual<R>> {
    let size = core::mem::size_of::<R::Raw>();
    let a = read_vec(media, offs[0], size)?;
    let b = read_vec(media, offs[1], size)?;
    Ok(Dual::decode([&a, &b], offs))
}

/// Reads the superblock.
pub(crate) fn superblock(media: &dyn CacheMedia) -> Result<Superblock> {
    let len = media.len();
    if len < CACHE_DEV_SIZE_MIN {
        return Err(EngineError::TooSmall {
            size: len,
            min: CACHE_DEV_SIZE_MIN,
        });
    }
    let bytes = read_vec(media, SB_OFF, 24)?;
    if Superblock::is_unformatted(&bytes) {
        return Err(EngineError::NotFormatted);
    }
    let sb = Superblock::parse(&bytes).map_err(EngineError::corrupt("superblock"))?;
    sb.check_device(len)
        .map_err(EngineError::corrupt("superblock"))?;
    Ok(sb)
}

/// The latest valid cache_info with INIT_DONE, if any (for tools that must learn the
/// cache's settings before opening it).
pub(crate) fn cache_info(media: &dyn CacheMedia) -> Result<Option<CacheInfo>> {
    superblock(media)?;
    let dual = read_dual::<CacheInfo>(media, [cache_info_off(0), cache_info_off(1)])?;
    Ok(dual.latest().map(|v| v.value).filter(|i| i.init_done))
}

/// Loads (or, for a superblock with no initialised cache, formats) the cache metadata.
pub(crate) fn load(media: &dyn CacheMedia, opts: LoadOptions) -> Result<Loaded> {
    let sb = superblock(media)?;
    let dual = read_dual::<CacheInfo>(media, [cache_info_off(0), cache_info_off(1)])?;
    let info_state = DualState::from_dual(&dual);
    let latest = dual.latest().map(|v| v.value);
    match latest {
        Some(info) if info.init_done => {
            let at = cache_info_off(info_state_slot(&dual));
            info.validate(sb.seg_num, at)
                .map_err(EngineError::corrupt("cache_info"))?;
            // pcache's checks beyond the kernel's (which accepts both): a gc_percent over
            // 90 is refused unless this open replaces it, undefined flags always.
            let replaced = opts.gc_percent.filter(|_| !opts.read_only);
            CacheInfo {
                gc_percent: replaced.unwrap_or(info.gc_percent),
                ..info
            }
            .validate_pcache(at)
            .map_err(EngineError::corrupt("cache_info"))?;
            writable_size(info.n_segs, opts.read_only)?;
            if info.data_crc != opts.data_crc {
                return Err(EngineError::DataCrcMismatch {
                    on_media: info.data_crc,
                    asked: opts.data_crc,
                });
            }
            load_existing(media, sb, info, info_state)
        }
        _ => {
            misplaced_618(media, sb.seg_num)?;
            if opts.read_only {
                return Err(EngineError::NotFormatted);
            }
            writable_size(sb.seg_num, false)?;
            format(media, sb, opts, info_state)
        }
    }
}

/// Before formatting over a superblock whose cache_info slots hold no initialised copy:
/// refuses if a valid, initialised, in-range copy lies at 8 216, where kernels 6.18.0 to
/// 6.18.3 wrote it by mistake (6.18.3 wrote every activation's copy there, so a cache it
/// formatted has no other). That copy is never used here (no kernel reads it); only
/// `pcache-fsck --repair` moves it to its slot. Where a slot holds a valid copy, the stray
/// one is ignored, as every kernel does.
fn misplaced_618(media: &dyn CacheMedia, seg_num: u32) -> Result<()> {
    let at = layout::CACHE_INFO_OFF_618;
    let bytes = read_vec(media, at, core::mem::size_of::<RawCacheInfo>())?;
    match decode_meta::<CacheInfo>(&bytes, at) {
        Ok(v) if v.value.init_done && v.value.validate(seg_num, at).is_ok() => {
            Err(EngineError::MisplacedCacheInfo { at, seq: v.seq })
        }
        _ => Ok(()),
    }
}

/// Refuses to open a cache of fewer than [`MIN_WRITABLE_SEGS`] segments for writing
/// (before anything is written): its writes could wait for space forever.
fn writable_size(n_segs: u32, read_only: bool) -> Result<()> {
    if read_only || n_segs >= MIN_WRITABLE_SEGS {
        return Ok(());
    }
    Err(EngineError::TooFewSegments {
        n_segs,
        min: MIN_WRITABLE_SEGS,
    })
}

fn info_state_slot(dual: &Dual<CacheInfo>) -> usize {
    dual.latest_slot().unwrap_or(0)
}

fn load_existing(
    media: &dyn CacheMedia,
    sb: Superblock,
    info: CacheInfo,
    info_state: DualState,
) -> Result<Loaded> {
    let chain = SegmentChain::walk(info.seg_id, info.n_segs, sb.seg_num, |phys| {
        let offs = [seg_info_off(phys, 0), seg_info_off(phys, 1)];
        let dual = read_dual::<SegInfo>(media, offs).map_err(|_| {
            FormatError::new(
                Structure::SegmentInfo,
                offs[0],
                Reason::Invalid("unreadable"),
            )
        })?;
        match dual.latest() {
            Some(v) => Ok(v.value.next()),
            None => Err(FormatError::new(
                Structure::SegmentInfo,
                offs[0],
                Reason::NoValidCopy,
            )),
        }
    })
    .map_err(EngineError::corrupt("segment chain"))?;
    let mut gens = Vec::with_capacity(chain.len() as usize);
    for &phys in chain.as_slice() {
        let dual = read_dual::<SegGen>(media, [seg_gen_off(phys, 0), seg_gen_off(phys, 1)])?;
        let gen = dual.latest().map_or(0, |v| v.value.0);
        gens.push((gen, DualState::from_dual(&dual)));
    }
    let tail = |off: fn(usize) -> u64, structure: Structure| -> Result<(CachePos, DualState)> {
        let dual = read_dual::<TailPos>(media, [off(0), off(1)])?.relabel(structure);
        let Some(latest) = dual.latest() else {
            return Err(EngineError::corrupt("tails")(FormatError::new(
                structure,
                off(0),
                Reason::NoValidCopy,
            )));
        };
        let at = off(dual.latest_slot().unwrap_or(0));
        latest
            .value
            .validate(info.n_segs, structure, at)
            .and_then(|()| latest.value.validate_alignment(structure, at))
            .map_err(EngineError::corrupt("tails"))?;
        Ok((latest.value.0, DualState::from_dual(&dual)))
    };
    Ok(Loaded {
        sb,
        info,
        info_state,
        gens,
        key_tail: tail(key_tail_off, Structure::KeyTail)?,
        dirty_tail: tail(dirty_tail_off, Structure::DirtyTail)?,
        chain,
        formatted: false,
    })
}

/// Stores `bytes` at `off` and flushes them (durable at the next fence).
fn write_flushed(media: &dyn CacheMedia, off: u64, bytes: &[u8]) -> Result<()> {
    media
        .write(off, bytes)
        .map_err(EngineError::media("format"))?;
    if !skip(Step::F1) {
        media.flush(off, bytes.len() as u64);
    }
    Ok(())
}

/// Formats the cache behind an existing superblock (F.1 step 2 onwards), leaving the same
/// metadata bytes as the kernel's first activation. Steps F1–F3 of `docs/design.md`.
fn format(
    media: &dyn CacheMedia,
    sb: Superblock,
    opts: LoadOptions,
    info_state: DualState,
) -> Result<Loaded> {
    let n = sb.seg_num;
    // F1: both tails in slot 0 (seq 1, position 0:0), slot 1 zero — written whole, so no
    // tail of an older cache can outrank them.
    write_flushed(media, CACHE_CTRL_OFF, &fresh::ctrl_block())?;
    // F1: every segment's metadata block and its empty kset (the end-of-log terminator).
    for phys in 0..n {
        write_flushed(
            media,
            layout::segment_base(phys),
            &*fresh::segment_meta(phys, n),
        )?;
        write_flushed(media, data_area_off(phys), &[0; KSET_HEADER_SIZE as usize])?;
    }
    // F1 ends: all of it is durable before cache_info with INIT_DONE (F3) is written.
    if !skip(Step::F1) {
        media.fence();
    }
    media.check().map_err(EngineError::media("format"))?;
    let gc = opts.gc_percent.unwrap_or(GC_PERCENT_DEFAULT);
    let info = CacheInfo::fresh(n, opts.data_crc, gc);
    Ok(Loaded {
        sb,
        info,
        // cache_info (INIT_DONE) is written by the activation, last (F3).
        info_state,
        chain: SegmentChain::identity(n),
        gens: (0..n).map(|_| (0, DualState::at(1, 1))).collect(),
        key_tail: (CachePos::default(), DualState::at(0, 1)),
        dirty_tail: (CachePos::default(), DualState::at(0, 1)),
        formatted: true,
    })
}

/// Persists cache_info (step A1 at the end of an activation, or a gc_percent change).
pub(crate) fn persist_info(
    media: &dyn CacheMedia,
    state: &mut DualState,
    info: &CacheInfo,
) -> Result<()> {
    state.persist(media, cache_info_off, info, !skip(Step::A1))
}
