//! Every single-bit flip of the metadata of engine-written caches: a flip that changes
//! what replay presents is never called clean by `pcache-fsck` (issue 18).
//!
//! Shapes: a few ksets (data_crc off and on), and a log that fills its first segment and
//! goes on through a LAST link. For each flip, the engine opens the image read-only and
//! reads the whole logical device; where that succeeds with other content than before
//! the flip, fsck must exit non-zero. (Where the engine refuses the image, nothing is
//! served silently.)
//!
//! Every bit of every byte of the records' structs and of the live log's ksets (and of the
//! terminator behind them) is flipped, one at a time.
//! The power-cut side (fsck and the engine never call a torn tail damage) is proven by
//! the crash simulation (`pcache-engine/tests/crash.rs`), which opens every cut image.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::{testing, Cache, CacheConfig};
use pcache_format::layout::{self, CachePos, SB_OFF};
use pcache_tools::fsck::{self, FsckOptions};
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const DEV: u64 = 8 << 20;

/// The tools' view of an in-memory image.
struct View<'a>(&'a MemMedia);

impl pcache_tools::Image for View<'_> {
    fn size(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(off, buf).map_err(io::Error::other)
    }
}

struct Image {
    name: &'static str,
    media: Arc<MemMedia>,
    backing: Arc<MemBacking>,
    data_crc: bool,
}

fn cfg(data_crc: bool, read_only: bool) -> CacheConfig {
    CacheConfig {
        data_crc,
        queues: 1,
        background: false,
        read_only,
        ..CacheConfig::default()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(131) as usize + i * 7 + i / 512) as u8)
        .collect()
}

/// An engine-written image: `writes` writes of `len` bytes, each FUA (its own kset) when
/// `fua`, else closed by a flush every 5 writes.
fn image(name: &'static str, data_crc: bool, writes: u64, len: usize, fua: bool) -> Image {
    image_gc(name, data_crc, writes, len, fua, None)
}

/// As [`image`]; with `gc_at`, everything is written back and reclaimed after that many
/// writes (so the live log starts there).
fn image_gc(
    name: &'static str,
    data_crc: bool,
    writes: u64,
    len: usize,
    fua: bool,
    gc_at: Option<u64>,
) -> Image {
    let media = Arc::new(testing::formatted(CACHE));
    let backing = Arc::new(MemBacking::new(DEV));
    let mut open_cfg = cfg(data_crc, false);
    open_cfg.gc_percent = gc_at.map(|_| 0);
    let c = Cache::open(media.clone(), backing.clone(), open_cfg).unwrap();
    for i in 0..writes {
        if Some(i) == gc_at {
            c.writeback_all().unwrap();
        }
        let off = ((i * 1_234_567) % (DEV - len as u64)) & !511;
        c.write(0, off, &pattern(i, len), fua).unwrap();
        if !fua && i % 5 == 4 {
            c.flush().unwrap();
        }
    }
    c.flush().unwrap();
    c.close().unwrap();
    Image {
        name,
        media,
        backing,
        data_crc,
    }
}

/// What replay presents: a hash of the cached extents and their bytes (the backing is
/// never written, so the rest of the logical device is the same whatever the flip), or
/// `None` if the engine refuses the image.
fn presented(img: &Image) -> Option<u64> {
    presented_as(img, false)
}

/// As [`presented`], with a strict or a salvage replay.
fn presented_as(img: &Image, salvage: bool) -> Option<u64> {
    let mut config = cfg(img.data_crc, true);
    config.salvage = salvage;
    let c = Cache::open(img.media.clone(), img.backing.clone(), config).ok()?;
    let mut h = DefaultHasher::new();
    let mut buf = Vec::new();
    for (off, len) in c.dirty_extents() {
        buf.resize(len as usize, 0);
        if c.read(0, off, &mut buf).is_err() {
            return None;
        }
        h.write_u64(off);
        h.write(&buf);
    }
    let _ = c.close();
    Some(h.finish())
}

fn fsck_exit(img: &Image) -> i32 {
    let opts = FsckOptions {
        backing_size: Some(DEV),
        ..FsckOptions::default()
    };
    fsck::check(&View(&img.media), &opts)
        .map(|r| r.exit_code)
        .unwrap_or(fsck::exit::OPERATIONAL)
}

/// The byte ranges to flip: the metadata before segment 0, every used segment's records,
/// and the live log (each kset's bytes), from a clean scan of the image.
fn targets(img: &Image) -> Vec<(u64, u64, bool)> {
    let s = pcache_tools::scan(&View(&img.media), &pcache_tools::ScanOptions::default()).unwrap();
    let log = s.log.as_ref().expect("a log");
    // The records' structs are at the start of their 4 KiB slots.
    // (start, end, a kset of the live log)
    let mut t = vec![(SB_OFF, SB_OFF + 24, false)];
    for slot in 0..4 {
        let base = layout::cache_info_off(0) + slot * 4096;
        t.push((base, base + 64, false));
    }
    let used: Vec<u32> = log
        .listed
        .iter()
        .map(|k| k.pos.seg)
        .chain(std::iter::once(0))
        .collect();
    for &seg in &used {
        for slot in 0..3 {
            let base = layout::segment_base(seg) + slot * 4096;
            t.push((base, base + 64, false));
        }
    }
    for k in &log.listed {
        let size = match k.kind {
            pcache_tools::log::KsetKind::Keys { size, .. } => size,
            pcache_tools::log::KsetKind::Last { .. } => 24,
        };
        t.push((k.offset, k.offset + u64::from(size), true));
    }
    // The terminator after the last kset.
    let head = CachePos::new(log.key_head.seg, log.key_head.off);
    let at = layout::data_area_off(head.seg) + u64::from(head.off);
    t.push((at, at + 24, false));
    t
}

