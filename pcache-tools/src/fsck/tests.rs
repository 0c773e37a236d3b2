use super::*;
use crate::testimg::{samples, KeySpec};
use pcache_format::layout;

#[test]
fn samples_are_clean() {
    for (name, img) in samples::all() {
        let r = check(&img.media, &FsckOptions::default()).unwrap();
        assert_eq!(
            (r.verdict, r.exit_code),
            (Verdict::Clean, exit::CLEAN),
            "{name}: {:#?}",
            r.findings.list
        );
    }
}

#[test]
fn repair_rewrites_only_the_damaged_copy() {
    let mut img = samples::data_keys();
    // dirty_tail was moved once: copy 1 is current (seq 2), copy 0 the older (seq 1).
    let older = layout::dirty_tail_off(0);
    img.media.flip(older + 9, 3);
    let before = img.media.clone();
    let r = check(&img.media, &FsckOptions::default()).unwrap();
    assert_eq!(
        (r.verdict, r.exit_code),
        (Verdict::Errors, exit::UNCORRECTED)
    );
    let f = r.findings.find("copy_damaged").unwrap();
    assert_eq!(f.what, "dirty_tail[0]");
    // Read-only: nothing changed.
    assert_eq!(img.media, before);

    let opts = FsckOptions {
        repair: true,
        ..FsckOptions::default()
    };
    let r = check_and_repair(&mut img.media, &opts).unwrap();
    assert_eq!(
        (r.verdict, r.exit_code),
        (Verdict::Corrected, exit::CORRECTED)
    );
    assert_eq!(r.repaired.len(), 1);
    let d = &r.repaired[0];
    assert_eq!(
        (d.what.as_str(), d.repair.from, d.repair.to, d.repair.len),
        ("dirty_tail[0]", layout::dirty_tail_off(1), older, 16)
    );
    // Exactly those 16 bytes changed, to the good copy's bytes.
    let good = img.media.bytes(layout::dirty_tail_off(1), 16);
    assert_eq!(img.media.bytes(older, 16), good);
    let mut expect = before.clone();
    crate::ImageMut::write_at(&mut expect, older, &good).unwrap();
    assert_eq!(img.media, expect);
    assert!(text(&r, "img").contains("repaired dirty_tail[0] at byte 0x4020"));
    // And now it is clean; a second repair changes nothing.
    let r = check_and_repair(&mut img.media, &opts).unwrap();
    assert_eq!((r.verdict, r.exit_code), (Verdict::Clean, exit::CLEAN));
}

#[test]
fn repair_many_seg_infos_beyond_the_report_cap() {
    let mut img = samples::fresh();
    // Damage the unlinked seg_info copy 1 of every segment but the last (the kernel uses
    // copy 0) and the unused gen[0] of every segment: 61 damaged copies, more than the
    // report keeps of one kind.
    for seg in 0..30 {
        img.media.flip(layout::seg_info_off(seg, 1) + 12, 0);
    }
    for seg in 0..31 {
        img.media.flip(layout::seg_gen_off(seg, 0) + 8, 0);
    }
    let opts = FsckOptions {
        repair: true,
        ..FsckOptions::default()
    };
    let r = check(&img.media, &opts).unwrap();
    assert_eq!(r.findings.repairs().len(), 61);
    assert_eq!(r.findings.omitted.get("copy_damaged"), Some(&11));
    let r = check_and_repair(&mut img.media, &opts).unwrap();
    assert_eq!(r.repaired.len(), 61);
    assert_eq!(r.exit_code, exit::CORRECTED, "{:#?}", r.findings.list);
}

#[test]
fn no_repair_from_an_unlinked_copy() {
    let mut img = samples::fresh();
    // Copy 0 of segment 3 holds the link; copy 1 has no HAS_NEXT.
    img.media.flip(layout::seg_info_off(3, 0) + 4, 1);
    let before = img.media.clone();
    let opts = FsckOptions {
        repair: true,
        ..FsckOptions::default()
    };
    let r = check_and_repair(&mut img.media, &opts).unwrap();
    assert!(r.repaired.is_empty());
    assert_eq!(r.exit_code, exit::UNCORRECTED);
    assert!(r.findings.find("chain_short").is_some());
    assert!(r.findings.find("copy_damaged").unwrap().repair.is_none());
    assert_eq!(img.media, before);
}

