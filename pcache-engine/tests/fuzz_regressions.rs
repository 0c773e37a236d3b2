//! Regressions found by the coverage-guided fuzz targets (`fuzz/`, `cargo xtask fuzz`):
//! each failed before its fix.

use pcache_engine::backing::MemBacking;
use pcache_engine::format::record::encode_meta;
use pcache_engine::format::{fresh, layout};
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::{testing, Cache, CacheConfig, EngineError, ErrorKind};
use std::sync::Arc;
use zerocopy::IntoBytes;

const CACHE: u64 = 512 << 20;

fn cfg(read_only: bool) -> CacheConfig {
    CacheConfig {
        background: false,
        read_only,
        ..CacheConfig::default()
    }
}

/// A cache the engine formatted and closed: 31 segments, identity chain.
fn engine_formatted() -> (Arc<MemMedia>, Arc<MemBacking>) {
    let media = Arc::new(testing::formatted(CACHE));
    let backing = Arc::new(MemBacking::new(8 << 20));
    let c = Cache::open(media.clone(), backing.clone(), cfg(false)).unwrap();
    c.write(0, 0, &[7u8; 4096], true).unwrap();
    c.close().unwrap();
    (media, backing)
}

/// fsck_raw: the last segment of the chain with no valid seg_info copy. The kernel loads
/// every segment's seg_info and fails without one (`docs/format.md`, "What a loader
/// validates"); the engine's chain walk only read the segments whose link it followed,
/// so it loaded such a cache.
#[test]
fn the_last_segment_needs_a_valid_seg_info() {
    let (media, backing) = engine_formatted();
    let last = 30;
    for slot in 0..2 {
        media
            .write(layout::seg_info_off(last, slot), &[0; 16])
            .unwrap();
    }
    for read_only in [true, false] {
        let e = Cache::open(media.clone(), backing.clone(), cfg(read_only)).unwrap_err();
        assert!(
            matches!(e, EngineError::Corrupt { .. }),
            "read_only {read_only}: {e}"
        );
    }
}

/// open_patch: a superblock of 1 segment (valid CRC) and no cache_info. A read-write open
/// formatted a 1-segment cache, whose writes then waited for space forever (with the
/// background workers; without them they failed with "full"): the log and the log's
/// reserve leave no data segment. Caches of 2 and 3 segments hung the same way, the data
/// head holding on to the only data segment GC could free. Now a cache of fewer than 4
/// segments is refused for writing, before anything is written; read-only it opens.
#[test]
fn a_cache_too_small_to_write_to_is_refused_read_write() {
    for n in 1..4u32 {
        let media = Arc::new(MemMedia::new(CACHE));
        media.write(layout::SB_OFF, &fresh::superblock(n)).unwrap();
        let before = media.to_vec(0, 64 << 10).unwrap();
        let backing = Arc::new(MemBacking::new(64 << 20));
        let e = Cache::open(media.clone(), backing.clone(), cfg(false)).unwrap_err();
        assert!(
            matches!(e, EngineError::TooFewSegments { n_segs, min: 4 } if n_segs == n),
            "{n} segments: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(
            media.to_vec(0, 64 << 10).unwrap() == before,
            "a refused open wrote"
        );
    }
    // An existing cache whose cache_info says 3 segments: refused read-write, opened
    // read-only.
    let (media, backing) = engine_formatted();
    let mut info = Cache::peek_info(&*media).unwrap().unwrap();
    info.n_segs = 3;
    media
        .write(layout::cache_info_off(0), encode_meta(&info, 9).as_bytes())
        .unwrap();
    let e = Cache::open(media.clone(), backing.clone(), cfg(false)).unwrap_err();
    assert!(
        matches!(e, EngineError::TooFewSegments { n_segs: 3, .. }),
        "{e}"
    );
    let c = Cache::open(media, backing, cfg(true)).unwrap();
    let mut b = [0u8; 4096];
    c.read(0, 0, &mut b).unwrap();
    assert_eq!(b, [7u8; 4096]);
}

/// The smallest cache opened for writing, 4 segments (64 MiB), takes three times its
/// size of writes with the background workers reclaiming underneath, and without them.
#[test]
fn the_smallest_writable_cache_makes_progress() {
    for background in [false, true] {
        let media = Arc::new(MemMedia::new(CACHE));
        media.write(layout::SB_OFF, &fresh::superblock(4)).unwrap();
        let backing = Arc::new(MemBacking::new(64 << 20));
        let cfg = CacheConfig {
            background,
            gc_percent: Some(0),
            ..CacheConfig::default()
        };
        let c = Arc::new(Cache::open(media, backing, cfg).unwrap());
        let w = c.clone();
        let done = with_timeout(120, move || {
            for i in 0..192u64 {
                w.write(0, (i % 48) << 20, &vec![i as u8; 1 << 20], false)?;
            }
            Ok::<_, EngineError>(())
        });
        assert!(
            matches!(done, Some(Ok(()))),
            "background {background}: {done:?}"
        );
        let mut b = vec![0u8; 1 << 20];
        c.read(0, 47 << 20, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 191), "the last write reads back");
    }
}

