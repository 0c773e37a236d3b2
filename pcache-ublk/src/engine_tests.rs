//! Tests of the engine adapter over in-memory media and backing: the request → engine
//! mapping end to end, errno mapping, status JSON and open errors.

use std::path::Path;
use std::sync::Arc;

use libublk::sys;
use pcache_engine::backing::MemBacking;
use pcache_engine::format::layout;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::testing;

use super::*;
use crate::request::{handle, DataPath, IoDesc};

const CACHE: u64 = 512 << 20;
const BACKING: u64 = 64 << 20;

fn formatted() -> Arc<MemMedia> {
    Arc::new(testing::formatted(CACHE))
}

fn cfg(data_crc: bool) -> CacheConfig {
    testing::quiet_config(data_crc)
}

fn open(
    media: Arc<MemMedia>,
    backing: Arc<MemBacking>,
    data_crc: bool,
) -> Result<EngineTarget, Error> {
    EngineTarget::open_on(
        media,
        backing,
        cfg(data_crc),
        Path::new("/dev/pmem-test"),
        Path::new("/dev/backing-test"),
    )
}

fn target() -> EngineTarget {
    open(formatted(), Arc::new(MemBacking::new(BACKING)), false).unwrap()
}

fn desc(op: u32, flags: u32, start_sector: u64, nr_sectors: u32) -> IoDesc {
    IoDesc {
        op_flags: op | flags,
        nr_sectors,
        start_sector,
    }
}

fn io(t: &EngineTarget, q: u16, d: IoDesc, buf: &mut [u8]) -> i32 {
    handle(t, q, &d, DataPath::Buffer(buf))
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn the_exported_size_is_the_backing_size() {
    let t = target();
    assert_eq!(t.size(), BACKING);
    t.close().unwrap();
}

#[test]
fn requests_round_trip_through_the_engine() {
    let t = target();
    let data = pattern(7, 64 << 10);
    let mut buf = data.clone();
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 2048, 128), &mut buf),
        64 << 10
    );
    let mut fua = pattern(9, 4096);
    assert_eq!(
        io(
            &t,
            1,
            desc(sys::UBLK_IO_OP_WRITE, sys::UBLK_IO_F_FUA, 8, 8),
            &mut fua
        ),
        4096
    );
    let mut none: [u8; 0] = [];
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_FLUSH, 0, 0, 0), &mut none),
        0
    );

    let mut back = vec![0_u8; 64 << 10];
    assert_eq!(
        io(&t, 1, desc(sys::UBLK_IO_OP_READ, 0, 2048, 128), &mut back),
        64 << 10
    );
    assert_eq!(back, data);
    let mut back = vec![0_u8; 4096];
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, 8, 8), &mut back),
        4096
    );
    assert_eq!(back, pattern(9, 4096));

    // Write-zeroes and discard make the range read as zeros; the rest is untouched.
    assert_eq!(
        io(
            &t,
            0,
            desc(sys::UBLK_IO_OP_WRITE_ZEROES, 0, 2048, 8),
            &mut none
        ),
        0
    );
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_DISCARD, 0, 2056, 8), &mut none),
        0
    );
    let mut back = vec![0xff_u8; 64 << 10];
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, 2048, 128), &mut back),
        64 << 10
    );
    assert!(back[..8192].iter().all(|b| *b == 0));
    assert_eq!(&back[8192..], &data[8192..]);
    t.close().unwrap();
}

#[test]
fn unwritten_blocks_read_from_the_backing_device() {
    let backing = Arc::new(MemBacking::new(BACKING));
    backing.write_at(1 << 20, &pattern(3, 8192)).unwrap();
    let t = open(formatted(), backing, false).unwrap();
    let mut buf = vec![0_u8; 8192];
    assert_eq!(
        io(
            &t,
            0,
            desc(sys::UBLK_IO_OP_READ, 0, (1 << 20) / 512, 16),
            &mut buf
        ),
        8192
    );
    assert_eq!(buf, pattern(3, 8192));
    t.close().unwrap();
}

#[test]
fn data_survives_close_and_reopen() {
    let media = formatted();
    let backing = Arc::new(MemBacking::new(BACKING));
    let t = open(media.clone(), backing.clone(), false).unwrap();
    let mut buf = pattern(5, 4096);
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 80, 8), &mut buf),
        4096
    );
    t.close().unwrap();
    drop(t);
    let t = open(media, backing, false).unwrap();
    let mut back = vec![0_u8; 4096];
    assert_eq!(
        io(&t, 1, desc(sys::UBLK_IO_OP_READ, 0, 80, 8), &mut back),
        4096
    );
    assert_eq!(back, pattern(5, 4096));
    t.close().unwrap();
}

