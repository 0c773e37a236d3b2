//! Regression tests for defects found in review: each failed before its fix.

use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::format::kset::KsetBuf;
use pcache_engine::format::layout::{self, CachePos, SEG_DATA_SIZE};
use pcache_engine::format::record::{encode_meta, TailPos};
use pcache_engine::format::Key;
use pcache_engine::media::{CacheMedia, MediaError, MemMedia};
use pcache_engine::{Cache, CacheConfig, EngineError};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use zerocopy::IntoBytes;

const CACHE: u64 = 512 << 20;

mod common;

fn formatted() -> MemMedia {
    common::formatted(CACHE)
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

/// A backing device whose writes can fail.
#[derive(Debug)]
struct FailingBacking {
    mem: MemBacking,
    fail_writes: AtomicBool,
}

impl Backing for FailingBacking {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read_at(off, buf)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected"));
        }
        self.mem.write_at(off, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.mem.flush()
    }
    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        // Unspecified content after a discard.
        self.mem.write_at(off, &vec![0xAA; len as usize])
    }
    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        self.mem.write_zeroes(off, len)
    }
}

/// A read miss on a queue whose writer waits for space is still served (it just is not
/// cached), instead of queueing behind the writer.
#[test]
fn a_read_miss_does_not_wait_behind_a_full_cache() {
    let backing = Arc::new(FailingBacking {
        mem: MemBacking::new(1 << 30),
        fail_writes: AtomicBool::new(true),
    });
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
    backing.fail_writes.store(false, Ordering::SeqCst);
    writer.join().unwrap();
}

/// After a discard, the range reads zeros even once GC has dropped the zero keys and the
/// backing device's post-discard content shows through.
#[test]
fn a_discarded_range_reads_zeros_after_gc() {
    let backing = Arc::new(FailingBacking {
        mem: MemBacking::new(1 << 30),
        fail_writes: AtomicBool::new(false),
    });
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

/// Media that fails the next store to a key_tail slot once armed (a transient error).
#[derive(Debug)]
struct FailTailOnce {
    mem: MemMedia,
    armed: AtomicBool,
}

impl CacheMedia for FailTailOnce {
    fn len(&self) -> u64 {
        self.mem.len()
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.mem.read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if (off == layout::key_tail_off(0) || off == layout::key_tail_off(1))
            && self.armed.swap(false, Ordering::SeqCst)
        {
            return Err(MediaError::ReadOnly);
        }
        self.mem.write(off, data)
    }
    fn flush(&self, off: u64, len: u64) {
        self.mem.flush(off, len);
    }
    fn fence(&self) {
        self.mem.fence();
    }
}

/// A GC round whose key_tail update fails changes nothing, so the retry does not drop
/// the kset's segment references a second time (which freed a segment still in use).
#[test]
fn a_failed_gc_round_is_retried_cleanly() {
    let media = Arc::new(FailTailOnce {
        mem: formatted(),
        armed: AtomicBool::new(false),
    });
    let backing = Arc::new(MemBacking::new(1 << 30));
    let cfg = CacheConfig {
        gc_percent: Some(0),
        background: false,
        ..CacheConfig::default()
    };
    let c = Cache::open(media.clone(), backing, cfg).unwrap();
    c.write(0, 0, &vec![1u8; 12 << 20], true).unwrap(); // three keys in one segment
    media.armed.store(true, Ordering::SeqCst);
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
