//! mkfs against an independent known answer: the appendix table of upstream-format.md
//! (literal bytes for 512 MiB) and, for other sizes, `pcache_format::fresh`, with the
//! segment count computed here from the formula.

use super::*;
use crate::testimg::SparseImage;
use crate::{scan, ScanOptions};

const MIB: u64 = 1 << 20;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Every non-zero byte a fresh format of `seg_num` segments writes, from the appendix.
fn expected(seg_num: u32, data_crc: bool, gc: u8) -> Vec<(u64, Vec<u8>)> {
    let mut out = vec![
        (4096, pcache_format::fresh::superblock(seg_num).to_vec()),
        (
            12288,
            pcache_format::fresh::cache_info(seg_num, data_crc, gc).to_vec(),
        ),
        (16384, hex("b0dff56e 01000000 00000000 00000000")),
        (16416, hex("b0dff56e 01000000 00000000 00000000")),
    ];
    for k in 0..seg_num {
        let s = 20_480 + u64::from(k) * 16 * MIB;
        if k + 1 < seg_num {
            let mut si = pcache_format::fresh::segment_meta(k, seg_num)[..16].to_vec();
            // Independent check of the linked record: seq 2, flags 0x3, next k + 1.
            assert_eq!(
                &si[4..],
                &[&[2, 0, 0, 0][..], &le32(3), &le32(k + 1)].concat()
            );
            if k == 0 {
                assert_eq!(si[..4], le32(0x3B66_8E31));
            }
            si.truncate(16);
            out.push((s, si));
        }
        out.push((s + 4096, hex("fe258dfc 01000000 02000000 00000000")));
        out.push((s + 8208, hex("b0dff56e 01000000 00000000 00000000")));
    }
    out
}

fn assert_layout(img: &SparseImage, seg_num: u32, data_crc: bool, gc: u8) {
    let want = expected(seg_num, data_crc, gc);
    let mut nonzero_expected = std::collections::BTreeSet::new();
    for (off, bytes) in &want {
        assert_eq!(&img.bytes(*off, bytes.len()), bytes, "bytes at {off}");
        for (i, b) in bytes.iter().enumerate() {
            if *b != 0 {
                nonzero_expected.insert(off + i as u64);
            }
        }
    }
    // Nothing else is non-zero anywhere on the device.
    for page in img.pages().collect::<Vec<_>>() {
        for off in page..page + 4096 {
            if img.byte(off) != 0 {
                assert!(nonzero_expected.contains(&off), "unexpected byte at {off}");
            }
        }
    }
}

#[test]
fn fresh_512mib_is_the_appendix() {
    let mut img = SparseImage::new(512 * MIB);
    let g = mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(
        (g.seg_num, g.capped, g.cache_info_flags),
        (31, false, 0x1182)
    );
    // The literal records of upstream-format.md D.5.
    assert_eq!(
        img.bytes(4096, 24),
        hex("42777f04 00000000 ef96c596fa5eb065 1f000000 00000000")
    );
    assert_eq!(
        img.bytes(12288, 24),
        hex("6dfecadd 01 00 0000 00000000 1f000000 82110000 00000000")
    );
    assert_eq!(img.bytes(8192, 24), vec![0; 24]);
    assert_eq!(img.bytes(16400, 16), vec![0; 16]);
    assert_eq!(img.bytes(16432, 16), vec![0; 16]);
    assert_layout(&img, 31, false, 70);
    let s = scan(&img, &ScanOptions::default()).unwrap();
    assert_eq!(
        s.status.unwrap().to_string(),
        "0 31 31 1 70 1182 0:0 0:0 0:0"
    );
    assert!(s.findings.list.is_empty(), "{:?}", s.findings.list);
}

