//! `Cache::write_with` (the bytes come from a callback that fills the cache space in
//! place) against `Cache::write`: same cache content, same reads, and a failing source
//! fails the write without effect.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::MemMedia;
use pcache_engine::testing::{self, TestMedia};
use pcache_engine::{Cache, CacheConfig, EngineError, ErrorKind};
use std::io;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const DEV: u64 = 256 << 20;
const MIB: u64 = 1 << 20;

fn formatted() -> Arc<MemMedia> {
    Arc::new(testing::formatted(CACHE))
}

fn cfg(data_crc: bool) -> CacheConfig {
    CacheConfig {
        data_crc,
        background: false,
        ..CacheConfig::default()
    }
}

/// The test's writes: (offset, length, fua). Pieces cross 4 MiB regions, one write spans
/// several regions, and the total (about 40 MiB) crosses segment ends.
fn script() -> Vec<(u64, usize, bool)> {
    vec![
        (0, 4096, false),
        (4 * MIB - 8192, 64 << 10, false),
        (8 * MIB + 512, 9 << 20, true),
        (3 * MIB, 2 << 20, false),
        (20 * MIB - 4096, (12 << 20) + 8192, false),
        (100 * MIB, 512, true),
        (40 * MIB, 16 << 20, false),
        (4 * MIB - 512, 1024, true),
    ]
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 512 * 31 + i * 7 + seed * 13) % 251) as u8)
        .collect()
}

