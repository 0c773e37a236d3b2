//! Corruption suite: damage every metadata byte of small images and check that the scan
//! (which fsck reports) notices, or that the damage provably changes nothing the kernel
//! reads; and images that are wrong in whole: truncated, wrong magic, big-endian,
//! seg_num beyond the device, kset cycles. Nothing may panic.

use pcache_format::layout::{self, CachePos};
use pcache_format::record::SB_F_BIGENDIAN;
use pcache_format::{pcache_crc, Superblock};
use pcache_tools::finding::Severity;
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::testimg::{samples, KeySpec, SparseImage, TestImage};
use pcache_tools::{scan, ImageMut, Scan, ScanOptions};
use std::collections::BTreeSet;

fn opts() -> ScanOptions {
    ScanOptions {
        keys: true,
        ..ScanOptions::default()
    }
}

fn model(s: &Scan) -> String {
    serde_json::to_string(s).unwrap()
}

fn problems(s: &Scan) -> BTreeSet<(String, String)> {
    s.findings
        .list
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| (f.code.to_owned(), f.what.clone()))
        .collect()
}

/// Flips one bit of every byte of every metadata region of `img` (a different bit for
/// neighbouring bytes) and checks each result. Returns (reported, harmless) counts.
fn flip_everything(name: &str, img: &mut TestImage) -> (u64, u64) {
    let base = scan(&img.media, &opts()).unwrap();
    assert!(
        problems(&base).is_empty(),
        "{name}: {:?}",
        base.findings.list
    );
    let base_model = model(&base);
    let (mut reported, mut harmless) = (0, 0);
    for region in img.metadata() {
        for off in region.offset..region.offset + region.len {
            let bit = (off % 8) as u8;
            img.media.flip(off, bit);
            let s = scan(&img.media, &opts()).unwrap();
            let new: Vec<_> = problems(&s).difference(&problems(&base)).cloned().collect();
            if !new.is_empty() {
                reported += 1;
                // fsck agrees: the exit code says something is wrong, or only warns.
                let r = fsck::check(&img.media, &FsckOptions::default()).unwrap();
                assert!(
                    r.exit_code == exit::UNCORRECTED || r.findings.warnings() > 0,
                    "{name}: {} byte {off} bit {bit}: {:?}",
                    region.what,
                    r.findings.list
                );
            } else {
                assert_eq!(
                    model(&s),
                    base_model,
                    "{name}: {} byte {off} bit {bit} changed the image's meaning silently",
                    region.what
                );
                harmless += 1;
            }
            img.media.flip(off, bit);
        }
    }
    (reported, harmless)
}

#[test]
fn every_metadata_byte_of_every_sample() {
    for (name, mut img) in samples::all() {
        let (reported, harmless) = flip_everything(name, &mut img);
        eprintln!("{name}: {reported} flips reported, {harmless} harmless");
        // The records the kernel reads are all CRC-protected: most flips are reported.
        // Harmless ones are the unread empty ksets of free segments.
        assert!(
            reported > 1500,
            "{name}: {reported} reported, {harmless} harmless"
        );
        assert!(harmless < 31 * 24, "{name}: {harmless} harmless");
    }
}

#[test]
fn damaged_kset_in_the_middle_cuts_the_log() {
    let mut img = samples::data_keys();
    // The first kset, at 0:0: a bit of its second key's length.
    img.media.flip(layout::data_area_off(0) + 24 + 40 + 8, 4);
    let s = scan(&img.media, &opts()).unwrap();
    let f = s.findings.find("kset_damaged").expect("kset_damaged");
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.message.contains("bit 4 of its byte 72")
            && f.message.contains("1 ksets, 2 keys and 8192 dirty bytes"),
        "{}",
        f.message
    );
    // Two bits of it: no single flip explains it, but the next kset is there, with
    // current keys: the log was cut.
    img.media.flip(layout::data_area_off(0) + 24 + 40 + 16, 1);
    let s = scan(&img.media, &opts()).unwrap();
    let f = s.findings.find("log_cut").expect("log_cut");
    assert_eq!(f.severity, Severity::Error);
    // The magic of the second and last kset (dirty_tail): one flipped bit, so it was
    // written whole and damaged since, not torn: an error, not a torn tail.
    let mut img = samples::data_keys();
    let second = layout::data_area_off(0) + u64::from(layout::kset_size(3)) + 8;
    img.media.flip(second, 0);
    let s = scan(&img.media, &opts()).unwrap();
    let f = s.findings.find("kset_damaged").expect("kset_damaged");
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("bit 0 of its byte 8"), "{}", f.message);
    // Two flipped bits of a kset with nothing behind it: no evidence, a torn tail.
    let mut img = samples::data_keys();
    img.media.flip(second, 0);
    img.media.flip(second + 16, 3);
    let s = scan(&img.media, &opts()).unwrap();
    assert!(
        s.findings.find("log_end_damaged").is_some(),
        "{:?}",
        s.findings.list
    );
}

