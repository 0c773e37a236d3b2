//! The valid images the structured targets start from: the tools' sample images (as
//! `pcache-mkfs` writes a cache and the kernel lays out ksets, LAST links, tail moves and
//! generation bumps) and images the engine itself wrote (open, writes, flushes, discards,
//! writeback and GC, close). Built once per process.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::{testing, Cache, CacheConfig, CacheMode};
use pcache_tools::testimg::{samples, SparseImage};
use pcache_tools::ImageMut;
use std::sync::{Arc, OnceLock};

/// A valid image and what it needs.
#[derive(Debug, Clone)]
pub struct Base {
    /// A name, for the seed files.
    pub name: &'static str,
    /// The image.
    pub image: SparseImage,
    /// The backing device size its keys fit in.
    pub backing_size: u64,
}

/// The backing device of the engine-written images.
pub const ENGINE_DEV: u64 = 8 << 20;

/// Every base image, built on first use.
pub fn all() -> &'static [Base] {
    static ALL: OnceLock<Vec<Base>> = OnceLock::new();
    ALL.get_or_init(build)
}

fn build() -> Vec<Base> {
    let mut out: Vec<Base> = samples::all()
        .into_iter()
        .map(|(name, img)| Base {
            name,
            image: img.media,
            // stale_keys names 1 GiB + 4 KiB.
            backing_size: 2 << 30,
        })
        .collect();
    out.push(engine_image("engine", false, Workload::Plain));
    out.push(engine_image("engine_crc", true, Workload::Plain));
    out.push(engine_image("engine_gc", false, Workload::Reclaimed));
    out.push(engine_image("engine_modes", true, Workload::Modes));
    out
}

#[derive(Clone, Copy)]
enum Workload {
    /// Writes, some FUA, a flush every 5; a discard.
    Plain,
    /// The same, written back and reclaimed (gc_percent 0) halfway: the live log starts
    /// in the middle, and reused segments carry new generations.
    Reclaimed,
    /// Writes in writethrough mode after some in writeback, then back to writeback.
    Modes,
}

/// A sector pattern for engine-written images: recognisable, never all zeros.
#[must_use]
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(131) as usize + i * 7 + i / 512 + 1) as u8)
        .collect()
}

fn engine_image(name: &'static str, data_crc: bool, w: Workload) -> Base {
    let media = Arc::new(testing::formatted(crate::DEVICE));
    let backing = Arc::new(MemBacking::new(ENGINE_DEV));
    let cfg = CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        gc_percent: matches!(w, Workload::Reclaimed).then_some(0),
        ..CacheConfig::default()
    };
    let c = Cache::open(media.clone(), backing, cfg).expect("a fresh cache opens");
    for i in 0..24u64 {
        let len = 512 * (1 + (i as usize * 5) % 16);
        let off = ((i * 1_234_567) % (ENGINE_DEV - len as u64)) & !511;
        if i == 12 {
            match w {
                Workload::Reclaimed => c.writeback_all().expect("writeback"),
                Workload::Modes => c.set_cache_mode(CacheMode::Writethrough).expect("mode"),
                Workload::Plain => c.discard(off, 8192).expect("discard"),
            }
        }
        if i == 18 && matches!(w, Workload::Modes) {
            c.set_cache_mode(CacheMode::Writeback).expect("mode");
        }
        c.write((i % 2) as u32, off, &pattern(i, len), i % 7 == 3)
            .expect("write");
        if i % 5 == 4 {
            c.flush().expect("flush");
        }
    }
    c.close().expect("close");
    Base {
        name,
        image: sparse_of(&media),
        backing_size: ENGINE_DEV,
    }
}

/// The non-zero pages of `media`, as an image.
fn sparse_of(media: &MemMedia) -> SparseImage {
    let mut img = SparseImage::new(media.len());
    let mut page = [0u8; 4096];
    let mut off = 0;
    while off < media.len() {
        let len = usize::try_from((media.len() - off).min(4096)).unwrap_or(0);
        media.read(off, &mut page[..len]).expect("inside the media");
        if page[..len].iter().any(|&b| b != 0) {
            img.write_at(off, &page[..len]).expect("inside the image");
        }
        off += 4096;
    }
    img
}
