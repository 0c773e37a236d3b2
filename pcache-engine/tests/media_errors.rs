//! Media errors on read: a read hit on dirty cache data that cannot be read (a machine
//! check on pmem, a SIGBUS on a mapped file) fails that request with EIO, one on clean data
//! is served from the backing device, and the cache and the process go on
//! (`docs/design.md`, "Media errors on read").
//!
//! A truncated cache file stands in for poisoned pmem: a load from a mapped page past
//! the end of its file raises SIGBUS (BUS_ADRERR), as a load of a poisoned line raises
//! SIGBUS (BUS_MCEERR_AR), and both are caught the same way. Only x86-64 Linux catches
//! them; elsewhere this test would kill the test process, so it is not built.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use pcache_engine::backing::MemBacking;
use pcache_engine::format::layout;
use pcache_engine::media::{CacheMedia, FileMedia, MediaError};
use pcache_engine::testing::write_superblock;
use pcache_engine::{Cache, CacheConfig, EngineError, ErrorKind};
use std::path::Path;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const LEN: usize = 64 << 10;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// A sparse cache file holding only a superblock (the first open formats it).
fn cache_file(path: &Path) -> Arc<FileMedia> {
    std::fs::File::create(path).unwrap().set_len(CACHE).unwrap();
    let m = FileMedia::open(path, false).unwrap();
    write_superblock(&m);
    Arc::new(m)
}

/// The physical segment whose data area starts with `data`.
fn segment_holding(m: &FileMedia, data: &[u8]) -> u32 {
    let n = layout::seg_num_for_device(CACHE).unwrap();
    let mut head = vec![0; 4096];
    (0..n)
        .find(|&phys| {
            m.read(layout::data_area_off(phys), &mut head).unwrap();
            head[..] == data[..4096]
        })
        .expect("the written data is at the start of a segment's data area")
}

/// Data in a segment that became unreadable fails its read hits with EIO; data in other
/// segments, misses and the cache itself carry on.
#[test]
fn an_unreadable_data_segment_fails_its_reads_with_eio() {
    for data_crc in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.img");
        let media = cache_file(&path);
        let backing = Arc::new(MemBacking::new(64 << 20));
        // Two queues, so the two writes go to two segments (one data head per queue).
        let cfg = CacheConfig {
            data_crc,
            queues: 2,
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media.clone(), backing, cfg).unwrap();
        let (a, b) = (pattern(1, LEN), pattern(2, LEN));
        let (a_off, b_off) = (0u64, 8 << 20);
        c.write(0, a_off, &a, false).unwrap();
        c.write(1, b_off, &b, false).unwrap();
        c.flush().unwrap();
        let (seg_a, seg_b) = (segment_holding(&media, &a), segment_holding(&media, &b));
        assert_ne!(seg_a, seg_b);
        // Cut the file at the later of the two segments: everything from it on is gone,
        // the log (segment 0, where a fresh cache starts it) and the other segment stay.
        let ((lost_q, lost_off, _), (kept_q, kept_off, kept)) = if seg_a < seg_b {
            ((1, b_off, &b), (0, a_off, &a))
        } else {
            ((0, a_off, &a), (1, b_off, &b))
        };
        let cut = layout::segment_base(seg_a.max(seg_b));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let mut buf = vec![0; LEN];
        for len in [LEN, 512] {
            let e = c.read(lost_q, lost_off, &mut buf[..len]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Io, "{e}");
            assert_eq!(e.errno(), -libc::EIO, "{e}");
            assert!(
                matches!(
                    e,
                    EngineError::Media {
                        source: MediaError::Poisoned { .. },
                        ..
                    }
                ),
                "{e:?}"
            );
            let msg = std::error::Error::source(&e).unwrap().to_string();
            assert!(msg.contains("machine check or SIGBUS"), "{msg}");
        }
        // The other segment still reads, from either queue.
        for q in 0..2 {
            buf.fill(0);
            c.read(q, kept_off, &mut buf).unwrap();
            assert_eq!(&buf, kept, "data_crc {data_crc}, queue {q}");
        }
        // A miss is served by the backing device (and cached by the queue whose data
        // head is still inside the file: a store past its end is not caught).
        c.read(kept_q, 32 << 20, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // The failed read changed nothing: it fails again the same way.
        let e = c.read(lost_q, lost_off, &mut buf).unwrap_err();
        assert_eq!(e.errno(), -libc::EIO, "{e}");
        // Closing only writes the log and the metadata before the cut.
        c.close().unwrap();
    }
}

/// A cache on a file whose data segment holding CLEAN data (a read-miss fill of `clean`
/// at 16 MiB, by queue 0) and dirty data (at 24 MiB, queue 0 again) was cut
/// off the file; dirty data of queue 1 (`dirty` at 0) is in an earlier segment, which
/// stays, and queue 1's data head with it.
struct LostSegment {
    _dir: tempfile::TempDir,
    cache: Cache,
    clean: Vec<u8>,
    dirty: Vec<u8>,
}