#[test]
fn engine_errors_become_their_errno() {
    let t = target();
    // Unaligned requests cannot come from ublk (it counts sectors), but the adapter must
    // still map the engine's refusal, not panic.
    let mut buf = vec![0_u8; 100];
    assert_eq!(t.read(0, 0, &mut buf), Err(-libc::EINVAL));
    assert_eq!(t.write(0, 3, &[0; 512], false), Err(-libc::EINVAL));
    // Past the end of the device (decode catches it first, with EIO).
    let mut buf = vec![0_u8; 512];
    let end = BACKING / 512;
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, end, 1), &mut buf),
        -libc::EIO
    );
    // After close, every request fails with the engine's "closed" errno.
    t.close().unwrap();
    let closed = pcache_engine::EngineError::Closed.errno();
    assert!(closed < 0);
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, 0, 1), &mut buf),
        closed
    );
    assert!(io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1), &mut buf) < 0);
    // close is idempotent.
    t.close().unwrap();
}

#[test]
fn mode_cutoff_and_flush_through_the_target() {
    let t = target();
    let mut buf = pattern(2, 1 << 20);
    io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 2048), &mut buf);
    assert_eq!(t.status()["dirty_bytes"], 1 << 20);
    t.set_cache_mode(pcache_engine::CacheMode::Writethrough)
        .unwrap();
    assert_eq!(t.status()["cache_mode"], "writethrough");
    assert_eq!(t.status()["draining"], true);
    t.set_seq_cutoff(Some(1 << 20), None).unwrap();
    assert_eq!(t.status()["seq_cutoff"]["read"], 1 << 20);
    assert_eq!(t.status()["seq_cutoff"]["write"], 0);
    assert_eq!(t.status()["writeback_percent"], 0);
    t.set_writeback_percent(20).unwrap();
    assert_eq!(t.status()["writeback_percent"], 20);
    assert!(t.set_writeback_percent(81).is_err());
    assert_eq!(t.status()["writeback_percent"], 20);
    t.start_flush().unwrap();
    let start = std::time::Instant::now();
    while t.status()["flushing"] == true {
        assert!(start.elapsed().as_secs() < 30, "the flush never ended");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let v = t.status();
    assert_eq!(v["dirty_bytes"], 0, "{v}");
    assert_eq!(v["draining"], false);
    t.close().unwrap();
}

#[test]
fn status_is_json_with_the_engine_fields() {
    let t = target();
    let mut buf = pattern(1, 4096);
    io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 8), &mut buf);
    let v = t.status();
    for key in [
        "sb_flags",
        "seg_num",
        "n_segs",
        "segs_used",
        "gc_percent",
        "cache_info_flags",
        "key_head",
        "dirty_tail",
        "key_tail",
        "hits",
        "misses",
        "dirty_bytes",
        "written_back",
        "gc_runs",
        "errors",
        "dmsetup",
        "schema",
        "cache_mode",
        "draining",
        "seq_cutoff",
        "writeback_percent",
        "reads",
        "read_hits",
        "read_misses",
        "writes",
        "bypassed_reads",
        "bypassed_writes",
        "space_waits",
        "direct_writes",
        "direct_aborts",
        "clean_bytes",
        "cached_bytes",
        "failed",
        "flushing",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    assert_eq!(v["cache"], "/dev/pmem-test");
    assert_eq!(v["backing"], "/dev/backing-test");
    assert_eq!(v["size"], BACKING);
    assert!(v["key_head"].as_str().unwrap().contains(':'));
    assert!(v["dirty_bytes"].as_u64().unwrap() >= 4096, "{v}");
    t.close().unwrap();
}

#[test]
fn gc_percent_is_set_and_range_checked() {
    let t = target();
    t.set_gc_percent(50).unwrap();
    assert_eq!(t.status()["gc_percent"], 50);
    assert!(t.set_gc_percent(95).is_err());
    assert_eq!(t.status()["gc_percent"], 50);
    t.close().unwrap();
}

#[test]
fn an_unformatted_cache_is_refused_with_a_hint() {
    let media = Arc::new(MemMedia::new(CACHE));
    let err = open(media, Arc::new(MemBacking::new(BACKING)), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unusable { .. }), "{msg}");
    assert!(msg.contains("pcache-mkfs"), "{msg}");
}

