//! Regression tests for defects found in review: each failed before its fix.

use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::format::kset::KsetBuf;
use pcache_engine::format::layout::{self, CachePos, SEG_DATA_SIZE};
use pcache_engine::format::record::{encode_meta, TailPos};
use pcache_engine::format::Key;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::testing::{self, TestBacking, TestMedia};
use pcache_engine::{Cache, CacheConfig, EngineError};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use zerocopy::IntoBytes;

const CACHE: u64 = 512 << 20;

fn formatted() -> MemMedia {
    testing::formatted(CACHE)
}

/// Runs `f` on a thread; `None` if it has not finished after `secs` (a hang).
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

/// A write larger than the cache's whole data space completes: its pieces are logged
/// one by one, so earlier ones can be written back to make room for later ones.
#[test]
fn a_write_larger_than_the_cache_completes() {
    for background in [true, false] {
        let backing = Arc::new(MemBacking::new(1 << 30));
        let cfg = CacheConfig {
            background,
            ..CacheConfig::default()
        };
        let c = Arc::new(Cache::open(Arc::new(formatted()), backing.clone(), cfg).unwrap());
        let c2 = c.clone();
        let data: Vec<u8> = (0..(600u32 << 20)).map(|i| (i >> 12) as u8).collect();
        let data = Arc::new(data);
        let d2 = data.clone();
        let r = with_timeout(120, move || c2.write(0, 0, &d2, false));
        assert!(matches!(r, Some(Ok(()))), "background {background}: {r:?}");
        let mut buf = vec![0u8; 1 << 20];
        for mb in [0usize, 299, 599] {
            c.read(0, (mb as u64) << 20, &mut buf).unwrap();
            assert!(buf[..] == data[mb << 20..(mb + 1) << 20], "MiB {mb}");
        }
    }
}

/// A read miss on a queue whose writer waits for space is still served (it just is not
/// cached), instead of queueing behind the writer.
#[test]
fn a_read_miss_does_not_wait_behind_a_full_cache() {
    let backing = Arc::new(TestBacking::new(MemBacking::new(1 << 30)));
    backing.fail_writes(true);
    let cfg = CacheConfig {
        queues: 2,
        ..CacheConfig::default()
    };
    let c = Arc::new(Cache::open(Arc::new(formatted()), backing.clone(), cfg).unwrap());
    let w = c.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..600u64 {
            w.write(0, i << 20, &vec![1u8; 1 << 20], false).unwrap();
        }
    });
    // Wait until the writer is stuck on a full cache.
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let w = c.status().written;
        if w == last && w > 0 {
            break;
        }
        last = w;
    }
    let c0 = c.clone();
    let r = with_timeout(10, move || {
        let mut b = vec![0u8; 4096];
        c0.read(0, 900 << 20, &mut b)
    });
    assert!(
        matches!(r, Some(Ok(()))),
        "read on the writer's queue: {r:?}"
    );
    // The device recovers: the waiting writer resumes and finishes.
    backing.fail_writes(false);
    writer.join().unwrap();
}

/// After a discard, the range reads zeros even once GC has dropped the zero keys and the
/// backing device's post-discard content shows through.
#[test]
fn a_discarded_range_reads_zeros_after_gc() {
    // Unspecified content after a discard.
    let backing = Arc::new(TestBacking::new(MemBacking::new(1 << 30)).discard_fill(0xAA));
    let cfg = CacheConfig {
        gc_percent: Some(0),
        background: false,
        ..CacheConfig::default()
    };
    let c = Cache::open(Arc::new(formatted()), backing, cfg).unwrap();
    c.write(0, 0, &vec![0x55u8; 8 << 20], false).unwrap();
    c.discard(0, 8 << 20).unwrap();
    for r in 0..3u64 {
        for i in 0..512u64 {
            c.write(0, (64 << 20) + (i << 20), &vec![r as u8; 1 << 20], false)
                .unwrap();
        }
    }
    c.writeback_all().unwrap();
    let mut b = vec![0u8; 8 << 20];
    c.read(0, 0, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 0),
        "a discarded range reads non-zero"
    );
}