#[test]
fn backing_size_bounds_keys() {
    let img = samples::data_keys();
    let opts = FsckOptions {
        backing_size: Some(1 << 20),
        ..FsckOptions::default()
    };
    let r = check(&img.media, &opts).unwrap();
    let f = r.findings.find("key_invalid").unwrap();
    assert!(f.kernel_refuses);
    assert!(
        f.message
            .contains("off 1048576 + len 512 = 1049088 is beyond"),
        "{}",
        f.message
    );
    assert_eq!(r.exit_code, exit::UNCORRECTED);
}

#[test]
fn data_crc_mismatch_is_found() {
    let mut img = samples::data_crc();
    // The data of the first key (segment 1, offset 0).
    img.media.flip(layout::data_area_off(1) + 100, 2);
    let r = check(&img.media, &FsckOptions::default()).unwrap();
    assert!(r.findings.find("key_data_crc").is_some());
    assert_eq!(r.exit_code, exit::UNCORRECTED);
    let opts = FsckOptions {
        verify_data_crc: false,
        ..FsckOptions::default()
    };
    assert_eq!(check(&img.media, &opts).unwrap().exit_code, exit::CLEAN);
}

#[test]
fn dirty_stale_key_is_data_loss() {
    let mut img = samples::fresh();
    img.kset(&[KeySpec::new(0, 4096, 4, 0)]);
    img.bump_gen(4);
    let r = check(&img.media, &FsckOptions::default()).unwrap();
    assert!(r.findings.find("dirty_key_stale").is_some());
    assert_eq!(r.exit_code, exit::UNCORRECTED);
}

#[test]
fn corrected_and_uncorrected_add_up() {
    let mut img = samples::data_keys();
    img.media.flip(layout::dirty_tail_off(0) + 4, 0);
    let opts = FsckOptions {
        repair: true,
        backing_size: Some(1 << 20),
        ..FsckOptions::default()
    };
    let r = check_and_repair(&mut img.media, &opts).unwrap();
    assert_eq!(r.repaired.len(), 1);
    assert_eq!(r.exit_code, exit::CORRECTED | exit::UNCORRECTED);
    assert_eq!(r.verdict, Verdict::Errors);
    assert!(
        text(&r, "img").contains("after 1 repair"),
        "{}",
        text(&r, "img")
    );
}

#[test]
fn overlapping_live_data_is_an_error() {
    let mut img = samples::data_keys();
    // A new key whose data lands on the 4 MiB key's bytes in segment 1.
    img.kset(&[KeySpec::new(100 << 20, 4096, 1, 12_288)]);
    let r = check(&img.media, &FsckOptions::default()).unwrap();
    let f = r.findings.find("data_overlap").expect("data_overlap");
    assert!(f.message.contains("1:12288+4096"), "{}", f.message);
    assert!(f.message.contains("1:8704+8192"), "{}", f.message);
    assert_eq!(r.exit_code, exit::UNCORRECTED);
    // Touching extents do not overlap.
    let mut img = samples::data_keys();
    img.kset(&[KeySpec::new(100 << 20, 4096, 1, 16_896)]);
    assert_eq!(
        check(&img.media, &FsckOptions::default())
            .unwrap()
            .exit_code,
        exit::CLEAN
    );
    // Stale keys may share bytes with live ones (the segment was reused).
    let img = samples::stale_keys();
    assert_eq!(
        check(&img.media, &FsckOptions::default())
            .unwrap()
            .exit_code,
        exit::CLEAN
    );
}

#[test]
fn says_what_else_the_device_holds() {
    let mut img = crate::testimg::SparseImage::new(512 << 20);
    crate::ImageMut::write_at(&mut img, 0, b"XFSB").unwrap();
    let r = check(&img, &FsckOptions::default()).unwrap();
    let f = r.findings.find("sb_unformatted").unwrap();
    assert!(f.message.contains("an XFS filesystem"), "{}", f.message);
    assert_eq!(r.exit_code, exit::UNCORRECTED);
}

#[test]
fn stray_cache_info_of_old_kernels_is_a_warning() {
    let mut img = samples::fresh();
    let rec = pcache_format::record::encode_meta(
        &pcache_format::record::CacheInfo::fresh(31, false, 70),
        2,
    );
    crate::ImageMut::write_at(&mut img.media, 8216, zerocopy::IntoBytes::as_bytes(&rec)).unwrap();
    let r = check(&img.media, &FsckOptions::default()).unwrap();
    let f = r.findings.find("old_618_stride").unwrap();
    assert_eq!(f.severity, crate::Severity::Warning);
    assert_eq!(
        (r.verdict, r.exit_code),
        (Verdict::CleanWithWarnings, exit::CLEAN)
    );
}