fn flip_all(img: &Image) -> (u64, u64, u64) {
    let base = presented(img).expect("the unflipped image opens");
    assert_eq!(fsck_exit(img), 0, "{}: not clean before flipping", img.name);
    let (mut flips, mut changed, mut refused) = (0, 0, 0);
    for (start, end, kset) in targets(img) {
        for off in start..end {
            let mut b = [0];
            img.media.read(off, &mut b).unwrap();
            for bit in 0..8 {
                img.media.write(off, &[b[0] ^ (1 << bit)]).unwrap();
                flips += 1;
                match presented(img) {
                    None => refused += 1,
                    Some(h) if h != base => {
                        changed += 1;
                        let code = fsck_exit(img);
                        assert_ne!(
                            code, 0,
                            "{}: flipping bit {bit} of byte {off} changes what replay \
                             presents, and fsck calls the cache clean",
                            img.name
                        );
                    }
                    Some(_) => {}
                }
                // One flipped bit in a kset loses nothing to a salvage: it repairs the kset.
                if kset {
                    assert_eq!(
                        presented_as(img, true),
                        Some(base),
                        "{}: salvage does not recover everything with bit {bit} of byte \
                         {off} flipped",
                        img.name
                    );
                }
                img.media.write(off, &b).unwrap();
            }
        }
    }
    (flips, changed, refused)
}

#[test]
fn no_flip_that_changes_replay_is_called_clean() {
    let images = [
        image("few ksets", false, 15, 4096, false),
        image("few ksets, data_crc", true, 15, 4096, false),
        image("one kset per write", false, 12, 512, true),
    ];
    for img in &images {
        let (flips, changed, refused) = flip_all(img);
        eprintln!(
            "{}: {flips} flips: {changed} change what replay presents (all reported by \
             fsck), {refused} refused by the engine",
            img.name
        );
        assert!(changed + refused > 0, "{}: no flip mattered?", img.name);
    }
}

#[test]
fn a_log_across_a_last_link() {
    // A log segment holds 16 MiB of ksets: one 64-byte kset per FUA write fills it after
    // 262 144 of them.
    // Written back and reclaimed shortly before the link, so each flip replays a short log.
    let link = 16 * 1024 * 1024 / 64;
    let img = image_gc(
        "across a LAST link",
        false,
        link + 40,
        512,
        true,
        Some(link - 200),
    );
    let s = pcache_tools::scan(&View(&img.media), &pcache_tools::ScanOptions::default()).unwrap();
    let log = s.log.as_ref().unwrap();
    assert!(log.last_hops >= 1, "no LAST link: {:?}", log.key_head);
    // Flip only around the link (the kset before it, the LAST kset, the one after it) and
    // the last two ksets.
    let (flips, changed, refused) = flip_near_links(&img);
    eprintln!(
        "{}: {flips} flips: {changed} change what replay presents, {refused} refused",
        img.name
    );
    assert!(changed + refused > 0);
}

fn flip_near_links(img: &Image) -> (u64, u64, u64) {
    let s = pcache_tools::scan(&View(&img.media), &pcache_tools::ScanOptions::default()).unwrap();
    let log = s.log.as_ref().unwrap();
    let n = log.listed.len();
    let near: Vec<usize> = (0..n)
        .filter(|&i| {
            let is_last = |j: usize| {
                log.listed
                    .get(j)
                    .is_some_and(|k| matches!(k.kind, pcache_tools::log::KsetKind::Last { .. }))
            };
            i + 2 >= n || (i.saturating_sub(1)..=i + 1).any(is_last)
        })
        .collect();
    let base = presented(img).expect("opens");
    let (mut flips, mut changed, mut refused) = (0, 0, 0);
    for i in near {
        let k = &log.listed[i];
        let size = match k.kind {
            pcache_tools::log::KsetKind::Keys { size, .. } => size,
            pcache_tools::log::KsetKind::Last { .. } => 24,
        };
        for off in k.offset..k.offset + u64::from(size) {
            let mut b = [0];
            img.media.read(off, &mut b).unwrap();
            for bit in 0..8 {
                img.media.write(off, &[b[0] ^ (1 << bit)]).unwrap();
                flips += 1;
                match presented(img) {
                    None => refused += 1,
                    Some(h) if h != base => {
                        changed += 1;
                        assert_ne!(
                            fsck_exit(img),
                            0,
                            "bit {bit} of byte {off} (kset {i} of {n}) changes replay, fsck \
                             says clean"
                        );
                    }
                    Some(_) => {}
                }
                assert_eq!(
                    presented_as(img, true),
                    Some(base),
                    "salvage does not recover everything with bit {bit} of byte {off} flipped"
                );
                img.media.write(off, &b).unwrap();
            }
        }
    }
    (flips, changed, refused)
}