#[test]
fn a_data_crc_mismatch_is_refused_with_a_hint() {
    let media = formatted();
    let backing = Arc::new(MemBacking::new(BACKING));
    // The first open formats with data_crc off.
    open(media.clone(), backing.clone(), false)
        .unwrap()
        .close()
        .unwrap();
    let err = open(media, backing, true).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("data_crc"), "{msg}");
    assert!(msg.contains("drop --data-crc"), "{msg}");
}

#[test]
fn queues_are_served_concurrently() {
    let t = Arc::new(target());
    let threads: Vec<_> = (0..4_u16)
        .map(|q| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for i in 0..16_u64 {
                    let sector = (u64::from(q) * 64 + i) * 8;
                    let mut buf = pattern(q as u8 + i as u8, 4096);
                    assert_eq!(
                        io(&t, q, desc(sys::UBLK_IO_OP_WRITE, 0, sector, 8), &mut buf),
                        4096
                    );
                    let mut back = vec![0_u8; 4096];
                    assert_eq!(
                        io(&t, q, desc(sys::UBLK_IO_OP_READ, 0, sector, 8), &mut back),
                        4096
                    );
                    assert_eq!(back, pattern(q as u8 + i as u8, 4096));
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    t.close().unwrap();
}

#[test]
fn a_backing_device_smaller_than_the_cached_keys_is_refused() {
    let media = formatted();
    let t = open(media.clone(), Arc::new(MemBacking::new(BACKING)), false).unwrap();
    let mut buf = pattern(2, 4096);
    // A dirty block near the end of the 64 MiB backing device.
    let sector = (BACKING - 8192) / 512;
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, sector, 8), &mut buf),
        4096
    );
    t.close().unwrap();
    drop(t);
    // The same cache in front of a 16 MiB device: its keys reach past the end.
    let res = std::panic::catch_unwind(|| {
        open(media, Arc::new(MemBacking::new(16 << 20)), false).map(|t| t.close())
    });
    match res {
        Ok(Err(e)) => assert!(matches!(e, Error::Open { .. }), "{e}"),
        Ok(Ok(_)) => panic!("a cache with keys past the end of the backing device was opened"),
        Err(_) => panic!("the engine panicked on keys past the end of the backing device"),
    }
}

/// A fake `/dev/ublkcN` holding one request's payload at `pos`, served in short chunks;
/// counts the bytes read and can fail every read.
struct FakeCdev {
    pos: u64,
    data: Vec<u8>,
    chunk: usize,
    fail: Option<i32>,
    read: std::cell::Cell<usize>,
}

impl crate::request::UserCopyIo for FakeCdev {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        if let Some(e) = self.fail {
            return Err(std::io::Error::from_raw_os_error(e));
        }
        let start = usize::try_from(pos - self.pos).unwrap();
        let n = buf.len().min(self.chunk).min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.read.set(self.read.get() + n);
        Ok(n)
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    }
}

/// User-copy writes `pread` the payload straight into the cache (the staging buffer is
/// left alone), across a 4 MiB boundary, with and without data_crc.
#[test]
fn user_copy_writes_go_straight_into_the_cache() {
    for data_crc in [false, true] {
        let media = formatted();
        let backing = Arc::new(MemBacking::new(BACKING));
        let t = open(media.clone(), backing.clone(), data_crc).unwrap();
        let pos = crate::request::user_copy_pos(1, 3);
        let len = 1 << 20;
        let cdev = FakeCdev {
            pos,
            data: pattern(3, len),
            chunk: 100_000,
            fail: None,
            read: std::cell::Cell::new(0),
        };
        let mut scratch = vec![0xa5_u8; 2 << 20];
        // 512 KiB before the 4 MiB boundary, FUA.
        let start = ((4_u64 << 20) - (512 << 10)) / 512;
        let d = desc(sys::UBLK_IO_OP_WRITE, sys::UBLK_IO_F_FUA, start, 2048);
        let dp = DataPath::UserCopy {
            dev: &cdev,
            pos,
            scratch: &mut scratch,
        };
        assert_eq!(handle(&t, 1, &d, dp), 1 << 20);
        assert_eq!(cdev.read.get(), len, "every byte read once");
        assert!(scratch.iter().all(|&b| b == 0xa5), "not staged");
        let mut back = vec![0_u8; len];
        assert_eq!(
            io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, start, 2048), &mut back),
            1 << 20
        );
        assert_eq!(back, cdev.data);
        t.close().unwrap();
        // FUA: durable without a flush.
        let t = open(media, backing, data_crc).unwrap();
        back.fill(0);
        assert_eq!(
            io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, start, 2048), &mut back),
            1 << 20
        );
        assert_eq!(back, cdev.data);
        t.close().unwrap();
    }
}

