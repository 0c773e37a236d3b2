//! Engine tests that look inside: the fresh format against the kernel's bytes, replay
//! rebuilding the same index, reference counts, a full cache, and concurrent queues.

use crate::backing::MemBacking;
use crate::media::{CacheMedia, MemMedia};
use crate::{testing, Cache, CacheConfig};
use pcache_format::fresh;
use pcache_format::layout::{self, CachePos, SB_OFF};
use std::sync::Arc;

const CACHE: u64 = 512 << 20;

fn formatted(len: u64) -> Arc<MemMedia> {
    Arc::new(testing::formatted(len))
}

fn inline(queues: u32) -> CacheConfig {
    CacheConfig {
        queues,
        background: false,
        ..CacheConfig::default()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The engine's first activation leaves exactly the kernel's fresh metadata (the
/// appendix of upstream-format.md, as `pcache_format::fresh` encodes it).
#[test]
fn first_activation_matches_the_kernel_format() {
    for data_crc in [false, true] {
        let media = formatted(CACHE);
        let backing = Arc::new(MemBacking::new(64 << 20));
        let cfg = CacheConfig {
            data_crc,
            ..inline(1)
        };
        Cache::open(media.clone(), backing, cfg)
            .unwrap()
            .close()
            .unwrap();
        let n = layout::seg_num_for_device(CACHE).unwrap();
        assert_eq!(n, 31);
        assert_eq!(media.to_vec(SB_OFF, 24).unwrap(), fresh::superblock(n));
        assert_eq!(
            media.to_vec(layout::cache_info_off(0), 24).unwrap(),
            [0; 24]
        );
        assert_eq!(
            media.to_vec(layout::cache_info_off(1), 24).unwrap(),
            fresh::cache_info(n, data_crc, 70)
        );
        assert_eq!(
            media.to_vec(layout::CACHE_CTRL_OFF, 4096).unwrap(),
            fresh::ctrl_block()
        );
        for phys in 0..n {
            let meta = media
                .to_vec(layout::segment_base(phys), fresh::SEG_META_SIZE)
                .unwrap();
            assert_eq!(
                &meta[..],
                &fresh::segment_meta(phys, n)[..],
                "segment {phys}"
            );
            assert_eq!(
                media.to_vec(layout::data_area_off(phys), 24).unwrap(),
                [0; 24]
            );
        }
    }
}

/// A device with no superblock is refused (the kernel would format it; pcache-mkfs is
/// the explicit way), and so is a data_crc mismatch, with nothing written.
#[test]
fn refuses_unformatted_and_mismatched() {
    let media = Arc::new(MemMedia::new(CACHE));
    let backing = Arc::new(MemBacking::new(1 << 20));
    let e = Cache::open(media.clone(), backing.clone(), inline(1)).unwrap_err();
    assert!(matches!(e, crate::EngineError::NotFormatted), "{e}");
    let media = formatted(CACHE);
    Cache::open(media.clone(), backing.clone(), inline(1))
        .unwrap()
        .close()
        .unwrap();
    let before = media.to_vec(0, 1 << 20).unwrap();
    let cfg = CacheConfig {
        data_crc: true,
        ..inline(1)
    };
    let e = Cache::open(media.clone(), backing, cfg).unwrap_err();
    assert!(
        matches!(e, crate::EngineError::DataCrcMismatch { .. }),
        "{e}"
    );
    assert_eq!(media.to_vec(0, 1 << 20).unwrap(), before);
    let small = Arc::new(MemMedia::new(CACHE - 4096));
    let e = Cache::open(small, Arc::new(MemBacking::new(1 << 20)), inline(1)).unwrap_err();
    assert!(matches!(e, crate::EngineError::TooSmall { .. }), "{e}");
}

type Snapshot = Vec<(u64, crate::index::Extent)>;

fn index_snapshot(c: &Cache) -> Snapshot {
    let inner = c.inner();
    let mut out = Vec::new();
    for (base, t) in inner.index.all() {
        for (rel, e) in t.read().iter() {
            if e.is_live(inner.segs.gen(e.seg)) {
                out.push((base + u64::from(rel), *e));
            }
        }
    }
    out
}

/// Replay rebuilds exactly the index (and the reference counts and key_head) the cache
/// had before it was closed.
#[test]
fn replay_rebuilds_the_same_index() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(64 << 20));
    let c = Cache::open(media.clone(), backing.clone(), inline(3)).unwrap();
    for i in 0..600u64 {
        let off = (i * 7919 * 512) % ((64 << 20) - (256 << 10));
        let len = 512 * (1 + (i as usize * 13) % 300);
        c.write((i % 3) as u32, off, &pattern(i, len), i % 17 == 0)
            .unwrap();
        if i % 5 == 0 {
            let mut buf = vec![0; 8192];
            c.read(0, (i * 4096) % (60 << 20), &mut buf).unwrap();
        }
    }
    c.flush().unwrap();
    let before = index_snapshot(&c);
    let refs_before: Vec<u32> = c.inner().segs.snapshot().iter().map(|s| s.1).collect();
    let status = c.status();
    c.close().unwrap();
    drop(c);
    let c = Cache::open(media, backing, inline(3)).unwrap();
    assert_eq!(index_snapshot(&c), before);
    assert_eq!(c.status().kernel.key_head, status.kernel.key_head);
    // Data heads held one reference each before; replay rebuilds only the keys' ones.
    let refs_after: Vec<u32> = c.inner().segs.snapshot().iter().map(|s| s.1).collect();
    for (i, (b, a)) in refs_before.iter().zip(&refs_after).enumerate() {
        assert!(
            *b == *a || *b == *a + 1,
            "segment {i}: {b} before, {a} after"
        );
    }
    assert!(before.len() > 100);
}

/// Writing several times the cache size waits for writeback and GC, never fails, and
/// every byte reads back; the log wraps (key_tail moves on).
#[test]
fn full_cache_reclaims_and_keeps_data() {
    let media = formatted(CACHE);
    let dev: u64 = 192 << 20;
    let backing = Arc::new(MemBacking::new(dev));
    let cfg = CacheConfig {
        gc_percent: Some(10),
        ..inline(2)
    };
    let c = Cache::open(media, backing.clone(), cfg).unwrap();
    let chunk = 1 << 20;
    let rounds = 5u64; // 5 × 192 MiB ≈ 2 × the cache
    for r in 0..rounds {
        for i in 0..dev / chunk {
            c.write(
                (i % 2) as u32,
                i * chunk,
                &pattern(r * 1000 + i, chunk as usize),
                false,
            )
            .unwrap();
        }
    }
    let st = c.status();
    assert!(st.gc_runs > 0, "{st:?}");
    assert_ne!(st.kernel.key_tail, CachePos::new(0, 0), "{st:?}");
    let mut buf = vec![0; chunk as usize];
    for i in 0..dev / chunk {
        c.read(0, i * chunk, &mut buf).unwrap();
        assert!(
            buf == pattern((rounds - 1) * 1000 + i, chunk as usize),
            "chunk {i}"
        );
    }
    c.writeback_all().unwrap();
    assert!(c.status().is_clean());
    for i in (0..dev / chunk).step_by(7) {
        assert!(
            backing.to_vec(i * chunk, chunk as usize)
                == pattern((rounds - 1) * 1000 + i, chunk as usize),
            "backing chunk {i}"
        );
    }
}

/// Several queues writing and reading disjoint ranges from several threads, with the
/// workers running: every thread reads back its own latest data; then a reopen does too.
#[test]
fn concurrent_queues() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(64 << 20));
    let cfg = CacheConfig {
        queues: 4,
        gc_percent: Some(20),
        ..CacheConfig::default()
    };
    let c = Arc::new(Cache::open(media.clone(), backing.clone(), cfg).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                // Thread t owns every 4th 64 KiB block: neighbours share 4 MiB regions.
                let blocks: Vec<u64> = (0..256u64).map(|b| b * 4 + t).collect();
                let mut latest = vec![0u64; blocks.len()];
                for round in 1..=6u64 {
                    for (i, &b) in blocks.iter().enumerate() {
                        let seed = round * 100_000 + b;
                        c.write(
                            t as u32,
                            b << 16,
                            &pattern(seed, 1 << 16),
                            round % 3 == 0 && i % 50 == 0,
                        )
                        .unwrap();
                        latest[i] = seed;
                    }
                    let mut buf = vec![0; 1 << 16];
                    for (i, &b) in blocks.iter().enumerate().step_by(5) {
                        c.read(t as u32, b << 16, &mut buf).unwrap();
                        assert!(buf == pattern(latest[i], 1 << 16), "thread {t} block {b}");
                    }
                }
                (blocks, latest)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    Arc::try_unwrap(c).unwrap().close().unwrap();
    let c = Cache::open(media, backing, cfg).unwrap();
    let mut buf = vec![0; 1 << 16];
    for (blocks, latest) in &results {
        for (i, &b) in blocks.iter().enumerate() {
            c.read(0, b << 16, &mut buf).unwrap();
            assert!(
                buf == pattern(latest[i], 1 << 16),
                "after reopen, block {b}"
            );
        }
    }
}