/// Runs `f` on a thread; `None` if it has not finished after `secs` (a hang).
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).ok()
}

/// engine_ops: each queue's data head keeps a reference on the segment it fills, so a
/// partly filled segment stays in use while its queue is idle. With as many busy queues
/// as free segments (3 queues on a 4-segment cache; 30 on the kernel's smallest cache of
/// 31 segments, which pcache-ublk's default of one queue per CPU reaches), a write on
/// the next queue found no segment and nothing to reclaim: it failed with `Full` without
/// the background workers, and waited forever with them. A writer that finds no space
/// now makes the idle heads let go of their segments, so GC can free them.
#[test]
fn idle_data_heads_do_not_starve_a_full_cache() {
    for (segs, queues) in [(4u32, 3u32), (31, 40)] {
        for background in [false, true] {
            let media = Arc::new(MemMedia::new(CACHE));
            media
                .write(layout::SB_OFF, &fresh::superblock(segs))
                .unwrap();
            let cfg = CacheConfig {
                background,
                queues,
                gc_percent: Some(70),
                ..CacheConfig::default()
            };
            let c = Arc::new(Cache::open(media, Arc::new(MemBacking::new(64 << 20)), cfg).unwrap());
            let w = c.clone();
            let done = with_timeout(60, move || {
                for round in 0..3u64 {
                    for q in 0..queues {
                        let off = (u64::from(q) * 64 + round * 8) << 10;
                        w.write(q, off, &[q as u8 + 1; 4096], round == 2)?;
                    }
                }
                Ok::<_, EngineError>(())
            });
            assert!(
                matches!(done, Some(Ok(()))),
                "{segs} segments, {queues} queues, background {background}: {done:?}"
            );
            let mut b = [0u8; 4096];
            c.read(0, (u64::from(queues - 1) * 64 + 16) << 10, &mut b)
                .unwrap();
            assert_eq!(b, [queues as u8; 4096]);
        }
    }
}

/// open_patch: the log's first kset is a LAST kset that links its own segment, with one
/// bit flipped. A strict open takes the bad CRC for a torn write, the end of an empty
/// log. A salvage repaired the flip, followed the link back to the same kset, repaired it
/// again, and so on until it refused the cache for "more than 124 damaged ksets". It now
/// stops when the log leads it back to damage it went past, says so, and opens what a
/// strict open opens (as it does after 4 damaged ksets per segment, instead of refusing).
#[test]
fn salvage_does_not_go_round_a_repaired_last_kset() {
    let (media, backing) = engine_formatted();
    // The key_tail of this cache: where its log starts.
    let c = Cache::open(media.clone(), backing.clone(), cfg(true)).unwrap();
    let tail = c.status().kernel.key_tail;
    c.close().unwrap();
    let at = layout::data_area_off(tail.seg) + u64::from(tail.off);
    let mut last = pcache_engine::format::kset::encode_last_kset(tail.seg);
    last[0] ^= 1;
    media.write(at, &last).unwrap();
    // Strict: an empty log, torn at its start.
    let strict = Cache::open(media.clone(), backing.clone(), cfg(true)).unwrap();
    assert_eq!(strict.status().dirty_bytes, 0);
    strict.close().unwrap();
    let salvage = Cache::open(
        media,
        backing,
        CacheConfig {
            salvage: true,
            ..cfg(true)
        },
    )
    .unwrap();
    let r = salvage.salvage_report();
    assert!(
        r.damaged_ksets
            .iter()
            .any(|d| d.what.contains("damage salvage went past before")),
        "{r:?}"
    );
    salvage.close().unwrap();
}

/// open_patch: a LAST kset at the end of the log links the segment that holds a live
/// key's data. Opens accepted it (fsck calls it `seg_log_and_data`), and a read-write
/// open wrote its next kset over that data: writeback then found the key's data CRC
/// wrong. A log segment holding live keys' data is now refused.
#[test]
fn a_log_segment_with_live_data_is_refused() {
    let (media, backing) = engine_formatted();
    let c = Cache::open(media.clone(), backing.clone(), cfg(true)).unwrap();
    let head = c.status().kernel.key_head;
    c.close().unwrap();
    // The one key's data is in the first data segment after the log's.
    let data_seg = head.seg + 1;
    let at = layout::data_area_off(head.seg) + u64::from(head.off);
    media
        .write(at, &pcache_engine::format::kset::encode_last_kset(data_seg))
        .unwrap();
    let before = media.to_vec(0, CACHE as usize).unwrap();
    for read_only in [true, false] {
        let e = Cache::open(media.clone(), backing.clone(), cfg(read_only)).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds ksets of the log and the data of 1 live keys"),
            "read_only {read_only}: {e}"
        );
    }
    assert!(
        media.to_vec(0, CACHE as usize).unwrap() == before,
        "a refused open wrote"
    );
}
