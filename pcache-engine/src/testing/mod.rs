//! Test doubles and fixtures, shared by the engine's tests and those of the crates above
//! it. Compiled only for this crate's own unit tests and with the `test-utils` feature,
//! which only dev-dependencies enable: release builds do not contain it.
//!
//! - [`CrashMedia`]: media that records every store, flush and fence, and builds the
//!   image a power cut at any fence would leave ([`CrashReplayer`], [`CrashImage`]);
//! - [`TestMedia`]: memory media that implements only the required methods of
//!   [`CacheMedia`] (every provided method takes its buffered path), with injected write
//!   failures;
//! - [`TestBacking`]: a [`MemBacking`](crate::backing::MemBacking) with injected read,
//!   write and flush failures, a gate that holds writes, a fill for discards, a record
//!   of its write and flush completions on a [`CrashMedia`]'s timeline and a check at
//!   every flush; [`BackingReplayer`] builds the backing device a power cut at any event
//!   could leave (a disk with a volatile write cache: [`BackingImage`]);
//! - [`FreshMedia`]: a freshly formatted cache of any size up to the format's maximum,
//!   computed rather than stored (only pages written later cost memory);
//! - [`fill_one_key_ksets`]: a cache filled, up to its last free segment, by a log of
//!   ksets of one key each (FUA writes at scattered offsets);
//! - [`formatted`] and [`write_superblock`]: a cache holding only a superblock, which the
//!   engine's first open formats as the kernel's first activation does;
//! - [`new_cache`]: what creates a cache of a shared device, for a 64 MiB backing device
//!   named by a serial number.
//!
//! This is test support: misuse panics with a message instead of returning an error.

mod backing;
mod backing_crash;
mod crash;
mod fill;
mod fresh_media;
mod media;

pub use backing::TestBacking;
pub use backing_crash::{BackingEvent, BackingImage, BackingReplayer, Survivors, BACKING_SECTOR};
pub use crash::{CrashBlockDevice, CrashImage, CrashMedia, CrashReplayer, SplitMix};
pub use fill::{fill_data, fill_offset, fill_one_key_ksets, fill_slots, FILL_BACKING};
pub use fresh_media::FreshMedia;
pub use media::TestMedia;

use crate::media::{CacheMedia, MemMedia};
use pcache_format::{fresh, layout};
use std::io;

/// Writes a fresh superblock for a cache of `media.len()` bytes at its place, so that the
/// engine's first open formats the cache. Nothing is flushed.
///
/// # Panics
/// If the media is too small for a cache (less than 512 MiB) or refuses the write.
pub fn write_superblock<M: CacheMedia + ?Sized>(media: &M) {
    let seg_num = layout::seg_num_for_device(media.len()).expect("at least 512 MiB");
    media
        .write(layout::SB_OFF, &fresh::superblock(seg_num))
        .expect("the superblock fits");
}

/// Memory media of `len` bytes holding only a pcache superblock, so the engine's first
/// open formats the cache as the kernel's first activation does.
///
/// # Panics
/// As [`write_superblock`].
#[must_use]
pub fn formatted(len: u64) -> MemMedia {
    let m = MemMedia::new(len);
    write_superblock(&m);
    m
}

/// Reads the whole cached device back through `cache`, 1 MiB at a time, and asserts that
/// it holds `model` (which is as long as the device), naming the first MiB that differs
/// and `what` was checked.
///
/// # Panics
/// On a failed read or a difference.
pub fn assert_reads_back(cache: &crate::Cache, model: &[u8], what: &str) {
    let mut buf = vec![0; 1 << 20];
    for (i, want) in model.chunks(buf.len()).enumerate() {
        let got = &mut buf[..want.len()];
        cache.read(0, (i as u64) << 20, got).expect("read back");
        assert!(got == want, "{what}: MiB {i}");
    }
}

/// The file at `path` as cache media on a block device ([`crate::media::BlockMedia`]):
/// with `O_DIRECT` where its file system takes it, else through the page cache.
///
/// # Panics
/// If the file cannot be opened either way.
#[must_use]
pub fn block_media(path: &std::path::Path) -> std::sync::Arc<dyn CacheMedia> {
    std::sync::Arc::new(
        crate::media::BlockMedia::open(path, false)
            .or_else(|_| crate::media::BlockMedia::open_with(path, false, false))
            .expect("open the image as block media"),
    )
}

/// A [`crate::CacheConfig`] for tests: two queues, no background workers, `data_crc` as
/// asked, the rest the defaults.
#[must_use]
pub fn quiet_config(data_crc: bool) -> crate::CacheConfig {
    crate::CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        ..crate::CacheConfig::default()
    }
}

/// The error the doubles inject: an I/O error saying "injected".
#[must_use]
pub fn injected() -> io::Error {
    io::Error::other("injected")
}

/// A cache `name` of `size` bytes for a shared device (`crate::shared::create`), for a
/// 64 MiB backing device with the stable identity `serial:<backing>` and the path
/// `/dev/<backing>`; the default settings.
#[must_use]
pub fn new_cache(name: &str, size: u64, backing: &str) -> crate::shared::NewCache {
    crate::shared::NewCache {
        name: name.into(),
        size,
        backing: pcache_format::shared::BackingRecord {
            size: 64 << 20,
            id: format!("serial:{backing}"),
            path: format!("/dev/{backing}"),
        },
        data_crc: false,
        gc_percent: None,
        cache_mode: None,
        created: 0,
    }
}