/// gc_percent changes are persisted in cache_info like the kernel's message.
#[test]
fn gc_percent_is_persisted() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(1 << 20));
    let c = Cache::open(media.clone(), backing.clone(), inline(1)).unwrap();
    c.set_gc_percent(33).unwrap();
    assert!(c.set_gc_percent(91).is_err());
    c.close().unwrap();
    let info = Cache::peek_info(&*media).unwrap().unwrap();
    assert_eq!(info.gc_percent, 33);
    let c = Cache::open(media, backing, inline(1)).unwrap();
    assert_eq!(c.status().kernel.gc_percent, 33);
    assert_eq!(c.status().kernel.cache_info_flags, 0x2 | (33 << 6));
}

/// Requests that are not sector-aligned or run past the device fail without effect.
#[test]
fn bad_requests() {
    let media = formatted(CACHE);
    let c = Cache::open(media, Arc::new(MemBacking::new(1 << 20)), inline(1)).unwrap();
    let mut buf = vec![0; 1024];
    for (off, len) in [
        (1u64, 512usize),
        (0, 100),
        ((1 << 20) - 512, 1024),
        (u64::MAX - 511, 512),
    ] {
        assert!(
            c.write(0, off, &buf[..len.min(1024)], false).is_err(),
            "{off} {len}"
        );
        assert!(
            c.read(0, off, &mut buf[..len.min(1024)]).is_err(),
            "{off} {len}"
        );
    }
    assert_eq!(c.status().written, 0);
}