/// A `pread` failure fails the request with its errno, and the old data stays.
#[test]
fn user_copy_read_errors_fail_the_write_with_their_errno() {
    let t = target();
    let mut old = pattern(5, 8192);
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 16), &mut old),
        8192
    );
    let pos = crate::request::user_copy_pos(0, 0);
    let mut cdev = FakeCdev {
        pos,
        data: vec![0xee; 8192],
        chunk: 8192,
        fail: Some(libc::EFAULT),
        read: std::cell::Cell::new(0),
    };
    let mut scratch = vec![0_u8; 16384];
    let d = desc(sys::UBLK_IO_OP_WRITE, 0, 0, 16);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&t, 0, &d, dp), -libc::EFAULT);
    // A request shorter than its descriptor (pread returns 0) is EIO.
    cdev.fail = None;
    cdev.data.truncate(4096);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&t, 0, &d, dp), -libc::EIO);
    let mut back = vec![0_u8; 8192];
    assert_eq!(
        io(&t, 0, desc(sys::UBLK_IO_OP_READ, 0, 0, 16), &mut back),
        8192
    );
    assert_eq!(back, pattern(5, 8192));
    assert!(t.cache().status().failed.is_none());
    t.close().unwrap();
}

/// A fake `/dev/ublkcN` for user-copy reads: `pwrite`s land in `data`, and are counted.
struct ReadCdev {
    pos: u64,
    data: std::cell::RefCell<Vec<u8>>,
    writes: std::cell::Cell<usize>,
}

impl crate::request::UserCopyIo for ReadCdev {
    fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<usize> {
        let start = usize::try_from(pos - self.pos).unwrap();
        self.data.borrow_mut()[start..start + buf.len()].copy_from_slice(buf);
        self.writes.set(self.writes.get() + 1);
        Ok(buf.len())
    }
}

/// User-copy reads through the engine: hits come straight from the cache media, misses
/// from the backing device, fragments are gathered; the request gets exactly the
/// device's bytes, with and without data_crc, before and after the misses are cached.
#[test]
fn user_copy_reads_hand_over_hits_misses_and_fragments() {
    use pcache_engine::backing::Backing;
    const K: usize = 1024;
    for data_crc in [false, true] {
        let backing = Arc::new(MemBacking::new(BACKING));
        let old = pattern(1, 1 << 20);
        backing.write_at(0, &old).unwrap();
        let t = open(formatted(), backing, data_crc).unwrap();
        let mut want = old.clone();
        // [0, 128 KiB) in 4 KiB writes, last first: 32 extents, none adjacent in the
        // cache to the next, so 32 fragments.
        for i in (0..32).rev() {
            let mut piece = pattern(100 + i as u8, 4 * K);
            want[i * 4 * K..(i + 1) * 4 * K].copy_from_slice(&piece);
            let d = desc(sys::UBLK_IO_OP_WRITE, 0, (i * 8) as u64, 8);
            assert_eq!(io(&t, 0, d, &mut piece), 4096);
        }
        // [256 KiB, 512 KiB) in one write: one piece.
        let mut big = pattern(7, 256 * K);
        want[256 * K..512 * K].copy_from_slice(&big);
        let d = desc(sys::UBLK_IO_OP_WRITE, 0, 512, 512);
        assert_eq!(io(&t, 1, d, &mut big), 256 * K as i32);
        for round in 0..2 {
            let pos = crate::request::user_copy_pos(1, 4);
            let cdev = ReadCdev {
                pos,
                data: std::cell::RefCell::new(vec![0; 1 << 20]),
                writes: std::cell::Cell::new(0),
            };
            let mut scratch = vec![0_u8; 2 << 20];
            let d = desc(sys::UBLK_IO_OP_READ, 0, 0, 2048);
            let dp = DataPath::UserCopy {
                dev: &cdev,
                pos,
                scratch: &mut scratch,
            };
            assert_eq!(handle(&t, 1, &d, dp), 1 << 20);
            assert!(
                *cdev.data.borrow() == want,
                "round {round}, data_crc {data_crc}"
            );
            if round == 0 {
                // The fragments as one run, the two misses and the big hit directly.
                assert_eq!(cdev.writes.get(), 4, "pwrites");
            }
        }
        t.close().unwrap();
    }
}