#[test]
fn the_cache_mode_goes_into_cache_info_bits_2_to_5() {
    for mode in pcache_format::CacheMode::ALL {
        let mut img = SparseImage::new(512 * MIB);
        let opts = MkfsOptions {
            cache_mode: mode,
            ..MkfsOptions::default()
        };
        let g = mkfs(&mut img, &opts, &mut |_| {}).unwrap();
        // INIT_DONE, gc_percent 70, the mode (the kernel's values 0..=3, pcache's 4).
        assert_eq!(
            g.cache_info_flags,
            0x2 | (70 << 6) | (u32::from(mode.value()) << 2),
            "{mode}"
        );
        let s = scan(&img, &ScanOptions::default()).unwrap();
        assert!(s.findings.list.is_empty(), "{mode}: {:?}", s.findings.list);
        assert_eq!(s.status.unwrap().cache_mode(), Some(mode));
    }
}

#[test]
fn data_crc_and_gc_percent() {
    let mut img = SparseImage::new(512 * MIB);
    let opts = MkfsOptions {
        data_crc: true,
        gc_percent: 0,
        ..MkfsOptions::default()
    };
    let g = mkfs(&mut img, &opts, &mut |_| {}).unwrap();
    assert_eq!(g.cache_info_flags, 0x3);
    assert_layout(&img, 31, true, 0);
    let mut img = SparseImage::new(512 * MIB);
    let opts = MkfsOptions {
        data_crc: true,
        ..MkfsOptions::default()
    };
    mkfs(&mut img, &opts, &mut |_| {}).unwrap();
    assert_eq!(img.bytes(12288, 4), le32(0x94F6_834A));
    let opts = MkfsOptions {
        gc_percent: 91,
        ..MkfsOptions::default()
    };
    let before = img.clone();
    assert!(matches!(
        mkfs(&mut img, &opts, &mut |_| {}),
        Err(MkfsError::GcPercent(91))
    ));
    assert_eq!(img, before);
}

#[test]
fn several_sizes() {
    for (size, segs) in [
        (512 * MIB, 31),
        (512 * MIB + 16 * MIB + 20_479, 32),
        (512 * MIB + 16 * MIB + 20_480, 33),
        (1024 * MIB, 63),
        (1024 * MIB + 20_480, 64),
        (3000 * MIB + 7, 187),
    ] {
        assert_eq!((size - 20_480) / (16 * MIB), u64::from(segs), "{size}");
        let mut img = SparseImage::new(size);
        let g = mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(g.seg_num, segs, "{size}");
        assert_eq!(g.unused_tail, size - 20_480 - u64::from(segs) * 16 * MIB);
        assert_layout(&img, segs, false, 70);
    }
}

#[test]
fn limits() {
    for size in [0, 4096, 512 * MIB - 1] {
        let mut img = SparseImage::new(size);
        assert!(matches!(
            mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}),
            Err(MkfsError::TooSmall { .. })
        ));
        assert_eq!(img.pages().count(), 0, "nothing written");
    }
    // 16 TiB + 20 KiB holds exactly the maximum; more is capped.
    let g = plan((16 << 40) + 20_480, &MkfsOptions::default()).unwrap();
    assert_eq!((g.seg_num, g.capped), (1 << 20, false));
    let g = plan(64 << 40, &MkfsOptions::default()).unwrap();
    assert_eq!((g.seg_num, g.capped), (1 << 20, true));
    assert_eq!(g.unused_tail, (64 << 40) - (16 << 40) - 20_480);
}

/// Records writes and syncs.
struct Recorder {
    img: SparseImage,
    log: Vec<Option<(u64, usize)>>,
    data: Vec<Vec<u8>>,
}

impl Image for Recorder {
    fn size(&self) -> u64 {
        self.img.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.img.read_at(off, buf)
    }
}

impl ImageMut for Recorder {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.log.push(Some((off, buf.len())));
        self.data.push(buf.to_vec());
        self.img.write_at(off, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.log.push(None);
        Ok(())
    }
}

