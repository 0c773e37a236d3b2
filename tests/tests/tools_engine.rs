//! The tools against the engine: a cache written by `pcache-mkfs` is opened by the engine
//! without being formatted again, and what the engine writes is clean to `pcache-fsck`,
//! with the same `dmsetup status` line from both.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::FileMedia;
use pcache_engine::{Cache, CacheConfig};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::mkfs::{self, MkfsOptions};
use pcache_tools::{scan, Access, Device, ScanOptions};
use std::path::Path;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn open(path: &Path, backing: &Arc<MemBacking>, data_crc: bool) -> Cache {
    let media = Arc::new(FileMedia::open(path, false).unwrap());
    let cfg = CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        ..CacheConfig::default()
    };
    Cache::open(media, backing.clone(), cfg).unwrap()
}

fn tools_status(path: &Path) -> String {
    let dev = Device::open(path, Access::ReadOnly).unwrap();
    let s = scan(&dev, &ScanOptions::check_only()).unwrap();
    let r = fsck::check(&dev, &FsckOptions::default()).unwrap();
    assert_eq!(r.exit_code, exit::CLEAN, "{}", fsck::text(&r, "cache"));
    s.status.expect("a status line").to_string()
}

fn segment_meta(path: &Path) -> Vec<u8> {
    let dev = Device::open(path, Access::ReadOnly).unwrap();
    let mut out = Vec::new();
    for seg in 0..31u32 {
        let mut buf = vec![0; 12_288 + 24];
        pcache_tools::Image::read_at(&dev, pcache_format::layout::segment_base(seg), &mut buf)
            .unwrap();
        out.extend(buf);
    }
    out
}

#[test]
fn engine_accepts_mkfs_and_fsck_accepts_the_engine() {
    for data_crc in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(512 * MIB)
            .unwrap();
        let mut dev = Device::open(&path, Access::ReadWrite).unwrap();
        let opts = MkfsOptions {
            data_crc,
            ..MkfsOptions::default()
        };
        mkfs::mkfs(&mut dev, &opts, &mut |_| {}).unwrap();
        drop(dev);
        let fresh_segments = segment_meta(&path);

        let backing = Arc::new(MemBacking::new(256 * MIB));
        let cache = open(&path, &backing, data_crc);
        // Not formatted again: every segment's metadata is as mkfs wrote it.
        assert_eq!(segment_meta(&path), fresh_segments, "data_crc {data_crc}");
        assert_eq!(
            cache.status().dmsetup_line(),
            if data_crc {
                "0 31 31 1 70 1183 0:0 0:0 0:0"
            } else {
                "0 31 31 1 70 1182 0:0 0:0 0:0"
            }
        );
        // Writes in several 4 MiB regions, some overwritten, flushed.
        let block = |i: u64| vec![(i * 7 + 1) as u8; 64 << 10];
        for i in 0..40u64 {
            let off = (i % 13) * (3 * MIB) + (i % 3) * 4096;
            cache.write((i % 2) as u32, off, &block(i), false).unwrap();
        }
        cache.flush().unwrap();
        cache.close().unwrap();
        drop(cache);

        let after_close = tools_status(&path);
        eprintln!("data_crc {data_crc}: after close {after_close}");
        let cache = open(&path, &backing, data_crc);
        assert_eq!(
            cache.status().dmsetup_line(),
            after_close,
            "data_crc {data_crc}: the tools and the engine's replay agree"
        );
        cache.writeback_all().unwrap();
        cache.close().unwrap();
        drop(cache);
        let clean = tools_status(&path);
        let cache = open(&path, &backing, data_crc);
        assert_eq!(cache.status().dmsetup_line(), clean);
        assert!(cache.status().is_clean());
        cache.close().unwrap();
    }
}

/// The metadata the kernel's format writes: everything up to the segments, and each
/// segment's first 12 KiB and empty kset.
fn all_meta(path: &Path) -> Vec<u8> {
    let dev = Device::open(path, Access::ReadOnly).unwrap();
    let mut head = vec![0; 20_480];
    pcache_tools::Image::read_at(&dev, 0, &mut head).unwrap();
    head.extend(segment_meta(path));
    head
}

#[test]
fn engine_format_equals_mkfs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(512 * MIB)
        .unwrap();
    let mut dev = Device::open(&path, Access::ReadWrite).unwrap();
    mkfs::mkfs(&mut dev, &MkfsOptions::default(), &mut |_| {}).unwrap();
    let want = all_meta(&path);
    // An interrupted format: the superblock and nothing behind it. The engine formats
    // the cache as the kernel's first activation does.
    let zeros = vec![0u8; 12_288];
    pcache_tools::ImageMut::write_at(&mut dev, 8192, &zeros).unwrap();
    for seg in 0..31u32 {
        let base = pcache_format::layout::segment_base(seg);
        pcache_tools::ImageMut::write_at(&mut dev, base, &zeros).unwrap();
    }
    pcache_tools::ImageMut::sync(&mut dev).unwrap();
    drop(dev);
    let backing = Arc::new(MemBacking::new(64 * MIB));
    let cache = open(&path, &backing, false);
    cache.close().unwrap();
    drop(cache);
    let got = all_meta(&path);
    let diff: Vec<usize> = (0..want.len()).filter(|&i| want[i] != got[i]).collect();
    assert!(
        diff.is_empty(),
        "{} bytes differ, first at {:?}",
        diff.len(),
        diff.first()
    );
}

#[test]
fn after_gc_the_tools_and_the_engine_still_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(512 * MIB)
        .unwrap();
    let mut dev = Device::open(&path, Access::ReadWrite).unwrap();
    let opts = MkfsOptions {
        gc_percent: 10,
        data_crc: true,
        ..MkfsOptions::default()
    };
    mkfs::mkfs(&mut dev, &opts, &mut |_| {}).unwrap();
    drop(dev);
    let backing = Arc::new(MemBacking::new(96 * MIB));
    let cache = open(&path, &backing, true);
    // Far more than the cache holds, so segments are reclaimed and reused (gens bumped,
    // key_tail moved, stale keys left behind in the log).
    let chunk = 256 << 10;
    for i in 0..3000u64 {
        let off = (i * 7919 % 384) * chunk;
        let data = vec![(i % 251) as u8; chunk as usize];
        cache.write((i % 2) as u32, off, &data, false).unwrap();
        if i % 500 == 499 {
            cache.flush().unwrap();
            cache.writeback_all().unwrap();
        }
    }
    cache.flush().unwrap();
    let before = cache.status();
    eprintln!("engine before close: {}", before.dmsetup_line());
    cache.close().unwrap();
    drop(cache);
    let tools = tools_status(&path);
    eprintln!("tools: {tools}");
    let cache = open(&path, &backing, true);
    assert_eq!(cache.status().dmsetup_line(), tools);
    cache.close().unwrap();
}