fn lost_segment(data_crc: bool) -> LostSegment {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.img");
    let media = cache_file(&path);
    let backing = Arc::new(MemBacking::new(64 << 20));
    let clean = pattern(3, LEN);
    pcache_engine::backing::Backing::write_at(&*backing, 16 << 20, &clean).unwrap();
    let cfg = CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        ..CacheConfig::default()
    };
    let cache = Cache::open(media.clone(), backing, cfg).unwrap();
    // Queue 1 takes a data segment first, then queue 0 the next one.
    let dirty = pattern(4, LEN);
    cache.write(1, 0, &dirty, false).unwrap();
    let mut buf = vec![0; LEN];
    cache.read(0, 16 << 20, &mut buf).unwrap();
    assert_eq!(buf, clean);
    cache.write(0, 24 << 20, &pattern(5, LEN), false).unwrap();
    cache.flush().unwrap();
    let (seg_dirty, seg_clean) = (
        segment_holding(&media, &dirty),
        segment_holding(&media, &clean),
    );
    assert!(seg_dirty < seg_clean, "segments {seg_dirty} {seg_clean}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(layout::segment_base(seg_clean))
        .unwrap();
    LostSegment {
        _dir: dir,
        cache,
        clean,
        dirty,
    }
}

/// CLEAN data (a read-miss fill) in a segment that became unreadable is served from the
/// backing device, which holds the same bytes: the read succeeds, the media error is
/// counted, and the bytes are cached again in a readable segment. Dirty data there fails.
#[test]
fn unreadable_clean_data_is_served_from_the_backing() {
    for data_crc in [false, true] {
        let LostSegment {
            cache: c,
            clean,
            dirty,
            ..
        } = lost_segment(data_crc);
        let errors = c.status().errors;
        // Queue 1, whose data head is inside the file, re-caches what it reads.
        let mut buf = vec![0; LEN];
        c.read(1, 16 << 20, &mut buf).unwrap();
        assert_eq!(
            buf, clean,
            "data_crc {data_crc}: served from the backing device"
        );
        assert_eq!(c.status().errors, errors + 1);
        let hits = c.status().hits;
        buf.fill(0);
        c.read(1, 16 << 20, &mut buf).unwrap();
        assert_eq!(buf, clean);
        assert_eq!(c.status().hits, hits + LEN as u64, "cached again, readable");
        assert_eq!(c.status().errors, errors + 1);
        c.read(1, 0, &mut buf).unwrap();
        assert_eq!(buf, dirty, "the other segment's dirty data");
        let e = c.read(1, 24 << 20, &mut buf).unwrap_err();
        assert_eq!(e.errno(), -libc::EIO, "lost dirty data: {e}");
        c.close().unwrap();
    }
}

/// The same through `read_with`: the sink copies the lent bytes with `copy_checked` and
/// fails with EFAULT when it cannot; for clean data the engine hands the piece over
/// again from the backing device, for dirty data the read fails.
#[test]
fn a_sink_that_cannot_read_clean_bytes_gets_them_from_the_backing() {
    let LostSegment {
        cache: c, clean, ..
    } = lost_segment(false);
    let read_with = |off: u64, out: &mut Vec<u8>| {
        c.read_with(1, off, LEN, &mut |at, bytes| {
            let at = usize::try_from(at).unwrap();
            pcache_engine::media::copy_checked(&mut out[at..at + bytes.len()], bytes)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EFAULT))
        })
    };
    let errors = c.status().errors;
    let mut out = vec![0; LEN];
    read_with(16 << 20, &mut out).unwrap();
    assert_eq!(out, clean, "clean: from the backing device");
    assert_eq!(c.status().errors, errors + 1);
    let e = read_with(24 << 20, &mut out).unwrap_err();
    assert_eq!(e.errno(), -libc::EIO, "dirty: {e}");
    c.close().unwrap();
}

/// Writeback hands the backing device the cache's mapped bytes without a copy of its own:
/// dirty data in a segment that became unreadable fails the backing write with EFAULT
/// (the kernel's copy, or a checked copy in a backing of memory), and writeback names the
/// media error (EIO), not the backing device. The readable dirty data of the same round
/// was written back; the process goes on.
#[test]
fn writeback_of_unreadable_dirty_data_is_a_media_error() {
    for file_backing in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.img");
        let media = cache_file(&path);
        let backing: Arc<dyn pcache_engine::backing::Backing> = if file_backing {
            let bpath = dir.path().join("backing.img");
            std::fs::File::create(&bpath)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            Arc::new(pcache_engine::backing::FileBacking::open(&bpath, false).unwrap())
        } else {
            Arc::new(MemBacking::new(64 << 20))
        };
        let cfg = CacheConfig {
            queues: 2,
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
        let (a, b) = (pattern(6, LEN), pattern(7, LEN));
        c.write(0, 0, &a, true).unwrap();
        c.write(1, 8 << 20, &b, true).unwrap();
        let (seg_a, seg_b) = (segment_holding(&media, &a), segment_holding(&media, &b));
        assert!(seg_a < seg_b, "segments {seg_a} {seg_b}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(layout::segment_base(seg_b))
            .unwrap();
        let e = c.writeback_all().unwrap_err();
        assert_eq!(e.errno(), -libc::EIO, "file backing {file_backing}: {e}");
        assert!(
            matches!(
                e,
                EngineError::Media {
                    source: MediaError::Poisoned { .. },
                    ..
                }
            ),
            "file backing {file_backing}: {e:?}"
        );
        let mut got = vec![0; LEN];
        backing.read_at(0, &mut got).unwrap();
        assert_eq!(got, a, "the readable dirty data was written back");
        drop(c);
    }
}