fn with_sb(img: &mut SparseImage, f: impl FnOnce(&mut [u8; 24])) {
    let mut sb = [0u8; 24];
    sb.copy_from_slice(&img.bytes(4096, 24));
    f(&mut sb);
    let crc = pcache_crc(&sb[4..]);
    sb[..4].copy_from_slice(&crc.to_le_bytes());
    img.write_at(4096, &sb).unwrap();
}

fn refused(img: &SparseImage, code: &str) {
    let s = scan(img, &opts()).unwrap();
    let f = s
        .findings
        .find(code)
        .unwrap_or_else(|| panic!("{code}: {:?}", s.findings.list));
    assert!(f.kernel_refuses, "{f}");
    assert!(!s.kernel_would_load);
    let r = fsck::check(img, &FsckOptions::default()).unwrap();
    assert_eq!(r.exit_code, exit::UNCORRECTED);
}

#[test]
fn whole_image_faults() {
    let base = samples::last_chain().media;
    // Wrong magic (CRC fixed up, so only the magic is wrong).
    let mut img = base.clone();
    with_sb(&mut img, |sb| sb[8] ^= 0x10);
    refused(&img, "sb_bad_magic");
    // Big-endian flag.
    let mut img = base.clone();
    with_sb(&mut img, |sb| {
        sb[4..8].copy_from_slice(&SB_F_BIGENDIAN.to_le_bytes());
    });
    refused(&img, "sb_big_endian");
    assert!(Superblock::parse(&img.bytes(4096, 24)).is_err());
    // seg_num larger than the device.
    let mut img = base.clone();
    with_sb(&mut img, |sb| {
        sb[16..20].copy_from_slice(&32u32.to_le_bytes());
    });
    refused(&img, "sb_seg_num");
    let mut img = base.clone();
    with_sb(&mut img, |sb| {
        sb[16..20].copy_from_slice(&0u32.to_le_bytes());
    });
    refused(&img, "sb_seg_num");
    // Absurd counts everywhere (CRCs fixed up): refused, without allocating for them.
    let mut img = base.clone();
    with_sb(&mut img, |sb| {
        sb[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    let ci = pcache_format::record::CacheInfo {
        n_segs: u32::MAX,
        seg_id: u32::MAX - 1,
        ..pcache_format::record::CacheInfo::fresh(31, false, 70)
    };
    let rec = pcache_format::record::encode_meta(&ci, 9);
    img.write_at(
        layout::cache_info_off(0),
        zerocopy::IntoBytes::as_bytes(&rec),
    )
    .unwrap();
    refused(&img, "sb_seg_num");
    let s = scan(&img, &opts()).unwrap();
    assert!(
        s.findings.find("chain_truncated").is_some(),
        "{:?}",
        s.findings.list
    );
    let ci = pcache_format::record::CacheInfo { seg_id: 0, ..ci };
    let rec = pcache_format::record::encode_meta(&ci, 10);
    img.write_at(
        layout::cache_info_off(1),
        zerocopy::IntoBytes::as_bytes(&rec),
    )
    .unwrap();
    let s = scan(&img, &opts()).unwrap();
    assert!(
        s.findings.find("chain_short").is_some(),
        "{:?}",
        s.findings.list
    );
    // Unformatted: an error, not a refusal (the kernel formats it).
    let s = scan(&SparseImage::new(512 << 20), &opts()).unwrap();
    assert!(s.findings.find("sb_unformatted").is_some());
}

#[test]
fn truncated_devices() {
    let base = samples::last_chain().media;
    let seg = |k: u64| 20_480 + k * (16 << 20);
    for size in [
        0,
        100,
        4095,
        4100,
        4119,
        4120,
        8192,
        12_300,
        16_390,
        20_480,
        seg(0) + 5000,
        seg(1),
        seg(5) + 12_300,
        seg(6) + 12_290,
        seg(30),
        (512 << 20) - 1,
    ] {
        let img = base.resized(size);
        let s = scan(&img, &opts()).unwrap();
        assert!(
            s.findings.kernel_refuses() || s.findings.errors() > 0,
            "{size}: {:?}",
            s.findings.list
        );
        let r = fsck::check(&img, &FsckOptions::default()).unwrap();
        assert_eq!(r.exit_code, exit::UNCORRECTED, "{size}");
        let _ = pcache_tools::dump::text(&s, "img");
        let _ = pcache_tools::dump::json(&s, "img");
    }
}

#[test]
fn kset_cycles() {
    // 0 -> 5 -> 6 -> back to 5.
    let mut img = samples::last_chain();
    img.raw_last(5);
    refused(&img.media, "kset_cycle");
    // A LAST back to key_tail's segment, entered at 0 from the start: a loop as well.
    let mut img = samples::fresh();
    img.kset(&[KeySpec::new(0, 4096, 1, 0)]);
    img.raw_last(0);
    refused(&img.media, "kset_cycle");
    // key_tail mid-segment, log wrapping back into its segment once: the kernel re-reads
    // consumed ksets but does not loop; reported as an error.
    let mut img = samples::fresh();
    img.kset(&[KeySpec::new(0, 4096, 1, 0)]);
    let second = img.kset(&[KeySpec::new(4096, 4096, 1, 4096)]);
    img.last(7);
    img.kset(&[KeySpec::new(8192, 4096, 1, 8192)]);
    img.raw_last(0);
    img.set_key_tail(second);
    img.set_dirty_tail(second);
    let s = scan(&img.media, &opts()).unwrap();
    assert!(
        s.findings.find("log_revisits_tail").is_some(),
        "{:?}",
        s.findings.list
    );
    // Then 0:0 -> 0:64 (second) -> LAST 7 -> ... -> LAST 0 again: a loop.
    assert!(
        s.findings.find("kset_cycle").is_some(),
        "{:?}",
        s.findings.list
    );
    // A dirty_tail not on the log, whose own chain loops.
    let mut img = samples::last_chain();
    let head = img.key_head();
    img.raw_last(6);
    let _ = head;
    img.set_dirty_tail(CachePos::new(6, 0));
    let s = scan(&img.media, &opts()).unwrap();
    assert!(s.findings.kernel_refuses());
}

#[test]
fn segment_chain_faults() {
    let sample = samples::fresh();
    let si = |img: &mut SparseImage, seg: u32, slot: usize, next: Option<u32>, seq: u8| {
        let rec =
            pcache_format::record::encode_meta(&pcache_format::record::SegInfo::data(next), seq);
        img.write_at(
            layout::seg_info_off(seg, slot),
            zerocopy::IntoBytes::as_bytes(&rec),
        )
        .unwrap();
    };
    // A cycle: segment 4 links back to 2.
    let mut img = sample.media.clone();
    si(&mut img, 4, 0, Some(2), 3);
    let s = scan(&img, &opts()).unwrap();
    assert!(s.findings.find("chain_cycle").is_some());
    // Out of range.
    let mut img = sample.media.clone();
    si(&mut img, 4, 0, Some(31), 3);
    refused(&img, "chain_range");
    // Too short.
    let mut img = sample.media.clone();
    si(&mut img, 4, 0, None, 3);
    refused(&img, "chain_short");
    // A non-identity chain is fine: 0 -> 1 -> 3 -> 2 -> 4 ...
    let mut img = sample.media.clone();
    si(&mut img, 1, 0, Some(3), 3);
    si(&mut img, 3, 0, Some(2), 3);
    si(&mut img, 2, 0, Some(4), 3);
    let s = scan(&img, &opts()).unwrap();
    assert!(problems(&s).is_empty(), "{:?}", s.findings.list);
    let phys: Vec<u32> = s
        .chain
        .unwrap()
        .segments
        .iter()
        .take(5)
        .map(|v| v.phys)
        .collect();
    assert_eq!(phys, [0, 1, 3, 2, 4]);
}