/// With data_crc, a corrupted byte of cached data fails the read hit with an I/O error
/// (the kernel would serve it), is counted, and makes replay refuse the cache.
#[test]
fn data_crc_mismatch_is_never_served() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let cfg = CacheConfig {
        data_crc: true,
        ..inline(1)
    };
    let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    c.write(0, 1 << 20, &pattern(5, 8192), false).unwrap();
    c.flush().unwrap();
    let snap = index_snapshot(&c);
    let (_, ext) = snap.iter().find(|(off, _)| *off == 1 << 20).unwrap();
    let abs = c
        .inner()
        .reader()
        .abs(CachePos::new(ext.seg, ext.seg_off + 4096))
        .unwrap();
    let mut byte = [0u8; 1];
    media.read(abs, &mut byte).unwrap();
    media.write(abs, &[byte[0] ^ 0x40]).unwrap();
    let mut buf = vec![0; 512];
    // Even a read of an untouched sector of the key fails: the key's CRC covers it all.
    let e = c.read(0, 1 << 20, &mut buf).unwrap_err();
    assert!(matches!(e, crate::EngineError::DataCrc { .. }), "{e}");
    assert_eq!(e.errno(), -libc::EIO);
    assert_eq!(c.status().errors, 1);
    c.close().unwrap();
    drop(c);
    let e = Cache::open(media, backing, cfg).unwrap_err();
    assert!(matches!(e, crate::EngineError::DataCrc { .. }), "{e}");
}

