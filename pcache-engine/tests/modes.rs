//! What each cache mode does with writes and read misses, and the sequential cutoff, on
//! an engine with no background workers (so nothing happens behind the test's back). The
//! model tests (`model.rs`) and the power-cut proof (`crash.rs`) run every mode too; here
//! are the properties a user picks a mode for.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::MemMedia;
use pcache_engine::testing::formatted;
use pcache_engine::{Cache, CacheConfig, CacheMode, SeqCutoff};
use std::sync::Arc;

const DEV: u64 = 128 << 20;
const MIB: usize = 1 << 20;

fn open(mode: CacheMode, cutoff: u64) -> (Cache, Arc<MemBacking>, Arc<MemMedia>) {
    let media = Arc::new(formatted(512 << 20));
    let backing = Arc::new(MemBacking::new(DEV));
    let cfg = CacheConfig {
        background: false,
        cache_mode: Some(mode),
        seq_cutoff: SeqCutoff {
            read: cutoff,
            write: cutoff,
        },
        ..CacheConfig::default()
    };
    let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    (c, backing, media)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 512) as u8).wrapping_mul(7))
        .collect()
}

/// Bytes the index holds (clean and dirty).
fn cached(c: &Cache) -> u64 {
    c.status().cached_bytes
}

#[test]
fn writethrough_and_writearound_put_every_completed_write_on_the_backing_device() {
    for mode in [
        CacheMode::Writethrough,
        CacheMode::Writearound,
        CacheMode::Passthrough,
    ] {
        let (c, backing, _) = open(mode, 0);
        for (i, off) in [0u64, 3 << 20, 5 << 20, 64 << 20].into_iter().enumerate() {
            let data = pattern(i as u8, 256 << 10);
            c.write(0, off, &data, false).unwrap();
            // Right after completion, without a flush.
            assert_eq!(backing.to_vec(off, data.len()), data, "{mode} at {off:#x}");
        }
        let st = c.status();
        assert_eq!(st.dirty_bytes, 0, "{mode}");
        assert!(!st.draining);
        assert!(st.is_clean(), "{mode}: nothing to write back");
    }
}

#[test]
fn writethrough_caches_what_it_writes_and_writearound_does_not() {
    let (c, _, _) = open(CacheMode::Writethrough, 0);
    c.write(0, 1 << 20, &pattern(1, MIB), false).unwrap();
    assert_eq!(cached(&c), MIB as u64, "writethrough caches the write");

    let (c, _, _) = open(CacheMode::Writearound, 0);
    c.write(0, 1 << 20, &pattern(1, MIB), false).unwrap();
    assert_eq!(
        cached(&c),
        0,
        "writearound: no key for a written, never-read range"
    );
    // A read of it caches it; a later write over it updates the cached bytes.
    let mut buf = vec![0; MIB];
    c.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(cached(&c), MIB as u64);
    let newer = pattern(9, MIB);
    c.write(0, 1 << 20, &newer, false).unwrap();
    c.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, newer, "no older cached byte is served");
    assert_eq!(c.status().clean_bytes, MIB as u64);
}

#[test]
fn writeonly_and_passthrough_do_not_cache_misses() {
    for mode in [CacheMode::Writeonly, CacheMode::Passthrough] {
        let (c, backing, _) = open(mode, 0);
        let old = pattern(3, MIB);
        pcache_engine::backing::Backing::write_at(&*backing, 8 << 20, &old).unwrap();
        let mut buf = vec![0; MIB];
        c.read(0, 8 << 20, &mut buf).unwrap();
        assert_eq!(buf, old);
        assert_eq!(
            cached(&c),
            0,
            "{mode}: a read of unwritten data leaves no key"
        );
        let st = c.status();
        assert_eq!((st.reads, st.read_misses), (1, 1));
    }
    // writeonly keeps writes in the cache, dirty, and serves them.
    let (c, backing, _) = open(CacheMode::Writeonly, 0);
    let data = pattern(5, MIB);
    c.write(0, 0, &data, false).unwrap();
    assert_eq!(c.status().dirty_bytes, MIB as u64);
    assert_ne!(backing.to_vec(0, MIB), data);
    let mut buf = vec![0; MIB];
    c.read(0, 0, &mut buf).unwrap();
    assert_eq!(buf, data);
    assert_eq!(c.status().read_hits, 1);
}