/// Applies the script to `c`, with `write` or with `write_with` (checking that the
/// source is asked for every byte once, in order); returns the model of the device.
fn run(c: &Cache, with: bool) -> Vec<u8> {
    let mut model = vec![0u8; DEV as usize];
    for (i, (off, len, fua)) in script().into_iter().enumerate() {
        let data = pattern(i, len);
        if with {
            let mut next = 0u64;
            let mut calls = 0;
            c.write_with(u32::try_from(i).unwrap(), off, len, fua, &mut |at, dst| {
                assert_eq!(at, next, "pieces in order, without gaps or overlaps");
                let at = usize::try_from(at).unwrap();
                dst.copy_from_slice(&data[at..at + dst.len()]);
                next += dst.len() as u64;
                calls += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(next, len as u64, "the whole request was asked for");
            let regions = (off + len as u64 - 1) / (4 * MIB) - off / (4 * MIB) + 1;
            assert!(calls >= regions, "at least one piece per 4 MiB region");
        } else {
            c.write(u32::try_from(i).unwrap(), off, &data, fua).unwrap();
        }
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    model
}

fn check_reads(c: &Cache, model: &[u8]) {
    let mut buf = vec![0u8; 4 << 20];
    for chunk in 0..(64 * MIB) / (4 * MIB) {
        let off = chunk * 4 * MIB;
        c.read(0, off, &mut buf).unwrap();
        assert!(
            buf[..] == model[off as usize..off as usize + buf.len()],
            "read at {off:#x}"
        );
    }
    // Reads that cross region boundaries too.
    let mut odd = vec![0u8; (6 << 20) + 1024];
    for off in [4 * MIB - 512, 22 * MIB + 4096] {
        c.read(1, off, &mut odd).unwrap();
        assert!(odd[..] == model[off as usize..off as usize + odd.len()]);
    }
}

fn same_image(a: &MemMedia, b: &MemMedia) {
    let step = 16 << 20;
    let mut off = 0;
    while off < CACHE {
        assert!(
            a.to_vec(off, step).unwrap() == b.to_vec(off, step).unwrap(),
            "cache images differ in the 16 MiB at {off:#x}"
        );
        off += step as u64;
    }
}

#[test]
fn write_with_produces_the_same_cache_and_reads_as_write() {
    for data_crc in [false, true] {
        let ma = formatted();
        let mb = formatted();
        let backing_a = Arc::new(MemBacking::new(DEV));
        let backing_b = Arc::new(MemBacking::new(DEV));
        let a = Cache::open(ma.clone(), backing_a.clone(), cfg(data_crc)).unwrap();
        let b = Cache::open(mb.clone(), backing_b.clone(), cfg(data_crc)).unwrap();
        let model = run(&a, false);
        assert_eq!(run(&b, true), model);
        check_reads(&a, &model);
        check_reads(&b, &model);
        assert_eq!(a.status().written, b.status().written);
        assert_eq!(a.status().dirty_bytes, b.status().dirty_bytes);
        a.close().unwrap();
        b.close().unwrap();
        same_image(&ma, &mb);

        // Replayed (data CRCs checked on every hit with data_crc), the content is the same.
        let b = Cache::open(mb.clone(), backing_b, cfg(data_crc)).unwrap();
        check_reads(&b, &model);
        b.close().unwrap();
    }
}

/// Through the provided `fill` (a temporary buffer, then `write`), too: `TestMedia`
/// implements only the required methods of `CacheMedia`.
#[test]
fn write_with_on_media_without_a_mapping() {
    for data_crc in [false, true] {
        let media = Arc::new(TestMedia::new(testing::formatted(CACHE)));
        let backing = Arc::new(MemBacking::new(DEV));
        let c = Cache::open(media.clone(), backing.clone(), cfg(data_crc)).unwrap();
        let model = run(&c, true);
        check_reads(&c, &model);
        c.close().unwrap();
        let c = Cache::open(media, backing, cfg(data_crc)).unwrap();
        check_reads(&c, &model);
        c.close().unwrap();
    }
}

fn assert_source_error(r: Result<(), EngineError>) {
    match r {
        Err(e @ EngineError::WriteSource { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Io);
            assert_eq!(e.errno(), -libc::EIO);
            let src = std::error::Error::source(&e).expect("the cause is kept");
            assert!(src.to_string().contains("injected"), "{src}");
        }
        other => panic!("expected WriteSource, got {other:?}"),
    }
}

#[test]
fn a_failing_source_fails_the_write_without_effect() {
    for data_crc in [false, true] {
        let media = formatted();
        let backing = Arc::new(MemBacking::new(DEV));
        let c = Cache::open(media.clone(), backing.clone(), cfg(data_crc)).unwrap();
        // 12 MiB on queue 0: its data head is then less than 4 MiB before the end of
        // its segment, so a 4 MiB region written next is cut there into two pieces.
        let old = pattern(99, 12 << 20);
        c.write(0, 0, &old, false).unwrap();
        c.flush().unwrap();
        let before = c.status();

        // Fails on the first piece, after scribbling over part of the space it was given.
        let r = c.write_with(0, 1 << 20, 1 << 20, true, &mut |_, dst| {
            dst[..100].fill(0xee);
            Err(io::Error::other("injected"))
        });
        assert_source_error(r);
        // Fails on a later piece of the same 4 MiB region (the region is one step).
        let mut calls = 0;
        let r = c.write_with(0, 4 << 20, 4 << 20, false, &mut |_, dst| {
            calls += 1;
            if calls > 1 {
                return Err(io::Error::other("injected"));
            }
            dst.fill(0xdd);
            Ok(())
        });
        assert_eq!(calls, 2, "the region was cut at the segment end");
        assert_source_error(r);

        let after = c.status();
        assert!(
            after.failed.is_none(),
            "a source error does not fail the cache"
        );
        assert_eq!(after.written, before.written, "nothing was written");
        assert_eq!(after.dirty_bytes, before.dirty_bytes);
        let mut buf = vec![0u8; 12 << 20];
        c.read(0, 0, &mut buf).unwrap();
        assert!(buf == old, "the old data is still there");

        // The cache keeps working, and the failed writes left nothing behind in the log.
        let new = pattern(7, 8192);
        c.write(0, 1 << 20, &new, true).unwrap();
        c.close().unwrap();
        let c = Cache::open(media, backing, cfg(data_crc)).unwrap();
        c.read(0, 0, &mut buf).unwrap();
        let mut want = old.clone();
        want[1 << 20..(1 << 20) + 8192].copy_from_slice(&new);
        assert!(buf == want, "after replay");
        c.close().unwrap();
    }
}

/// A multi-region write whose source fails in the second region: the first region is
/// written (as with any failed write, the range's content is then unspecified), the
/// failing region keeps its old data, and the cache stays usable.
#[test]
fn a_source_failing_in_a_later_region_leaves_that_region_alone() {
    let media = formatted();
    let backing = Arc::new(MemBacking::new(DEV));
    let c = Cache::open(media, backing, cfg(true)).unwrap();
    let old = pattern(1, 8 << 20);
    c.write(0, 0, &old, false).unwrap();
    let r = c.write_with(0, 0, 8 << 20, false, &mut |at, dst| {
        if at >= 4 * MIB {
            return Err(io::Error::other("injected"));
        }
        dst.fill(0x11);
        Ok(())
    });
    assert_source_error(r);
    let mut buf = vec![0u8; 4 << 20];
    c.read(0, 4 * MIB, &mut buf).unwrap();
    assert!(buf[..] == old[4 << 20..], "the failing region is untouched");
    c.read(0, 0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0x11),
        "the first region was written"
    );
    assert!(c.status().failed.is_none());
    c.close().unwrap();
}

#[test]
fn write_with_checks_the_request_like_write() {
    let c = Cache::open(formatted(), Arc::new(MemBacking::new(DEV)), cfg(false)).unwrap();
    let mut never = |_: u64, _: &mut [u8]| -> io::Result<()> { panic!("not called") };
    assert!(matches!(
        c.write_with(0, 100, 512, false, &mut never),
        Err(EngineError::BadRequest { .. })
    ));
    assert!(matches!(
        c.write_with(0, DEV - 512, 1024, false, &mut never),
        Err(EngineError::BadRequest { .. })
    ));
    c.write_with(0, 0, 0, false, &mut never).unwrap();
    c.close().unwrap();
}
