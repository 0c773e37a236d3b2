//! The engine on adversarial but well-formed caches at the format's limits (issue 17): the
//! strict open, writes, replay and writeback, with what the open costs counted by the
//! allocator (`stats_alloc`, as `memory.rs` does), against known answers.
//!
//! - The maximum segment count, 1 048 576 (`PCACHE_CACHE_SEGS_MAX`: the kernel's loader
//!   refuses a larger `seg_num`, and `pcache-mkfs` caps a larger device at it), on a
//!   16 TiB device. A fresh cache of that size holds 12 GiB of metadata (three 4 KiB
//!   pages per segment), which neither a test's memory nor a sparse file can hold (ext4's
//!   largest file, 16 TiB − 4 KiB, is also one segment short of the maximum): the device is
//!   a [`FreshMedia`], which computes the fresh format's bytes when they are read and
//!   stores only what is written. Its bytes are `pcache-mkfs`'s (checked in the engine's
//!   unit tests and in `pcache-tools/tests/limits.rs`).
//! - A log that fills the cache with one-key ksets: FUA writes at scattered offsets,
//!   without background workers, until only the log's reserve segment is free
//!   ([`fill_one_key_ksets`]).
//!
//! The allocator's counts are process-wide, so the tests run one at a time ([`serial`]).

use parking_lot::{Mutex, MutexGuard};
use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::media::CacheMedia;
use pcache_engine::testing::{
    fill_data, fill_offset, fill_one_key_ksets, formatted, FreshMedia, FILL_BACKING,
};
use pcache_engine::{Cache, CacheConfig};
use pcache_format::layout::{self, CachePos, CACHE_SEGS_MAX, SEG_DATA_SIZE};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The smallest device holding the maximum segment count: 1 048 576 segments after the
/// 20 KiB header (16 TiB + 20 KiB).
const MAX_DEVICE: u64 = layout::segment_base(CACHE_SEGS_MAX);

/// Memory an open cache may keep per segment, whatever it holds (measured: 61 bytes; the
/// kernel's `struct pcache_cache_segment` is larger).
const PER_SEGMENT: u64 = 80;
/// Memory an open cache may keep per logged extent (docs/performance.md: the index's
/// budget of 48 bytes per extent).
const PER_EXTENT: u64 = 48;

/// One test at a time: the allocator's counts are the whole process's.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
}

/// Bytes allocated and not freed while `f` ran, and its result.
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let region = Region::new(GLOBAL);
    let out = f();
    let c = region.change();
    // `stats_alloc` counts a reallocation's growth in `bytes_allocated` and its shrinking
    // in `bytes_deallocated` (`bytes_reallocated` is their sum, not more memory).
    let net = c.bytes_allocated.saturating_sub(c.bytes_deallocated);
    (out, net as u64)
}

fn cfg(read_only: bool) -> CacheConfig {
    CacheConfig {
        background: false,
        read_only,
        ..CacheConfig::default()
    }
}

/// Opens and says what it cost: bytes kept, and per segment.
fn open(media: &Arc<dyn CacheMedia>, backing: &Arc<MemBacking>, read_only: bool) -> (Cache, u64) {
    let t = Instant::now();
    let (cache, bytes) = measured(|| Cache::open(media.clone(), backing.clone(), cfg(read_only)));
    let cache = cache.unwrap();
    let s = cache.status();
    println!(
        "open ({}) of {} segments, {} keys: {:?}, {bytes} bytes kept ({:.1} per segment, \
         {:.1} per key)",
        if read_only { "read-only" } else { "read-write" },
        s.kernel.n_segs,
        s.replay.keys,
        t.elapsed(),
        bytes as f64 / f64::from(s.kernel.n_segs),
        bytes as f64 / s.replay.keys.max(1) as f64,
    );
    (cache, bytes)
}

/// The pattern of write `i`.
fn data(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|b| (i as usize * 31 + b / 512 * 7 + b) as u8)
        .collect()
}