#[test]
fn a_long_sequential_read_caches_at_most_the_cutoff() {
    let (c, _, _) = open(CacheMode::Writeback, 4 << 20);
    let mut buf = vec![0; 256 << 10];
    for i in 0..256u64 {
        c.read(0, i * (256 << 10), &mut buf).unwrap();
    }
    let st = c.status();
    assert!(cached(&c) <= 4 << 20, "cached {}", cached(&c));
    assert!(cached(&c) >= 3 << 20, "the start of the stream is cached");
    assert_eq!(st.bypassed_reads, (64 << 20) - cached(&c));
    // Random reads are not cut off.
    for i in 0..64u64 {
        c.read(1, ((i * 37) % 60 + 65) << 20, &mut buf[..4096])
            .unwrap();
    }
    assert_eq!(c.status().bypassed_reads, st.bypassed_reads);
}

#[test]
fn a_long_sequential_write_goes_around_the_cache() {
    let (c, backing, _) = open(CacheMode::Writeback, 1 << 20);
    let data = pattern(7, 256 << 10);
    for i in 0..32u64 {
        c.write(0, i * (256 << 10), &data, false).unwrap();
    }
    let st = c.status();
    assert_eq!(
        st.dirty_bytes,
        1 << 20,
        "the first cutoff bytes are cached dirty"
    );
    assert_eq!(st.bypassed_writes, 7 << 20);
    assert_eq!(backing.to_vec(7 << 20, data.len()), data);
    let mut buf = vec![0; data.len()];
    for i in 0..32u64 {
        c.read(2, i * (256 << 10), &mut buf).unwrap();
        assert_eq!(buf, data);
    }
}

#[test]
fn switching_to_writethrough_drains_and_then_keeps_nothing_dirty() {
    let (c, backing, media) = open(CacheMode::Writeback, 0);
    let old = pattern(1, 4 * MIB);
    c.write(0, 0, &old, false).unwrap();
    c.set_cache_mode(CacheMode::Writethrough).unwrap();
    let st = c.status();
    assert_eq!(st.cache_mode, CacheMode::Writethrough);
    assert!(st.draining, "dirty data is left");
    // A write over dirty data keeps log order (logged, written back later)...
    let newer = pattern(2, MIB);
    c.write(0, 0, &newer, false).unwrap();
    // ...and one elsewhere goes through at once.
    let other = pattern(3, MIB);
    c.write(0, 32 << 20, &other, false).unwrap();
    assert_eq!(backing.to_vec(32 << 20, MIB), other);
    let mut seen = Vec::new();
    c.drain(&mut |left| seen.push(left)).unwrap();
    assert_eq!(seen.last(), Some(&0));
    let st = c.status();
    assert!(!st.draining && st.dirty_bytes == 0);
    let mut want = old.clone();
    want[..MIB].copy_from_slice(&newer);
    assert_eq!(backing.to_vec(0, 4 * MIB), want);
    // Now a write over what was dirty goes through.
    c.write(0, 0, &old[..MIB], false).unwrap();
    assert_eq!(backing.to_vec(0, MIB), &old[..MIB]);
    // The mode is kept in cache_info.
    c.close().unwrap();
    drop(c);
    let c = Cache::open(
        media,
        backing,
        CacheConfig {
            background: false,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    assert_eq!(c.status().cache_mode, CacheMode::Writethrough);
    assert_eq!(
        pcache_engine::format::record::CACHE_MODE_WRITEBACK,
        CacheMode::Writeback.value()
    );
}

#[test]
fn drain_writes_back_what_was_dirty_while_writes_go_on() {
    let (c, backing, _) = open(CacheMode::Writeback, 0);
    let data = pattern(4, 2 * MIB);
    c.write(0, 16 << 20, &data, false).unwrap();
    let mut rounds = 0;
    c.drain(&mut |_| {
        rounds += 1;
    })
    .unwrap();
    assert!(rounds >= 1);
    assert_eq!(backing.to_vec(16 << 20, data.len()), data);
    assert_eq!(c.status().dirty_bytes, 0);
}

/// Writes that go through, from several threads into the same regions over cached data:
/// every block reads back the last bytes written to it (a through write's key must not be
/// dropped because another write reached its region meanwhile, which would leave the
/// older cached bytes in place).
#[test]
fn concurrent_through_writes_over_cached_data_read_back() {
    let (c, backing, _) = open(CacheMode::Writeback, 0);
    let c = Arc::new(c);
    let region = 8 * MIB;
    c.write(0, 0, &pattern(0, region), false).unwrap();
    c.writeback_all().unwrap();
    c.set_cache_mode(CacheMode::Writethrough).unwrap();
    let blocks = region / 4096;
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = Arc::clone(&c);
            s.spawn(move || {
                for round in 1..=20u8 {
                    for b in (t..blocks).step_by(threads) {
                        let data = pattern(round.wrapping_mul(13).wrapping_add(b as u8), 4096);
                        c.write(t as u32, (b * 4096) as u64, &data, false).unwrap();
                    }
                }
            });
        }
    });
    let mut buf = vec![0; 4096];
    for b in 0..blocks {
        let want = pattern(20u8.wrapping_mul(13).wrapping_add(b as u8), 4096);
        c.read(0, (b * 4096) as u64, &mut buf).unwrap();
        assert!(buf == want, "block {b} through the cache reads older bytes");
        let on_backing = backing.to_vec((b * 4096) as u64, 4096);
        assert!(
            on_backing == want,
            "block {b} on the backing device is older"
        );
    }
}