/// A log ending within a kset header of its segment's end is refused rather than
/// "extended" by a LAST kset written past the data area.
#[test]
fn a_log_ending_at_the_segment_end_is_refused() {
    let media = Arc::new(formatted());
    let backing = Arc::new(MemBacking::new(64 << 20));
    let cfg = CacheConfig {
        background: false,
        ..CacheConfig::default()
    };
    Cache::open(media.clone(), backing.clone(), cfg)
        .unwrap()
        .close()
        .unwrap();
    let at = SEG_DATA_SIZE - 64;
    let mut k = KsetBuf::new();
    let key = Key {
        off: 0,
        len: 4096,
        flags: 2,
        pos: CachePos::new(1, 0),
        seg_gen: 0,
        data_crc: 0,
    };
    k.push(&key.to_raw());
    let bytes = k.seal().to_vec();
    media
        .write(layout::data_area_off(0) + u64::from(at), &bytes)
        .unwrap();
    let t = encode_meta(&TailPos(CachePos::new(0, at)), 2);
    media.write(layout::key_tail_off(1), t.as_bytes()).unwrap();
    media
        .write(layout::dirty_tail_off(1), t.as_bytes())
        .unwrap();
    let before = media.to_vec(0, 64 << 20).unwrap();
    let e = Cache::open(media.clone(), backing, cfg).unwrap_err();
    assert!(matches!(e, EngineError::Inconsistent(_)), "{e}");
    assert!(
        media.to_vec(0, 64 << 20).unwrap() == before,
        "a refused open wrote"
    );
}

/// A GC round whose key_tail update fails changes nothing, so the retry does not drop
/// the kset's segment references a second time (which freed a segment still in use).
#[test]
fn a_failed_gc_round_is_retried_cleanly() {
    let media = Arc::new(TestMedia::new(formatted()));
    let backing = Arc::new(MemBacking::new(1 << 30));
    let cfg = CacheConfig {
        gc_percent: Some(0),
        background: false,
        ..CacheConfig::default()
    };
    let c = Cache::open(media.clone(), backing, cfg).unwrap();
    c.write(0, 0, &vec![1u8; 12 << 20], true).unwrap(); // three keys in one segment
                                                        // The next store to a key_tail slot fails, once (a transient error).
    media.fail_next_write_to(&[layout::key_tail_off(0), layout::key_tail_off(1)]);
    assert!(
        c.writeback_all().is_err(),
        "the injected failure is reported"
    );
    c.writeback_all().unwrap();
    c.write(0, 100 << 20, &vec![9u8; 4096], true).unwrap();
    let mut b = vec![0u8; 4096];
    c.read(0, 100 << 20, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 9),
        "a FUA write reads back {:#x}",
        b[0]
    );
    let st = c.status();
    c.close().unwrap();
    drop(c);
    let c = Cache::open(media, Arc::new(MemBacking::new(1 << 30)), cfg).unwrap();
    assert_eq!(c.status().kernel.key_head, st.kernel.key_head);
}

