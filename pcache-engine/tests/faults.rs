//! Injected errors: a backing device whose reads, writes or flushes fail, and cache media
//! whose writes fail. Dirty data is never dropped, errors are reported, and nothing
//! acknowledged is lost.

use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::testing::{formatted, TestBacking, TestMedia};
use pcache_engine::{Cache, CacheConfig, EngineError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEV: u64 = 16 << 20;

/// Cache media whose writes can fail.
fn media() -> Arc<TestMedia> {
    Arc::new(TestMedia::new(formatted(512 << 20)))
}

/// A backing device whose reads, writes and flushes can fail.
fn backing() -> Arc<TestBacking> {
    Arc::new(TestBacking::new(MemBacking::new(DEV)))
}

fn inline() -> CacheConfig {
    CacheConfig {
        background: false,
        ..CacheConfig::default()
    }
}

fn data(seed: u8) -> Vec<u8> {
    (0..64 * 1024).map(|i| seed ^ (i as u8)).collect()
}

#[test]
fn writeback_errors_keep_dirty_data_and_retry() {
    for fault in ["write", "flush"] {
        let m = media();
        let b = backing();
        let c = Cache::open(m.clone(), b.clone(), inline()).unwrap();
        c.write(0, 1 << 20, &data(1), false).unwrap();
        c.flush().unwrap();
        let before = c.status();
        match fault {
            "write" => b.fail_writes(true),
            _ => b.fail_flushes(true),
        }
        let e = c.writeback_step().unwrap_err();
        assert!(matches!(e, EngineError::Backing { .. }), "{fault}: {e}");
        assert_eq!(e.errno(), -libc::EIO);
        let after = c.status();
        assert_eq!(
            after.kernel.dirty_tail, before.kernel.dirty_tail,
            "{fault}: dirty_tail moved"
        );
        assert!(!after.is_clean());
        let mut buf = vec![0; 64 * 1024];
        c.read(0, 1 << 20, &mut buf).unwrap();
        assert_eq!(buf, data(1), "{fault}: cached data still served");
        // The cache stays usable, and the same kset is written back once the device works.
        b.fail_writes(false);
        b.fail_flushes(false);
        c.write(0, 2 << 20, &data(2), false).unwrap();
        c.writeback_all().unwrap();
        assert!(c.status().is_clean());
        assert_eq!(b.mem().to_vec(1 << 20, 64 * 1024), data(1));
        assert_eq!(b.mem().to_vec(2 << 20, 64 * 1024), data(2));
    }
}

/// With the workers running, a failing backing device is retried with back-off and
/// counted; when it recovers, writeback drains.
#[test]
fn background_writeback_retries_until_the_device_recovers() {
    let m = media();
    let b = backing();
    b.fail_writes(true);
    let c = Cache::open(m, b.clone(), CacheConfig::default()).unwrap();
    c.write(0, 0, &data(7), true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status().errors == 0 {
        assert!(Instant::now() < deadline, "no writeback error reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!c.status().is_clean());
    b.fail_writes(false);
    while !c.status().is_clean() {
        assert!(
            Instant::now() < deadline,
            "writeback never drained: {:?}",
            c.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.mem().to_vec(0, 64 * 1024), data(7));
}

#[test]
fn backing_read_errors_fail_the_request_only() {
    let m = media();
    let b = backing();
    b.mem().write_at(0, &data(3)).unwrap();
    let c = Cache::open(m, b.clone(), inline()).unwrap();
    b.fail_reads(true);
    let mut buf = vec![0; 64 * 1024];
    let e = c.read(0, 0, &mut buf).unwrap_err();
    assert_eq!(e.errno(), -libc::EIO, "{e}");
    b.fail_reads(false);
    c.read(0, 0, &mut buf).unwrap();
    assert_eq!(buf, data(3));
    // Now cached: served even while the backing fails.
    b.fail_reads(true);
    c.read(0, 0, &mut buf).unwrap();
    assert_eq!(buf, data(3));
}

/// A media write error fails the request; a failure while persisting the log latches
/// the cache (writes refused) without corrupting what was acknowledged before.
#[test]
fn media_errors_latch_and_lose_nothing_acknowledged() {
    let m = media();
    let b = backing();
    let c = Cache::open(m.clone(), b.clone(), inline()).unwrap();
    c.write(0, 0, &data(4), false).unwrap();
    c.flush().unwrap();
    m.fail_writes(true);
    assert!(c.write(0, 4 << 20, &data(5), false).is_err());
    m.fail_writes(false);
    c.write(0, 8 << 20, &data(6), false).unwrap();
    m.fail_writes(true);
    let e = c.flush().unwrap_err();
    assert_eq!(e.errno(), -libc::EIO);
    m.fail_writes(false);
    let e = c.write(0, 0, &data(9), false).unwrap_err();
    assert!(matches!(e, EngineError::Failed(_)), "{e}");
    assert!(c.status().failed.is_some());
    c.crash();
    let c = Cache::open(m, b, inline()).unwrap();
    let mut buf = vec![0; 64 * 1024];
    c.read(0, 0, &mut buf).unwrap();
    assert_eq!(buf, data(4), "the flushed write survives");
}
