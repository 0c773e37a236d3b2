//! Snapshots of pcache-dump and pcache-fsck output on the sample images. Review changes
//! with `cargo insta review` (or `INSTA_UPDATE=always` and `git diff`).

use pcache_format::layout;
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::fsck::{self, FsckOptions};
use pcache_tools::scan;
use pcache_tools::testimg::samples;

fn dump_keys(media: &pcache_tools::testimg::SparseImage) -> pcache_tools::Scan {
    let opts = DumpOptions {
        keys: true,
        ..DumpOptions::default()
    };
    scan(media, &opts.scan_options()).unwrap()
}

#[test]
fn dump_text() {
    for (name, img) in samples::all() {
        let s = dump_keys(&img.media);
        insta::assert_snapshot!(format!("dump_{name}"), dump::text(&s, "img"));
    }
}

#[test]
fn dump_json() {
    for (name, img) in [
        ("data_keys", samples::data_keys()),
        ("stale_keys", samples::stale_keys()),
    ] {
        let opts = DumpOptions {
            keys: true,
            segments: Some(0..3),
            ..DumpOptions::default()
        };
        let s = scan(&img.media, &opts.scan_options()).unwrap();
        insta::assert_snapshot!(format!("dump_json_{name}"), dump::json(&s, "img"));
    }
}

#[test]
fn dump_range_limits() {
    let img = samples::last_chain();
    let opts = DumpOptions {
        keys: false,
        segments: Some(5..7),
        max_ksets: Some(2),
        ..DumpOptions::default()
    };
    let s = scan(&img.media, &opts.scan_options()).unwrap();
    insta::assert_snapshot!("dump_last_chain_segments_5_6", dump::text(&s, "img"));
}

#[test]
fn fsck_text_and_json() {
    for (name, img) in samples::all() {
        let r = fsck::check(&img.media, &FsckOptions::default()).unwrap();
        insta::assert_snapshot!(format!("fsck_{name}"), fsck::text(&r, "img"));
    }
    let r = fsck::check(&samples::data_keys().media, &FsckOptions::default()).unwrap();
    insta::assert_snapshot!("fsck_json_data_keys", fsck::json(&r, "img"));
}

#[test]
fn fsck_damage_and_repair() {
    let mut img = samples::data_keys();
    // Damage the older dirty_tail copy, the unused cache_info copy and segment 3's gen[0].
    img.media.flip(layout::dirty_tail_off(0) + 12, 1);
    img.media.flip(layout::cache_info_off(0) + 3, 7);
    img.media.flip(layout::seg_gen_off(3, 0), 0);
    let r = fsck::check(&img.media, &FsckOptions::default()).unwrap();
    insta::assert_snapshot!("fsck_damaged", fsck::text(&r, "img"));
    let s = dump_keys(&img.media);
    insta::assert_snapshot!("dump_damaged", dump::text(&s, "img"));
    let opts = FsckOptions {
        repair: true,
        ..FsckOptions::default()
    };
    let r = fsck::check_and_repair(&mut img.media, &opts).unwrap();
    insta::assert_snapshot!("fsck_repaired", fsck::text(&r, "img"));
    insta::assert_snapshot!("fsck_repaired_json", fsck::json(&r, "img"));
    // Errors the repair cannot touch.
    let mut img = samples::last_chain();
    img.media.flip(layout::data_area_off(5) + 30, 0);
    img.media.flip(layout::key_tail_off(0) + 8, 0);
    let r = fsck::check(&img.media, &FsckOptions::default()).unwrap();
    insta::assert_snapshot!("fsck_unrepairable", fsck::text(&r, "img"));
}