#[test]
fn the_maximum_segment_count_opens_writes_and_replays() {
    let _serial = serial();
    // Exactly the maximum, read-only: nothing written, the whole chain walked.
    let fresh = Arc::new(FreshMedia::new(MAX_DEVICE, false));
    assert_eq!(fresh.seg_num(), CACHE_SEGS_MAX);
    let media: Arc<dyn CacheMedia> = fresh.clone();
    let backing = Arc::new(MemBacking::new(64 << 20));
    let (cache, bytes) = open(&media, &backing, true);
    let s = cache.status().kernel;
    assert_eq!((s.seg_num, s.n_segs), (CACHE_SEGS_MAX, CACHE_SEGS_MAX));
    assert_eq!(
        (s.key_tail, s.key_head),
        (CachePos::new(0, 0), CachePos::new(0, 0))
    );
    assert_eq!(s.segs_used, 1, "the log's segment");
    assert!(
        bytes <= PER_SEGMENT * u64::from(CACHE_SEGS_MAX),
        "{bytes} bytes"
    );
    drop(cache);
    assert_eq!(fresh.pages_written(), 0, "a read-only open writes nothing");

    // A larger device is capped at the maximum, its tail unused; written read-write.
    let fresh = Arc::new(FreshMedia::new(MAX_DEVICE + (16 << 30) + 12_345, false));
    assert_eq!(fresh.seg_num(), CACHE_SEGS_MAX);
    let media: Arc<dyn CacheMedia> = fresh.clone();
    let (cache, _) = open(&media, &backing, false);
    let mut model = vec![0u8; 64 << 20];
    for i in 0..64u64 {
        // Scattered, 512 B to 68 KiB, none across a 4 MiB boundary: one key each.
        let len = 512 * (1 + (i as usize * 37) % 136);
        let off = ((i * 2_654_435_761) % (64 << 20)) & !((4 << 20) - 1) | ((i % 7) << 19);
        let d = data(i, len);
        cache.write(0, off, &d, i % 3 == 0).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&d);
    }
    cache.close().unwrap();
    drop(cache);
    let written = fresh.pages_written();
    assert!(written < 2_000, "{written} pages written");

    // Replay at the maximum: every byte back, the memory still bounded by the segments.
    let (cache, bytes) = open(&media, &backing, false);
    let st = cache.status();
    assert_eq!(st.kernel.n_segs, CACHE_SEGS_MAX);
    assert_eq!(st.replay.keys, 64);
    assert_eq!(st.replay.stale_keys, 0);
    assert!(
        bytes <= PER_SEGMENT * u64::from(CACHE_SEGS_MAX) + PER_EXTENT * 64,
        "{bytes} bytes"
    );
    let mut got = vec![0; model.len()];
    cache.read(0, 0, &mut got).unwrap();
    assert!(got == model, "the cache reads back what was written");
    // Writeback at the maximum: the backing device then holds it.
    cache.writeback_all().unwrap();
    assert!(cache.status().is_clean());
    cache.close().unwrap();
    assert!(backing.to_vec(0, model.len()) == model);
}

#[test]
fn a_log_of_one_key_ksets_fills_the_cache() {
    let _serial = serial();
    const LEN: u32 = 4096;
    let media: Arc<dyn CacheMedia> = Arc::new(formatted(512 << 20));
    let backing = Arc::new(MemBacking::new(FILL_BACKING));
    let cache = Cache::open(media.clone(), backing.clone(), cfg(false)).unwrap();
    let t = Instant::now();
    let n = fill_one_key_ksets(&cache, LEN, u64::MAX).unwrap();
    let s = cache.status();
    println!("{n} one-key FUA writes in {:?}", t.elapsed());
    // The known answer: 31 segments, one log segment (a 64-byte kset each: 118 697 of them
    // fill 7.2 MiB of it), the log's reserve free, and the other 29 full of data.
    let per_seg = u64::from(SEG_DATA_SIZE / LEN);
    assert_eq!(n, 29 * per_seg);
    assert_eq!(s.space_waits, 0, "nothing was reclaimed");
    assert_eq!(s.kernel.segs_used, 30);
    assert_eq!(s.kernel.key_head, CachePos::new(0, 64 * n as u32));
    assert_eq!(s.dirty_bytes, n * u64::from(LEN));
    cache.close().unwrap();
    drop(cache);

    // Replay: one kset per key, one extent per key, memory per extent within the budget.
    let (cache, bytes) = open(&media, &backing, true);
    let st = cache.status();
    assert_eq!(
        (
            st.replay.ksets,
            st.replay.keys,
            st.replay.extents,
            st.replay.last_ksets
        ),
        (n, n, n, 0)
    );
    assert_eq!(st.replay.dirty_ksets, n);
    assert_eq!(st.kernel.segs_used, 30);
    assert!(
        bytes <= PER_SEGMENT * 31 + PER_EXTENT * n,
        "{bytes} bytes for {n} extents"
    );
    for i in (0..n).step_by(997).chain([n - 1]) {
        let mut got = vec![0; LEN as usize];
        cache.read(0, fill_offset(i, LEN), &mut got).unwrap();
        assert!(got == fill_data(i, LEN), "write {i}");
    }
    assert_eq!(backing.size(), FILL_BACKING);
}