/// The log chains into new segments with LAST ksets when one fills up; replay follows the
/// chain; GC frees log segments key_tail leaves; and data survives all of it.
#[test]
fn the_log_chains_segments_and_gc_frees_them() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let cfg = CacheConfig {
        gc_percent: Some(0),
        ..inline(1)
    };
    let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    // One-key ksets (FUA) of 64 bytes each: a 16 MiB log segment holds about 262 000.
    let mut i = 0u64;
    let sectors = (16u64 << 20) / 512;
    while c.status().kernel.key_head.seg == 0 || c.status().kernel.key_head.off < 4096 {
        let s = (i * 7) % sectors;
        c.write(0, s * 512, &pattern(i, 512), true).unwrap();
        i += 1;
        assert!(i < 400_000, "the log never left its first segment");
    }
    let head = c.status().kernel.key_head;
    assert_ne!(head.seg, 0);
    // Reopen: replay crosses the LAST kset and finds the same head.
    c.close().unwrap();
    drop(c);
    let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    assert_eq!(c.status().kernel.key_head, head);
    assert!(c.status().replay.last_ksets >= 1);
    let check = |c: &Cache| {
        let mut buf = vec![0; 512];
        for j in (i.saturating_sub(2000)..i).step_by(97) {
            let s = (j * 7) % sectors;
            // Only the newest write of a sector is current.
            if (j + 1..i).any(|k| (k * 7) % sectors == s) {
                continue;
            }
            c.read(0, s * 512, &mut buf).unwrap();
            assert!(buf == pattern(j, 512), "write {j} at sector {s}");
        }
    };
    check(&c);
    // Write everything back; GC then walks key_tail through the LAST kset and frees the
    // first log segment.
    c.writeback_all().unwrap();
    let st = c.status();
    assert!(st.is_clean(), "{st:?}");
    assert_eq!(st.kernel.key_tail, st.kernel.dirty_tail, "{st:?}");
    assert_ne!(
        st.kernel.key_tail.seg, 0,
        "key_tail left the first log segment: {st:?}"
    );
    check(&c);
}

/// `is_cached` is true exactly when every byte of the range is in the index: after
/// writes, across a 4 MiB boundary, and after a read miss cached its data.
#[test]
fn is_cached_tells_whether_a_read_stays_in_the_cache() {
    let cache = Cache::open(
        formatted(CACHE),
        Arc::new(MemBacking::new(64 << 20)),
        inline(2),
    )
    .unwrap();
    const K: u64 = 1024;
    const M: u64 = 1 << 20;
    cache.write(0, 4 * K, &pattern(1, 8 << 10), false).unwrap();
    assert!(cache.is_cached(4 * K, 8 * K));
    assert!(cache.is_cached(8 * K, 512));
    assert!(!cache.is_cached(0, 8 * K), "hole before");
    assert!(!cache.is_cached(4 * K, 12 * K), "hole after");
    assert!(!cache.is_cached(4 * K + 1, 512), "unaligned");
    assert!(!cache.is_cached(64 << 20, 512), "past the end");
    // Two writes that meet at the 4 MiB boundary.
    cache
        .write(1, 4 * M - 8 * K, &pattern(2, 8 << 10), false)
        .unwrap();
    assert!(!cache.is_cached(4 * M - 8 * K, 16 * K));
    cache.write(0, 4 * M, &pattern(3, 8 << 10), false).unwrap();
    assert!(cache.is_cached(4 * M - 8 * K, 16 * K));
    // Two adjacent writes and a hole between them that a read miss fills.
    cache.write(0, 20 * M, &pattern(4, 4 << 10), false).unwrap();
    cache
        .write(0, 20 * M + 8 * K, &pattern(5, 4 << 10), false)
        .unwrap();
    assert!(!cache.is_cached(20 * M, 12 * K));
    let mut buf = vec![0; 12 << 10];
    cache.read(0, 20 * M, &mut buf).unwrap();
    assert!(cache.is_cached(20 * M, 12 * K), "the miss was cached");
    cache.close().unwrap();
}

