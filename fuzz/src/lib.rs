//! Shared code of pcache's fuzz targets (`fuzz_targets/`) and of the seed generator
//! (`examples/seeds.rs`).
//!
//! - [`backing`]: a sparse in-memory backing device of any size;
//! - [`base`]: the valid images the structured targets start from (the tools' sample
//!   images, as `pcache-mkfs` and the kernel lay them out, and images the engine wrote);
//! - [`patch`]: the structured input of the `*_patch` targets, a list of patches over a
//!   base image (raw bytes, or records and ksets re-sealed with a valid CRC, so the
//!   fuzzer gets past the CRCs);
//! - [`check`]: what every image target checks: strict open (and reads after it), salvage,
//!   a read-write open with a small workload, and fsck and dump against the strict open;
//! - [`ops`]: the structure-aware engine operation sequences of `engine_ops`, against a
//!   model of the device contents;
//! - [`records`]: the record parsers of `pcache-format`, with round-trip properties.
//!
//! Every check panics on a broken property: libFuzzer reports a panic as a crash.

pub mod backing;
pub mod base;
pub mod check;
pub mod ops;
pub mod patch;
pub mod records;

use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_tools::testimg::SparseImage;
use pcache_tools::Image;
use std::sync::Arc;

/// The size of the cache device of the raw targets and of most base images: the
/// smallest the kernel (and pcache's strict open) accepts, 31 segments.
pub const DEVICE: u64 = 512 << 20;

/// Memory media holding the image's bytes (the rest zero). The media is anonymous
/// memory, allocated page by page on first touch, so only the pages written cost memory.
///
/// # Panics
/// If the memory cannot be reserved.
#[must_use]
pub fn media_of(img: &SparseImage) -> Arc<MemMedia> {
    let media = MemMedia::new(img.size());
    let mut page = [0u8; 4096];
    for off in img.pages() {
        let len = usize::try_from((img.size() - off).min(4096)).unwrap_or(0);
        img.read_at(off, &mut page[..len])
            .expect("a page of the image");
        media.write(off, &page[..len]).expect("inside the media");
    }
    Arc::new(media)
}

/// The backing device size of the raw targets (every base image's keys fit).
pub const RAW_BACKING: u64 = 2 << 30;

/// The largest raw input used.
pub const RAW_MAX: usize = 1 << 20;

/// Where the raw targets put their input's bytes, in order: windows of the device that
/// hold every metadata record (the superblock, both cache_info copies, the tails, and
/// each of the 31 segments' seg_info and gen copies), then the data area of segment 0
/// (the log of a fresh cache) for the rest. So a raw input of a few KiB is a whole
/// cache's metadata, without any structure imposed on its bytes.
pub fn raw_windows() -> impl Iterator<Item = (u64, usize)> {
    use pcache_format::layout;
    let head = [
        (layout::SB_OFF, 64),
        (layout::cache_info_off(0), 64),
        (layout::cache_info_off(1), 64),
        (layout::CACHE_CTRL_OFF, 64),
    ];
    let segs = (0..31).flat_map(|seg| {
        [
            (layout::seg_info_off(seg, 0), 32),
            (layout::seg_info_off(seg, 1), 32),
            (layout::seg_gen_off(seg, 0), 32),
        ]
    });
    head.into_iter()
        .chain(segs)
        .chain(std::iter::once((layout::data_area_off(0), RAW_MAX)))
}

/// A device of [`DEVICE`] bytes holding `data` in the [`raw_windows`], zero elsewhere:
/// the image of the raw targets.
#[must_use]
pub fn raw_image(data: &[u8]) -> SparseImage {
    let mut img = SparseImage::new(DEVICE);
    let mut rest = data;
    for (off, len) in raw_windows() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(rest.len().min(len));
        pcache_tools::ImageMut::write_at(&mut img, off, now).expect("inside the device");
        rest = later;
    }
    img
}

/// The raw input that holds `img`'s windows: its metadata, and its segment 0 data area up
/// to the last page written there.
#[must_use]
pub fn raw_input(img: &SparseImage) -> Vec<u8> {
    use pcache_format::layout;
    let data = layout::data_area_off(0);
    let used = img
        .pages()
        .filter(|&p| p >= data && p < layout::segment_base(1))
        .max()
        .map_or(0, |p| p + 4096 - data);
    let mut out = Vec::new();
    for (off, len) in raw_windows() {
        let len = if off == data {
            usize::try_from(used).unwrap_or(RAW_MAX).min(len)
        } else {
            len
        };
        let mut buf = vec![0; len];
        img.read_at(off, &mut buf).expect("inside the image");
        out.extend_from_slice(&buf);
    }
    out
}