/// A discard or write zeroes of a device the cache holds little of (mkfs.ext4 discards
/// the whole device) writes zero keys only where the cache holds something; the rest goes
/// to the backing device alone. Found in the VM: mke2fs on /dev/ublkb0 over a 512 MiB
/// cache wrote 2 GiB of zero keys, cycling the cache through GC, for minutes.
#[test]
fn a_whole_device_discard_writes_zero_keys_only_where_cached() {
    let backing = Arc::new(MemBacking::new(2 << 30));
    backing.write_at(100 << 20, &[7; 8192]).unwrap();
    let cache = Cache::open(
        Arc::new(formatted()),
        backing.clone(),
        CacheConfig {
            background: false,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    cache.write(0, 1 << 30, &[9; 65536], false).unwrap();
    let before = cache.status();
    // 2 GiB, four times the cache: only the 64 KiB it holds get zero keys.
    for (i, chunk) in (0..2u64 << 30).step_by(1 << 30).enumerate() {
        if i % 2 == 0 {
            cache.discard(chunk, 1 << 30).unwrap();
        } else {
            cache.write_zeroes(chunk, 1 << 30).unwrap();
        }
    }
    let after = cache.status();
    assert_eq!(after.gc_runs, before.gc_runs);
    assert!(
        after.kernel.segs_used <= before.kernel.segs_used + 1,
        "{} segments used after the discard ({} before)",
        after.kernel.segs_used,
        before.kernel.segs_used
    );
    let mut buf = vec![1; 65536];
    cache.read(0, 1 << 30, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "the cached range reads zeros");
    cache.read(0, 100 << 20, &mut buf[..8192]).unwrap();
    assert!(
        buf[..8192].iter().all(|&b| b == 0),
        "the uncached range reads zeros"
    );
    // Written back, the backing device holds zeros over both.
    cache.writeback_all().unwrap();
    backing.read_at(1 << 30, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    cache.close().unwrap();
}

/// Replay checks a data_crc cache's keys on several threads (`replay_threads`) and
/// applies their verdicts in log order: the same index, the same stats, and on damaged
/// data the same refusal (the first bad key in log order) and the same salvage.
#[test]
fn replay_on_several_threads_is_the_same_replay() {
    let media = Arc::new(formatted());
    let backing = Arc::new(MemBacking::new(256 << 20));
    let cfg = |threads: usize, read_only: bool, salvage: bool| CacheConfig {
        data_crc: true,
        background: false,
        replay_threads: threads,
        read_only,
        salvage,
        ..CacheConfig::default()
    };
    let cache = Cache::open(media.clone(), backing.clone(), cfg(1, false, false)).unwrap();
    let mut rng = testing::SplitMix(3);
    for i in 0..3000u64 {
        // 4..64 KiB, overlapping: later keys win over earlier ones.
        let len = (1 + rng.below(16)) * 4096;
        let off = rng.below((256 << 20) / 4096 - 16) * 4096;
        // Each 4 KiB page unique: the key's number and the page's, then a fill.
        let mut data = vec![(i % 251) as u8; len as usize];
        for (p, page) in data.chunks_mut(4096).enumerate() {
            page[..8].copy_from_slice(&i.to_le_bytes());
            page[8..16].copy_from_slice(&(p as u64).to_le_bytes());
        }
        cache.write(0, off, &data, false).unwrap();
    }
    cache.close().unwrap();
    let replay = |threads: usize| {
        let c = Cache::open(media.clone(), backing.clone(), cfg(threads, true, false)).unwrap();
        let r = (c.dirty_extents(), c.status().replay);
        c.close().unwrap();
        r
    };
    let one = replay(1);
    assert!(one.1.keys >= 3000 && one.1.ksets > 10, "{:?}", one.1);
    for threads in [2, 3, 8] {
        assert_eq!(replay(threads), one, "{threads} threads");
    }
    // Damage the data of two keys: the same first refusal, the same salvage.
    let extents = one.0.clone();
    let (a, b) = (
        extents[extents.len() / 3].0,
        extents[2 * extents.len() / 3].0,
    );
    // Where their cached bytes are: read them (hits), then find those pages in the media.
    let c = Cache::open(media.clone(), backing.clone(), cfg(1, true, false)).unwrap();
    let want: Vec<Vec<u8>> = [a, b]
        .iter()
        .map(|&off| {
            let mut page = vec![0; 4096];
            c.read(0, off, &mut page).unwrap();
            page
        })
        .collect();
    c.close().unwrap();
    let mut page = vec![0; 4096];
    let mut found = Vec::new();
    let mut at = layout::SEGMENTS_OFF;
    while at + 4096 <= media.len() && found.len() < 2 {
        media.read(at, &mut page).unwrap();
        if want.contains(&page) {
            found.push((at, page[100]));
        }
        at += 512;
    }
    assert_eq!(found.len(), 2, "the two cached pages");
    for (at, byte) in found {
        media.write(at + 100, &[!byte]).unwrap();
    }
    let refusal = |threads: usize| {
        Cache::open(media.clone(), backing.clone(), cfg(threads, true, false))
            .unwrap_err()
            .to_string()
    };
    let first = refusal(1);
    assert!(first.contains("data"), "{first}");
    let salvage = |threads: usize| {
        let c = Cache::open(media.clone(), backing.clone(), cfg(threads, true, true)).unwrap();
        let r = (c.salvage_report().skipped_keys.len(), c.dirty_extents());
        c.close().unwrap();
        r
    };
    let s1 = salvage(1);
    assert!(s1.0 >= 1, "nothing skipped");
    for threads in [2, 4] {
        assert_eq!(refusal(threads), first, "{threads} threads");
        assert_eq!(salvage(threads), s1, "{threads} threads");
    }
}