/// Extents written one after another (logically and in the cache) are handed over as
/// one piece: 32 sequential 4 KiB writes read back with one `pwrite`.
#[test]
fn user_copy_reads_join_extents_stored_one_after_another() {
    let t = target();
    let mut want = Vec::new();
    for i in 0..32_u8 {
        let mut piece = pattern(i, 4096);
        want.extend_from_slice(&piece);
        let d = desc(sys::UBLK_IO_OP_WRITE, 0, u64::from(i) * 8, 8);
        assert_eq!(io(&t, 0, d, &mut piece), 4096);
    }
    let pos = crate::request::user_copy_pos(0, 1);
    let cdev = ReadCdev {
        pos,
        data: std::cell::RefCell::new(vec![0; want.len()]),
        writes: std::cell::Cell::new(0),
    };
    let mut scratch = vec![0_u8; 2 * want.len()];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 0, 256);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&t, 0, &d, dp), 128 << 10);
    assert!(*cdev.data.borrow() == want);
    assert_eq!(cdev.writes.get(), 1, "one piece");
    t.close().unwrap();
}

/// A read hit on cache media that cannot be read (here: a mapped cache file truncated
/// under a data segment; on pmem, a machine check) fails with EIO in both copy modes,
/// and the daemon goes on serving the rest. In user-copy mode the kernel's `pwrite`
/// from the media fails with EFAULT, which is the media's error too.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn an_unreadable_cache_segment_fails_reads_with_eio() {
    use pcache_engine::media::FileMedia;
    const LEN: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(CACHE)
        .unwrap();
    let media = Arc::new(FileMedia::open(&path, false).unwrap());
    testing::write_superblock(&*media);
    let n = layout::seg_num_for_device(CACHE).unwrap();
    let backing = Arc::new(MemBacking::new(BACKING));
    let t = EngineTarget::open_on(
        media.clone(),
        backing,
        cfg(false),
        &path,
        Path::new("/dev/backing-test"),
    )
    .unwrap();
    // One write per queue: two data heads, two segments.
    let data = [pattern(1, LEN), pattern(2, LEN)];
    let sectors = (LEN / 512) as u32;
    let start = |q: usize| q as u64 * (8 << 20) / 512;
    for (q, d) in data.iter().enumerate() {
        let mut buf = d.clone();
        let d = desc(sys::UBLK_IO_OP_WRITE, 0, start(q), sectors);
        assert_eq!(io(&t, q as u16, d, &mut buf), LEN as i32);
    }
    assert_eq!(t.flush(), Ok(()));
    let seg = |want: &[u8]| {
        let mut head = vec![0; 4096];
        (0..n)
            .find(|&p| {
                media.read(layout::data_area_off(p), &mut head).unwrap();
                head[..] == want[..4096]
            })
            .unwrap()
    };
    let segs = [seg(&data[0]), seg(&data[1])];
    // Cut the file at the later segment; the log (segment 0) and the other stay.
    let lost = usize::from(segs[1] > segs[0]);
    let kept = 1 - lost;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(layout::segment_base(segs[lost]))
        .unwrap();
    let out_path = dir.path().join("request");
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&out_path)
        .unwrap();
    let pos = crate::request::user_copy_pos(0, 0);
    for (q, want) in [(lost, None), (kept, Some(&data[kept]))] {
        let d = desc(sys::UBLK_IO_OP_READ, 0, start(q), sectors);
        let mut buf = vec![0; LEN];
        let res = io(&t, q as u16, d, &mut buf);
        let mut scratch = vec![0_u8; 2 * LEN];
        let dp = DataPath::UserCopy {
            dev: &out,
            pos,
            scratch: &mut scratch,
        };
        let res_uc = handle(&t, q as u16, &d, dp);
        match want {
            None => {
                assert_eq!(res, -libc::EIO, "buffer mode");
                assert_eq!(res_uc, -libc::EIO, "user-copy mode");
            }
            Some(want) => {
                assert_eq!(res, LEN as i32);
                assert_eq!(&buf, want);
                assert_eq!(res_uc, LEN as i32);
                let mut got = vec![0; LEN];
                std::os::unix::fs::FileExt::read_exact_at(&out, &mut got, pos).unwrap();
                assert_eq!(&got, want);
            }
        }
    }
    assert!(t.cache().status().failed.is_none());
    t.close().unwrap();
}