/// With data_crc, a corrupted byte of CLEAN cached data (a read-miss fill) is not an
/// error for the reader: the backing device holds the same bytes, so the read is served
/// from it (through `read` and `read_with`), the mismatch is counted, and the bytes are
/// cached again from the backing device.
#[test]
fn data_crc_mismatch_on_clean_data_is_served_from_the_backing() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let want = pattern(6, 8192);
    crate::backing::Backing::write_at(&*backing, 2 << 20, &want).unwrap();
    let cfg = CacheConfig {
        data_crc: true,
        ..inline(1)
    };
    let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    let mut buf = vec![0; 8192];
    c.read(0, 2 << 20, &mut buf).unwrap();
    assert!(buf == want);
    let snap = index_snapshot(&c);
    let (_, ext) = *snap.iter().find(|(off, _)| *off == 2 << 20).unwrap();
    assert!(ext.is_clean(), "the miss was cached as CLEAN");
    let abs = c
        .inner()
        .reader()
        .abs(CachePos::new(ext.seg, ext.seg_off + 100))
        .unwrap();
    let mut byte = [0u8; 1];
    media.read(abs, &mut byte).unwrap();
    media.write(abs, &[byte[0] ^ 0x01]).unwrap();
    buf.fill(0);
    c.read(0, 2 << 20, &mut buf).unwrap();
    assert!(buf == want, "served from the backing device");
    assert_eq!(c.status().errors, 1);
    // The bytes were cached again, elsewhere: the next reads hit and count nothing.
    let hits = c.status().hits;
    let mut pieced = vec![0; 8192];
    c.read_with(0, 2 << 20, 8192, &mut |at, b| {
        let at = usize::try_from(at).unwrap();
        pieced[at..at + b.len()].copy_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert!(pieced == want);
    assert_eq!(c.status().errors, 1);
    assert_eq!(c.status().hits, hits + 8192, "a hit again");
    // A DIRTY extent with a mismatch still fails (data_crc_mismatch_is_never_served).
    c.close().unwrap();
}

/// Writeback takes several ksets per round, with one backing flush: ten FUA writes (ten
/// one-key ksets) to the same block and a neighbour go back with one flush, and the
/// backing ends up with the newest data of each byte (later ksets win within a round).
#[test]
fn writeback_rounds_share_a_flush_and_keep_the_newest_data() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let c = Cache::open(media, backing.clone(), inline(1)).unwrap();
    let mut newest = Vec::new();
    for i in 0..10u64 {
        let data = pattern(100 + i, 8192);
        // Each write overlaps the one before by 4 KiB.
        c.write(0, (1 << 20) + (i % 2) * 4096, &data, true).unwrap();
        newest = data;
    }
    let before = backing.flushes();
    assert!(c.writeback_step().unwrap(), "one round");
    assert_eq!(
        backing.flushes(),
        before + 1,
        "one backing flush for the ten ksets"
    );
    assert!(!c.writeback_step().unwrap(), "clean after one round");
    // The last write (i = 9) covers [1 MiB + 4 KiB, 1 MiB + 12 KiB); the one before it
    // (i = 8) the 4 KiB below.
    assert_eq!(backing.to_vec((1 << 20) + 4096, 8192), newest);
    assert_eq!(
        backing.to_vec(1 << 20, 4096),
        pattern(108, 8192)[..4096].to_vec()
    );
    c.close().unwrap();
}

#[test]
fn writeback_leaves_replaced_data_to_the_write_that_replaced_it() {
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let c = Cache::open(media, backing.clone(), inline(1)).unwrap();
    let at = 3 << 20;
    let old = pattern(1, 8192);
    let new = pattern(2, 4096);
    // The old write's kset is durable (FUA); the new one, over its first 4 KiB, stays in
    // the open kset.
    c.write(0, at, &old, true).unwrap();
    c.write(0, at, &new, false).unwrap();
    let writes = backing.writes();
    assert!(c.writeback_step().unwrap(), "the old write's kset");
    assert_eq!(
        backing.writes(),
        writes + 1,
        "one write: the old data's second half"
    );
    assert_eq!(
        backing.to_vec(at, 4096),
        vec![0; 4096],
        "the replaced half stays"
    );
    assert_eq!(backing.to_vec(at + 4096, 4096), old[4096..].to_vec());
    // W0: the round closed the new write's kset, so the next round can take it.
    assert!(
        c.writeback_step().unwrap(),
        "the new write's kset is durable"
    );
    assert_eq!(backing.to_vec(at, 4096), new);
    assert!(!c.writeback_step().unwrap(), "clean");
    c.close().unwrap();
}

