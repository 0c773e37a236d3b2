//! Memory per cached extent (issue 17, "Memory and bad input at scale"): the index's
//! budget is 48 bytes per extent, counted by the allocator (`stats_alloc`) while a cache
//! fills with 4 KiB extents that cannot merge, and again after a reopen, where replay
//! builds the index from the log. Prints what it measured; fails over the budget.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::CacheMedia;
use pcache_engine::testing::formatted;
use pcache_engine::{Cache, CacheConfig};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The budget of docs/design.md: bytes of memory per cached extent.
const BUDGET: f64 = 48.0;
const EXTENTS: u64 = 40_000;

fn net(r: &Region<'_, System>) -> i64 {
    let c = r.change();
    // `stats_alloc` already counts a reallocation's growth in `bytes_allocated` and its
    // shrinking in `bytes_deallocated`; `bytes_reallocated` is the same change again.
    // Far below i64::MAX in this test.
    #[allow(clippy::cast_possible_wrap)]
    {
        c.bytes_allocated as i64 - c.bytes_deallocated as i64
    }
}

fn open(media: &Arc<dyn CacheMedia>, backing: &Arc<MemBacking>) -> Cache {
    Cache::open(
        media.clone(),
        backing.clone(),
        CacheConfig {
            background: false,
            ..CacheConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn an_extent_costs_at_most_48_bytes() {
    let media: Arc<dyn CacheMedia> = Arc::new(formatted(512 << 20));
    let backing = Arc::new(MemBacking::new(1 << 30));
    let cache = open(&media, &backing);
    let data = vec![0x5A; 4096];
    // Warm up: the first kset and queue buffers are not the index's.
    cache.write(0, 0, &data, false).unwrap();
    let region = Region::new(GLOBAL);
    // 4 KiB every 12 KiB, in a scattered order: no two extents touch.
    for i in 1..=EXTENTS {
        let slot = (i * 7_919) % (EXTENTS + 1);
        cache.write(0, slot * 12_288 + 4096, &data, false).unwrap();
    }
    let grown = net(&region);
    let live = cache.status().cached_bytes / 4096;
    assert_eq!(live, EXTENTS + 1, "every write is an extent of its own");
    #[allow(clippy::cast_precision_loss)]
    let per = grown as f64 / EXTENTS as f64;
    cache.close().unwrap();
    drop(cache);
    // Replay builds the same index from the log.
    let region = Region::new(GLOBAL);
    let cache = open(&media, &backing);
    let reopened = net(&region);
    #[allow(clippy::cast_precision_loss)]
    let per_replayed = reopened as f64 / (EXTENTS + 1) as f64;
    assert_eq!(cache.status().cached_bytes / 4096, EXTENTS + 1);
    #[allow(clippy::cast_precision_loss)]
    let per_gib = per_replayed * (1u64 << 30) as f64 / 4096.0 / f64::from(1u32 << 20);
    println!(
        "memory: {per:.1} bytes per extent while writing, {per_replayed:.1} after replay \
         (the whole open cache); a GiB of cache in 4 KiB extents: {per_gib:.1} MiB"
    );
    assert!(per <= BUDGET, "{per:.1} bytes per extent while writing");
    assert!(
        per_replayed <= BUDGET,
        "{per_replayed:.1} bytes per extent after replay"
    );
    cache.close().unwrap();
}