/// A drain running in another thread (what `pcache-ublk flush` starts) writes nothing to
/// the backing device once `close` has returned: after that the devices may go to
/// another owner.
#[test]
fn nothing_is_written_back_after_close() {
    let (c, backing, _) = open(CacheMode::Writeback, 0);
    let c = Arc::new(c);
    // FUA: one kset each, so the drain takes several rounds.
    for i in 0..64u64 {
        c.write(0, i * (1 << 20), &pattern(i as u8, MIB), true)
            .unwrap();
    }
    // The drain's first round is done; close while it is between rounds.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    let drainer = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let mut first = true;
            c.drain(&mut |_| {
                if std::mem::take(&mut first) {
                    ready_tx.send(()).unwrap();
                    closed_rx.recv().unwrap();
                }
            })
        })
    };
    ready_rx.recv().unwrap();
    c.close().unwrap();
    let writes = backing.writes();
    closed_tx.send(()).unwrap();
    let r = drainer.join().unwrap();
    assert_eq!(backing.writes(), writes, "written back after close");
    assert!(
        matches!(r, Ok(()) | Err(pcache_engine::EngineError::Closed)),
        "{r:?}"
    );
}

/// A clean close flushes the writes that went straight to the backing device (WT2), as a
/// FLUSH does: nothing is left in the disk's volatile cache.
#[test]
fn close_flushes_what_reached_the_backing_device() {
    use pcache_engine::testing::TestBacking;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for mode in [
        CacheMode::Writethrough,
        CacheMode::Writearound,
        CacheMode::Passthrough,
    ] {
        let flushes = Arc::new(AtomicUsize::new(0));
        let seen = flushes.clone();
        let backing = Arc::new(TestBacking::new(MemBacking::new(DEV)).on_flush(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let cfg = CacheConfig {
            background: false,
            cache_mode: Some(mode),
            ..CacheConfig::default()
        };
        let cache = Cache::open(Arc::new(formatted(512 << 20)), backing, cfg).unwrap();
        cache.write(0, 1 << 20, &[9; 8192], false).unwrap();
        let before = flushes.load(Ordering::SeqCst);
        cache.close().unwrap();
        assert!(
            flushes.load(Ordering::SeqCst) > before,
            "{mode:?}: close did not flush the backing device"
        );
    }
}