#[test]
fn writeback_waits_only_under_its_share_while_writes_come() {
    use crate::workers::Quiet;
    use std::time::{Duration, Instant};
    let cfg = CacheConfig {
        writeback_percent: 10,
        ..inline(1)
    };
    let c = Cache::open(formatted(CACHE), Arc::new(MemBacking::new(16 << 20)), cfg).unwrap();
    let inner = c.inner();
    let t0 = Instant::now();
    let mut quiet = Quiet::new(t0);
    c.write(0, 0, &pattern(1, 4096), false).unwrap();
    assert!(
        inner.writeback_may_wait(&mut quiet, t0),
        "a little dirty data, writes coming"
    );
    let later = t0 + Duration::from_millis(300);
    assert!(
        inner.writeback_may_wait(&mut quiet, later),
        "still within the idle time"
    );
    c.write(0, 4096, &pattern(2, 4096), false).unwrap();
    let idle = later + Duration::from_millis(400);
    assert!(
        inner.writeback_may_wait(&mut quiet, idle),
        "the write moved the clock"
    );
    let idle = idle + Duration::from_millis(500);
    assert!(
        !inner.writeback_may_wait(&mut quiet, idle),
        "no write for 0.5 s: idle"
    );
    // Over the share: 10 % of the segments' bytes.
    c.write(0, 8192, &pattern(3, 4096), false).unwrap();
    let share = (u64::from(inner.segs.count()) * pcache_format::layout::SEG_SIZE).div_ceil(10);
    inner.health.counters.set_dirty(share);
    assert!(!inner.writeback_may_wait(&mut quiet, idle), "at the share");
    inner.health.counters.set_dirty(share - 1);
    assert!(inner.writeback_may_wait(&mut quiet, idle), "under it");
    // A writer waiting for space.
    inner.ctl.want_space(false);
    assert!(!inner.writeback_may_wait(&mut quiet, idle), "space wanted");
    inner
        .ctl
        .gc_wanted
        .store(false, std::sync::atomic::Ordering::Release);
    // A mode that keeps no dirty data drains at once.
    assert!(inner.writeback_may_wait(&mut quiet, idle));
    c.set_cache_mode(crate::CacheMode::Writethrough).unwrap();
    assert!(!inner.writeback_may_wait(&mut quiet, idle), "draining");
    c.set_cache_mode(crate::CacheMode::Writeback).unwrap();
    // Off.
    c.set_writeback_percent(0).unwrap();
    assert!(!inner.writeback_may_wait(&mut quiet, idle), "0: at once");
    assert!(c
        .set_writeback_percent(crate::WRITEBACK_PERCENT_MAX + 1)
        .is_err());
    c.close().unwrap();
    // Segments in use at gc_percent (0 here: always).
    let cfg = CacheConfig {
        writeback_percent: 10,
        gc_percent: Some(0),
        ..inline(1)
    };
    let c = Cache::open(formatted(CACHE), Arc::new(MemBacking::new(16 << 20)), cfg).unwrap();
    let mut quiet = Quiet::new(t0);
    c.write(0, 0, &pattern(1, 4096), false).unwrap();
    assert!(!c.inner().writeback_may_wait(&mut quiet, t0), "GC is due");
    c.close().unwrap();
    let cfg = CacheConfig {
        writeback_percent: crate::WRITEBACK_PERCENT_MAX + 1,
        ..inline(1)
    };
    assert!(Cache::open(formatted(CACHE), Arc::new(MemBacking::new(16 << 20)), cfg).is_err());
}

#[test]
fn writeback_never_waits_for_a_kset_it_would_close() {
    use std::sync::mpsc;
    use std::time::Duration;
    let media = formatted(CACHE);
    let backing = Arc::new(MemBacking::new(16 << 20));
    let c = Cache::open(media, backing.clone(), inline(1)).unwrap();
    let at = 5 << 20;
    let old = pattern(3, 8192);
    c.write(0, at, &old, true).unwrap();
    c.write(0, at, &pattern(4, 4096), false).unwrap();
    // Someone holds the region's kset (a writer closing it may be waiting for the space
    // this round would free): the round writes the replaced bytes too, and returns.
    let ki = layout::kset_index(at, c.inner().log.ksets.len() as u32) as usize;
    let held = c.inner().log.ksets[ki].lock();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(c.writeback_step().unwrap()).unwrap());
        let done = rx.recv_timeout(Duration::from_secs(10));
        drop(held);
        assert_eq!(done, Ok(true), "the round waited for the kset");
    });
    assert_eq!(
        backing.to_vec(at, 8192),
        old,
        "the whole old write went out"
    );
    c.close().unwrap();
}