#[test]
fn crash_safe_order() {
    let mut r = Recorder {
        img: SparseImage::new(512 * MIB),
        log: Vec::new(),
        data: Vec::new(),
    };
    let mut steps = Vec::new();
    mkfs(&mut r, &MkfsOptions::default(), &mut |p| {
        if let Progress::Durable(s) = p {
            steps.push(s);
        }
    })
    .unwrap();
    assert_eq!(
        steps,
        [
            Step::InvalidateCacheInfo,
            Step::Superblock,
            Step::Segments,
            Step::Tails,
            Step::CacheInfo
        ]
    );
    let log = &r.log;
    assert_eq!(
        log[0],
        Some((8192, 12288)),
        "cache_info and tails zeroed first"
    );
    assert_eq!(log[1], None);
    assert_eq!(log[2], Some((4096, 24)), "then the superblock");
    assert_eq!(log[3], None);
    let n = log.len();
    assert_eq!(
        &log[n - 4..],
        &[Some((16384, 4096)), None, Some((12288, 24)), None]
    );
    // Every segment write lies inside a segment's metadata or its first 24 data bytes.
    for w in log[4..n - 5].iter() {
        let (off, len) = w.unwrap();
        let rel = (off - 20_480) % (16 * MIB);
        assert!(
            (rel == 0 && len == 12288) || (rel == 12288 && len == 24),
            "{off}+{len}"
        );
    }
    assert_eq!(log[n - 5], None, "segments durable before the tails");

    // A crash after any prefix of the writes leaves an image the kernel formats again:
    // no valid cache_info until the very last write.
    let mut img = SparseImage::new(512 * MIB);
    let mut data = r.data.iter();
    for (i, w) in log.iter().enumerate() {
        if let Some((off, _)) = *w {
            img.write_at(off, data.next().unwrap()).unwrap();
        }
        let s = scan(&img, &ScanOptions::check_only()).unwrap();
        let done = i + 2 >= log.len();
        assert_eq!(s.status.is_some(), done, "after write {i}");
        if !done {
            let f = &s.findings;
            assert!(
                f.find("sb_unformatted").is_some() || f.find("cache_uninitialised").is_some(),
                "after write {i}: {:?}",
                f.list
            );
        }
    }
}

#[test]
fn refuses_content_without_force() {
    let mut img = SparseImage::new(512 * MIB);
    img.write_at(1080, &[0x53, 0xEF]).unwrap();
    let before = img.clone();
    let e = mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("ext2/3/4"), "{e}");
    assert_eq!(img, before, "the device is unchanged");
    // An existing cache.
    let mut img = SparseImage::new(512 * MIB);
    mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap();
    let before = img.clone();
    let e = mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("a pcache cache (31 segments)"),
        "{e}"
    );
    assert_eq!(img, before);
    // Stray bytes.
    let mut img = SparseImage::new(512 * MIB);
    img.write_at(70_000, &[1]).unwrap();
    let e = mkfs(&mut img, &MkfsOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("first at byte 70000"), "{e}");
    // --force formats over all of it.
    let opts = MkfsOptions {
        force: true,
        data_crc: true,
        ..MkfsOptions::default()
    };
    let mut img = before;
    mkfs(&mut img, &opts, &mut |_| {}).unwrap();
    assert_layout(&img, 31, true, 70);
}

#[test]
fn files_of_several_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for size in [512 * MIB, 1024 * MIB + 12_345] {
        let path = dir.path().join(format!("img-{size}"));
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let mut dev = crate::Device::open(&path, crate::Access::ReadWrite).unwrap();
        let g = mkfs(&mut dev, &MkfsOptions::default(), &mut |_| {}).unwrap();
        drop(dev);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            size,
            "not extended"
        );
        let dev = crate::Device::open(&path, crate::Access::ReadOnly).unwrap();
        let mut img = SparseImage::new(size);
        for (off, bytes) in expected(g.seg_num, false, 70) {
            let mut buf = vec![0; bytes.len()];
            dev.read_at(off, &mut buf).unwrap();
            assert_eq!(buf, bytes, "{size}: bytes at {off}");
            img.write_at(off, &buf).unwrap();
        }
        let s = scan(&dev, &ScanOptions::default()).unwrap();
        assert!(s
            .findings
            .list
            .iter()
            .all(|f| f.code == "device_larger" || f.severity == crate::Severity::Info));
        assert!(s.status.is_some());
    }
}
