//! The kernel's hardening of its loader against untrusted persistent memory (the 7.x
//! series merged for 7.3; issue 17), one test per check. Each builds an image that
//! violates the check and asserts that
//! (a) `pcache-fsck` names it (the library, and the binary's `--json`) and exits 4, and
//! (b) the engine's strict open ([`Cache::open`]) refuses it with a clear error, or, where
//!     the kernel tolerates it and it is harmless, loads it as the kernel does (said so at
//!     the assertion).
//! `docs/design.md` ("Hardening checks") lists them. The last test is about images of
//! kernels 6.18.0 to 6.18.3, which wrote cache_info at the wrong stride.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::{Cache, CacheConfig, EngineError};
use pcache_format::kset::KsetBuf;
use pcache_format::layout::{self, CachePos, SEG_DATA_SIZE};
use pcache_format::record::{decode_meta, encode_meta, CacheInfo, Dual, MetaRecord, SegInfo};
use pcache_format::{pcache_crc, Key, Reason};
use pcache_tools::finding::{Finding, Severity};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::testimg::{samples, ImageBuilder, KeySpec, SparseImage, TestImage};
use pcache_tools::{Image, ImageMut};
use std::process::Command;
use std::sync::Arc;
use zerocopy::IntoBytes;

/// The backing device's size unless a test says otherwise: larger than every key.
const BACKING: u64 = 2 << 30;

fn report(img: &SparseImage, backing: u64) -> fsck::Report {
    let opts = FsckOptions {
        backing_size: Some(backing),
        ..FsckOptions::default()
    };
    fsck::check(img, &opts).unwrap()
}

/// `pcache-fsck` (the library and the binary) names `code` and exits 4; the finding.
fn fsck_names(img: &SparseImage, backing: u64, code: &str) -> Finding {
    let r = report(img, backing);
    let text = fsck::text(&r, "img");
    let f = r
        .findings
        .find(code)
        .unwrap_or_else(|| panic!("no {code}:\n{text}"))
        .clone();
    assert!(f.severity >= Severity::Warning, "{f}");
    assert_eq!(r.exit_code, exit::UNCORRECTED, "{text}");
    // The binary: the same code in its JSON, exit 4.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    img.write_to_file(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pcache-fsck"))
        .args(["--json", "--backing-size", &backing.to_string()])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::UNCORRECTED), "{out:?}");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains(&format!("\"code\": \"{code}\"")), "{json}");
    f
}

/// The image on memory media.
fn media_of(img: &SparseImage) -> Arc<dyn CacheMedia> {
    let m = MemMedia::new(img.size());
    for off in img.pages().collect::<Vec<_>>() {
        let len = usize::try_from(4096.min(img.size() - off)).unwrap();
        m.write(off, &img.bytes(off, len)).unwrap();
    }
    Arc::new(m)
}

fn config(media: &dyn CacheMedia, read_only: bool) -> CacheConfig {
    let data_crc = Cache::peek_info(media)
        .ok()
        .flatten()
        .is_some_and(|i| i.data_crc);
    CacheConfig {
        data_crc,
        background: false,
        read_only,
        ..CacheConfig::default()
    }
}

/// The engine's strict open, read-only, in front of `backing` bytes.
fn open(img: &SparseImage, backing: u64) -> Result<Cache, EngineError> {
    let media = media_of(img);
    let cfg = config(&*media, true);
    Cache::open(media, Arc::new(MemBacking::new(backing)), cfg)
}

/// The engine's refusal.
fn refused(img: &SparseImage, backing: u64) -> EngineError {
    match open(img, backing) {
        Ok(_) => panic!("the engine opened it"),
        Err(e) => e,
    }
}

/// The reason of a [`EngineError::Corrupt`] about `context`.
fn corrupt(e: &EngineError, context: &str) -> Reason {
    match e {
        EngineError::Corrupt { context: c, source } if *c == context => source.reason,
        other => panic!("not a corrupt {context}: {other}"),
    }
}

fn out_of_range(r: Reason) -> &'static str {
    match r {
        Reason::OutOfRange { field, .. } => field,
        other => panic!("not out of range: {other}"),
    }
}

/// Replaces a dual record the way a writer updates it: the other slot, next seq.
fn update<R: MetaRecord + Copy>(img: &mut SparseImage, at: [u64; 2], f: impl FnOnce(&mut R)) {
    let size = core::mem::size_of::<R::Raw>();
    let bytes = [img.bytes(at[0], size), img.bytes(at[1], size)];
    let dual = Dual::<R>::decode([&bytes[0], &bytes[1]], at);
    let mut v = dual.latest().expect("a valid copy").value;
    f(&mut v);
    let (slot, seq) = dual.next_write();
    img.write_at(at[slot], encode_meta(&v, seq).as_bytes())
        .unwrap();
}

fn set_cache_info(img: &mut SparseImage, f: impl FnOnce(&mut CacheInfo)) {
    update(
        img,
        [layout::cache_info_off(0), layout::cache_info_off(1)],
        f,
    );
}

fn set_seg_info(img: &mut SparseImage, seg: u32, f: impl FnOnce(&mut SegInfo)) {
    update(
        img,
        [layout::seg_info_off(seg, 0), layout::seg_info_off(seg, 1)],
        f,
    );
}

fn with_sb(img: &mut SparseImage, seg_num: u32) {
    let mut sb = img.bytes(layout::SB_OFF, 24);
    sb[16..20].copy_from_slice(&seg_num.to_le_bytes());
    let crc = pcache_crc(&sb[4..]);
    sb[..4].copy_from_slice(&crc.to_le_bytes());
    img.write_at(layout::SB_OFF, &sb).unwrap();
}

/// A kset of raw keys (not checked, no data written) at key_head.
fn raw_keys(img: &mut TestImage, keys: &[Key]) -> CachePos {
    let mut buf = KsetBuf::new();
    for k in keys {
        assert!(buf.push(&k.to_raw()));
    }
    img.raw_kset(buf.seal())
}

const fn key(off: u64, len: u32, seg: u32, seg_off: u32) -> Key {
    Key {
        off,
        len,
        flags: 0,
        pos: CachePos::new(seg, seg_off),
        seg_gen: 0,
        data_crc: 0,
    }
}

#[test]
fn hardening_01_segment_ids_out_of_range() {
    // cache_info.seg_id, the physical id of cache segment 0, beyond seg_num.
    let mut img = samples::data_keys();
    set_cache_info(&mut img.media, |ci| ci.seg_id = 31);
    let f = fsck_names(&img.media, BACKING, "cache_info_range");
    assert!(f.kernel_refuses && f.message.contains("seg_id = 31"), "{f}");
    let e = refused(&img.media, BACKING);
    assert_eq!(out_of_range(corrupt(&e, "cache_info")), "seg_id");

    // A seg_info's next_seg beyond seg_num, in the middle of the chain.
    for next in [31, u32::MAX] {
        let mut img = samples::data_keys();
        set_seg_info(&mut img.media, 4, |si| si.next_seg = next);
        let f = fsck_names(&img.media, BACKING, "chain_range");
        assert!(
            f.kernel_refuses && f.message.contains(&next.to_string()),
            "{f}"
        );
        let e = refused(&img.media, BACKING);
        assert!(
            matches!(corrupt(&e, "segment chain"), Reason::OutOfRange { value, .. } if value == u64::from(next)),
            "{e}"
        );
    }
}

#[test]
fn hardening_02_cache_info_geometry() {
    // n_segs beyond seg_num, and 0.
    for n in [32, 0] {
        let mut img = samples::data_keys();
        set_cache_info(&mut img.media, |ci| ci.n_segs = n);
        let f = fsck_names(&img.media, BACKING, "cache_info_range");
        assert!(f.kernel_refuses && f.message.contains("n_segs"), "{f}");
        let e = refused(&img.media, BACKING);
        assert_eq!(
            out_of_range(corrupt(&e, "cache_info")),
            "n_segs (1..=limit)"
        );
    }

    // gc_percent over 90: the kernel accepts it (its message refuses it); pcache refuses
    // the cache unless the open replaces it.
    let mut img = samples::data_keys();
    set_cache_info(&mut img.media, |ci| ci.gc_percent = 100);
    let f = fsck_names(&img.media, BACKING, "cache_info_gc_percent");
    assert!(
        !f.kernel_refuses && f.message.contains("gc_percent is 100"),
        "{f}"
    );
    let e = refused(&img.media, BACKING);
    assert_eq!(
        out_of_range(corrupt(&e, "cache_info")),
        "gc_percent (maximum, inclusive)"
    );
    let media = media_of(&img.media);
    let cfg = CacheConfig {
        gc_percent: Some(70),
        ..config(&*media, false)
    };
    let c = Cache::open(media.clone(), Arc::new(MemBacking::new(BACKING)), cfg).unwrap();
    c.close().unwrap();
    let info = Cache::peek_info(&*media).unwrap().unwrap();
    assert_eq!(
        info.gc_percent, 70,
        "the open with a new gc_percent persisted it"
    );

    // Undefined flag bits: a newer or foreign writer. The kernel ignores them; pcache
    // refuses.
    let mut img = samples::data_keys();
    set_cache_info(&mut img.media, |ci| ci.unknown_flags = 1 << 20);
    let f = fsck_names(&img.media, BACKING, "cache_info_flags");
    assert!(!f.kernel_refuses && f.message.contains("0x100000"), "{f}");
    let e = refused(&img.media, BACKING);
    assert!(
        matches!(corrupt(&e, "cache_info"), Reason::Invalid(w) if w.contains("flag")),
        "{e}"
    );

    // n_segs below seg_num: the kernel tolerates it (its allocator is bounded by
    // n_segs), and so does pcache; fsck warns.
    let mut img = samples::data_keys();
    set_cache_info(&mut img.media, |ci| ci.n_segs = 30);
    let r = report(&img.media, BACKING);
    assert_eq!(r.exit_code, exit::CLEAN, "{}", fsck::text(&r, "img"));
    assert!(r.findings.find("n_segs_short").is_some());
    open(&img.media, BACKING).unwrap();
}

#[test]
fn hardening_03_kset_key_num_and_bounds() {
    // key_num 0: no writer closes an empty kset. The kernel and pcache step over its 24
    // bytes (the kernel tolerates it, and it holds nothing); fsck reports it as an error.
    let mut img = samples::data_keys();
    let empty = img.raw_kset(KsetBuf::new().seal());
    img.kset(&[KeySpec::new(200 << 20, 4096, 2, 4096)]);
    let f = fsck_names(&img.media, BACKING, "kset_empty");
    assert!(f.message.contains("no keys"), "{f}");
    assert!(
        f.what.contains(&format!("{}:{}", empty.seg, empty.off)),
        "{f}"
    );
    let c = open(&img.media, BACKING).expect("the engine steps over it, as the kernel does");
    let mut buf = vec![0; 4096];
    c.read(0, 200 << 20, &mut buf).unwrap();
    assert_eq!(
        buf,
        TestImage::pattern(200 << 20, 4096),
        "the key behind it"
    );

    // key_num over 128: the end of the log for the kernel. Here one flipped bit made it
    // so, with a durable kset behind it: an error for fsck, a refusal for pcache (replay
    // would silently lose the ksets behind it).
    let mut img = samples::data_keys();
    img.media.flip(layout::data_area_off(0) + 4, 7); // key_num 3 -> 131
    let f = fsck_names(&img.media, BACKING, "kset_damaged");
    assert!(f.message.contains("bit 7 of its byte 4"), "{f}");
    assert!(
        matches!(
            refused(&img.media, BACKING),
            EngineError::DamagedLog { ksets: 1, .. }
        ),
        "refused as a damaged log"
    );

    // A kset overrunning its segment: its header fits, its keys would not.
    let mut img = samples::fresh();
    let at = SEG_DATA_SIZE - 64;
    let mut buf = KsetBuf::new();
    buf.push(&key(0, 4096, 1, 0).to_raw());
    buf.push(&key(4096, 4096, 1, 4096).to_raw());
    let bytes = buf.seal()[..64].to_vec(); // 104 bytes long; the rest is seg 1's seg_info
    img.media
        .write_at(layout::data_area_off(0) + u64::from(at), &bytes)
        .unwrap();
    img.set_key_tail(CachePos::new(0, at));
    img.set_dirty_tail(CachePos::new(0, at));
    let f = fsck_names(&img.media, BACKING, "kset_overrun");
    assert!(f.kernel_refuses, "{f}");
    let e = refused(&img.media, BACKING);
    assert!(
        out_of_range(corrupt(&e, "kset")).contains("bytes left in the segment"),
        "{e}"
    );
}

#[test]
fn hardening_04_persisted_tail_offsets() {
    // seg_off at or beyond the data area's end; cache_seg_id beyond n_segs.
    for (pos, field) in [
        (CachePos::new(0, SEG_DATA_SIZE), "seg_off"),
        (CachePos::new(0, u32::MAX - 7), "seg_off"),
        (CachePos::new(31, 0), "cache_seg_id"),
    ] {
        for dirty in [false, true] {
            let mut img = samples::data_keys();
            if dirty {
                img.set_dirty_tail(pos);
            } else {
                img.set_key_tail(pos);
            }
            let f = fsck_names(&img.media, BACKING, "tail_range");
            assert!(f.kernel_refuses && f.message.contains(field), "{f}");
            let e = refused(&img.media, BACKING);
            assert_eq!(out_of_range(corrupt(&e, "tails")), field, "{pos}");
        }
    }
    // Misaligned: no kset starts there. The kernel accepts it (and would read an empty
    // log from the middle of a kset); pcache refuses.
    for dirty in [false, true] {
        let mut img = samples::data_keys();
        let pos = CachePos::new(0, 4100);
        if dirty {
            img.set_dirty_tail(pos);
        } else {
            img.set_key_tail(pos);
        }
        let f = fsck_names(&img.media, BACKING, "tail_misaligned");
        assert!(!f.kernel_refuses && f.message.contains("4100"), "{f}");
        let e = refused(&img.media, BACKING);
        assert!(
            matches!(
                corrupt(&e, "tails"),
                Reason::Misaligned {
                    field: "seg_off",
                    value: 4100,
                    align: 8
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn hardening_05_last_kset_cycle() {
    // 0 -> 5 -> 6 -> back to 5, an earlier segment of the chain.
    let mut img = samples::last_chain();
    img.raw_last(5);
    // And one back to key_tail's segment, entered at 0 from the start.
    let mut to_tail = samples::last_chain();
    to_tail.raw_last(0);
    for img in [img, to_tail] {
        let f = fsck_names(&img.media, BACKING, "kset_cycle");
        assert!(f.kernel_refuses && f.message.contains("links back"), "{f}");
        match refused(&img.media, BACKING) {
            EngineError::Inconsistent(m) => assert!(m.contains("loops"), "{m}"),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn hardening_06_logical_key_offset() {
    // off + len beyond the backing device (data_keys ends at 64 MiB + 4 KiB).
    let img = samples::data_keys();
    let backing = 64 << 20;
    let f = fsck_names(&img.media, backing, "key_invalid");
    assert!(
        f.kernel_refuses && f.message.contains("beyond the backing device"),
        "{f}"
    );
    let e = refused(&img.media, backing);
    assert_eq!(out_of_range(corrupt(&e, "key")), "off + len");
    // Overflowing off + len.
    let mut img = samples::fresh();
    raw_keys(&mut img, &[key(u64::MAX - 511, 4096, 1, 0)]);
    fsck_names(&img.media, BACKING, "key_invalid");
    assert_eq!(
        out_of_range(corrupt(&refused(&img.media, BACKING), "key")),
        "off + len"
    );

    // len 0.
    let mut img = samples::fresh();
    img.kset(&[KeySpec::new(0, 0, 1, 0)]);
    let f = fsck_names(&img.media, BACKING, "key_invalid");
    assert!(f.kernel_refuses && f.message.contains("len"), "{f}");
    let e = refused(&img.media, BACKING);
    assert_eq!(out_of_range(corrupt(&e, "key")), "len (minimum, inclusive)");

    // Not sector aligned: off, len, or its data position. The kernel accepts it; no
    // writer produces it and writeback could not write it back: pcache refuses.
    for (k, field) in [
        (KeySpec::new(100, 512, 1, 0), "off"),
        (KeySpec::new(0, 700, 1, 0), "len"),
        (KeySpec::new(0, 512, 1, 8), "cache_seg_off"),
    ] {
        let mut img = samples::fresh();
        img.kset(&[k]);
        let f = fsck_names(&img.media, BACKING, "key_misaligned");
        assert!(!f.kernel_refuses && f.message.contains(field), "{f}");
        let e = refused(&img.media, BACKING);
        assert!(
            matches!(corrupt(&e, "key"), Reason::Misaligned { field: got, align: 512, .. } if got == field),
            "{e}"
        );
    }
}

#[test]
fn hardening_07_key_cache_position() {
    for (k, field) in [
        // A segment beyond n_segs.
        (key(0, 4096, 31, 0), "cache_seg_id"),
        (key(0, 4096, u32::MAX, 0), "cache_seg_id"),
        // Data running past the end of the data area.
        (key(0, 4096, 1, SEG_DATA_SIZE - 512), "cache_seg_off + len"),
        (key(0, 4096, 1, u32::MAX - 511), "cache_seg_off + len"),
    ] {
        let mut img = samples::fresh();
        raw_keys(&mut img, &[k]);
        let f = fsck_names(&img.media, BACKING, "key_invalid");
        assert!(f.kernel_refuses && f.message.contains(field), "{f}");
        let e = refused(&img.media, BACKING);
        assert_eq!(out_of_range(corrupt(&e, "key")), field, "{k:?}");
    }
}

#[test]
fn hardening_08_tail_kset_read_clamped() {
    // 32 segments exactly: the last data area ends at the end of the device, so a read
    // of a kset past its data region would fail as a read past the device.
    let size = layout::SEGMENTS_OFF + 32 * layout::SEG_SIZE;
    let mut img = ImageBuilder::new(size).build();
    assert_eq!(img.geometry.seg_num, 32);
    // At key_tail, 24 bytes before the end: a kset header claiming 3 keys.
    let at = SEG_DATA_SIZE - 24;
    let mut buf = KsetBuf::new();
    for i in 0..3 {
        buf.push(&key(i * 4096, 4096, 1, 0).to_raw());
    }
    let header = buf.seal()[..24].to_vec();
    img.media
        .write_at(layout::data_area_off(31) + u64::from(at), &header)
        .unwrap();
    img.set_key_tail(CachePos::new(31, at));
    img.set_dirty_tail(CachePos::new(31, at));
    assert_eq!(size, layout::data_area_off(31) + u64::from(SEG_DATA_SIZE));
    // The read is clamped to the data region: an overrun, not a truncated device.
    let r = report(&img.media, BACKING);
    assert!(
        r.findings.find("log_truncated").is_none(),
        "{:?}",
        r.findings.list
    );
    let f = fsck_names(&img.media, BACKING, "kset_overrun");
    assert!(f.kernel_refuses, "{f}");
    let e = refused(&img.media, BACKING);
    assert!(
        out_of_range(corrupt(&e, "kset")).contains("bytes left in the segment"),
        "not a media error: {e}"
    );

    // 16 bytes before the end: no room for a header, the end of the log (the kernel's
    // reading); pcache refuses a log it could not append to, without reading past it.
    let mut img = ImageBuilder::new(size).build();
    img.set_key_tail(CachePos::new(31, SEG_DATA_SIZE - 16));
    img.set_dirty_tail(CachePos::new(31, SEG_DATA_SIZE - 16));
    let r = report(&img.media, BACKING);
    assert!(
        r.findings.find("log_truncated").is_none(),
        "{:?}",
        r.findings.list
    );
    assert!(
        r.findings.find("log_end_no_room").is_some(),
        "{:?}",
        r.findings.list
    );
    match refused(&img.media, BACKING) {
        EngineError::Inconsistent(m) => assert!(m.contains("less than a kset header"), "{m}"),
        other => panic!("{other}"),
    }
}

#[test]
fn hardening_09_seg_num_vs_device_size() {
    // 31 segments fit in 512 MiB.
    for seg_num in [32, 0, u32::MAX] {
        let mut img = samples::data_keys();
        with_sb(&mut img.media, seg_num);
        let f = fsck_names(&img.media, BACKING, "sb_seg_num");
        assert!(f.kernel_refuses && f.message.contains("seg_num"), "{f}");
        let e = refused(&img.media, BACKING);
        assert!(
            matches!(corrupt(&e, "superblock"), Reason::OutOfRange { value, .. } if value == u64::from(seg_num)),
            "{e}"
        );
    }
}

#[test]
fn hardening_10_dirty_tail_chain() {
    // dirty_tail behind key_tail (key_tail at the second kset, dirty_tail at the first):
    // not on the log replay walks. The kernel only checks that its chain is walkable.
    let mut img = samples::data_keys();
    let second = CachePos::new(0, layout::kset_size(3));
    img.set_key_tail(second);
    img.set_dirty_tail(CachePos::new(0, 0));
    let f = fsck_names(&img.media, BACKING, "dirty_tail_off_log");
    assert!(!f.kernel_refuses && f.message.contains("0:0"), "{f}");
    match refused(&img.media, BACKING) {
        EngineError::Inconsistent(m) => assert!(m.contains("not on the log"), "{m}"),
        other => panic!("{other}"),
    }
    // Inside a kset, not at one.
    let mut img = samples::data_keys();
    img.set_dirty_tail(CachePos::new(0, 48));
    fsck_names(&img.media, BACKING, "dirty_tail_off_log");
    assert!(matches!(
        refused(&img.media, BACKING),
        EngineError::Inconsistent(_)
    ));
    // Off the log, and its own chain is not walkable (a kset overrunning segment 10):
    // the kernel refuses too.
    let mut img = samples::last_chain();
    let at = SEG_DATA_SIZE - 24;
    let mut buf = KsetBuf::new();
    for i in 0..3 {
        buf.push(&key(i * 4096, 4096, 1, 0).to_raw());
    }
    let header = buf.seal()[..24].to_vec();
    img.media
        .write_at(layout::data_area_off(10) + u64::from(at), &header)
        .unwrap();
    img.set_dirty_tail(CachePos::new(10, at));
    let f = fsck_names(&img.media, BACKING, "dirty_chain");
    assert!(f.kernel_refuses, "{f}");
    assert!(matches!(
        refused(&img.media, BACKING),
        EngineError::Inconsistent(_)
    ));
}

#[test]
fn hardening_11_only_initialised_segments() {
    // The data segment of live keys (1), and a log segment (5), with no valid seg_info.
    for (mut img, seg) in [(samples::data_keys(), 1), (samples::last_chain(), 5)] {
        for slot in 0..2 {
            img.media
                .write_at(layout::seg_info_off(seg, slot), &[0; 16])
                .unwrap();
        }
        let f = fsck_names(&img.media, BACKING, "seg_info_missing");
        assert!(
            f.kernel_refuses && f.what.contains(&format!("phys {seg}")),
            "{f}"
        );
        let e = refused(&img.media, BACKING);
        assert_eq!(corrupt(&e, "segment chain"), Reason::NoValidCopy);
    }
    // n_segs 8 of 31: segments 8.. are formatted but not the cache's; a key or a LAST
    // kset naming one is refused (the kernel's `cache_seg_id < n_segs`).
    let mut img = samples::fresh();
    set_cache_info(&mut img.media, |ci| ci.n_segs = 8);
    img.kset(&[KeySpec::new(0, 4096, 9, 0)]);
    let f = fsck_names(&img.media, BACKING, "key_invalid");
    assert!(f.message.contains("cache_seg_id = 9"), "{f}");
    let e = refused(&img.media, BACKING);
    assert_eq!(out_of_range(corrupt(&e, "key")), "cache_seg_id");
    let mut img = samples::fresh();
    set_cache_info(&mut img.media, |ci| ci.n_segs = 8);
    img.kset(&[KeySpec::new(0, 4096, 1, 0)]);
    img.last(9);
    let f = fsck_names(&img.media, BACKING, "kset_bad_link");
    assert!(f.kernel_refuses, "{f}");
    let e = refused(&img.media, BACKING);
    assert_eq!(out_of_range(corrupt(&e, "kset")), "next_cache_seg_id");
    // (That the engine's allocator hands out only the n_segs segments of the chain is
    // pcache-engine/tests/hardening.rs.)
}

/// Kernels 6.18.0 to 6.18.3 addressed cache_info slot k at 8192 + 24·k: fsck warns
/// (`old_618_stride`); the engine ignores such a copy where a slot is valid (as every
/// kernel does), refuses to format over it where none is, and never uses it: only
/// `pcache-fsck --repair` moves it to its slot.
#[test]
fn hardening_old_618_stride() {
    let stray = |img: &mut SparseImage, ci: &CacheInfo, seq: u8| {
        img.write_at(layout::CACHE_INFO_OFF_618, encode_meta(ci, seq).as_bytes())
            .unwrap();
    };
    // 6.18.0-6.18.2: a gc_percent message wrote the second copy at 8216, newer than
    // the one in slot 1 (seq 1): lost, the kernel and pcache use slot 1.
    let mut img = samples::data_keys();
    let fresh = CacheInfo::fresh(31, false, 70);
    stray(
        &mut img.media,
        &CacheInfo {
            gc_percent: 50,
            ..fresh
        },
        2,
    );
    let r = report(&img.media, BACKING);
    let f = r.findings.find("old_618_stride").expect("old_618_stride");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.offset, Some(8216));
    for part in [
        "6.18.0 to 6.18.3",
        "gc_percent 50",
        "use copy 1",
        "newer one",
        "were lost",
    ] {
        assert!(f.message.contains(part), "{part}: {f}");
    }
    assert_eq!(r.exit_code, exit::CLEAN, "a warning");
    let media = media_of(&img.media);
    let c = Cache::open(
        media.clone(),
        Arc::new(MemBacking::new(BACKING)),
        config(&*media, false),
    )
    .unwrap();
    assert!(
        c.status().dmsetup_line().contains(" 70 "),
        "{}",
        c.status().dmsetup_line()
    );
    c.close().unwrap();
    let mut at_8216 = vec![0; 24];
    media.read(8216, &mut at_8216).unwrap();
    assert_eq!(
        at_8216,
        img.media.bytes(8216, 24),
        "pcache never writes there"
    );

    // 6.18.3: every activation's copy went to 8216, so a cache it formatted and used has
    // no cache_info where kernels look. The kernel would format it (everything cached is
    // lost); pcache refuses, read-only or not, and writes nothing.
    let mut img = samples::data_keys();
    let slot1 = img.media.bytes(layout::cache_info_off(1), 24);
    img.media
        .write_at(layout::cache_info_off(1), &[0; 24])
        .unwrap();
    img.media
        .write_at(layout::CACHE_INFO_OFF_618, &slot1)
        .unwrap();
    let f = fsck_names(&img.media, BACKING, "old_618_stride");
    assert!(
        f.repair.is_some() && f.message.contains("--repair copies it"),
        "{f}"
    );
    let r = report(&img.media, BACKING);
    assert!(r.findings.find("cache_info_missing").is_some());
    assert!(matches!(
        refused(&img.media, BACKING),
        EngineError::MisplacedCacheInfo { at: 8216, seq: 1 }
    ));
    let media = media_of(&img.media);
    let e = Cache::open(
        media.clone(),
        Arc::new(MemBacking::new(BACKING)),
        CacheConfig {
            background: false,
            ..CacheConfig::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("pcache-fsck --repair"), "{e}");
    let mut seg1 = vec![0; 24];
    media.read(layout::seg_info_off(1, 0), &mut seg1).unwrap();
    assert_eq!(
        seg1,
        img.media.bytes(layout::seg_info_off(1, 0), 24),
        "not formatted"
    );
    // fsck --repair moves it to slot 1; then both load it, with its data.
    let opts = FsckOptions {
        repair: true,
        backing_size: Some(BACKING),
        ..FsckOptions::default()
    };
    let r = fsck::check_and_repair(&mut img.media, &opts).unwrap();
    assert_eq!(r.exit_code, exit::CORRECTED, "{}", fsck::text(&r, "img"));
    assert_eq!(img.media.bytes(layout::cache_info_off(1), 24), slot1);
    let c = open(&img.media, BACKING).unwrap();
    let mut buf = vec![0; 4096];
    c.read(0, 8192, &mut buf).unwrap();
    assert_eq!(buf, TestImage::pattern(8192, 4096));

    // What is at 8216 is used for nothing else: garbage there, or a copy that is not an
    // initialised cache_info for this device, leaves the kernel's behaviour (format).
    for bytes in [
        vec![0xA5; 24],
        encode_meta(
            &CacheInfo {
                n_segs: 99,
                ..fresh
            },
            1,
        )
        .as_bytes()
        .to_vec(),
        encode_meta(
            &CacheInfo {
                init_done: false,
                ..fresh
            },
            1,
        )
        .as_bytes()
        .to_vec(),
    ] {
        let mut img = samples::fresh();
        img.media
            .write_at(layout::cache_info_off(1), &[0; 24])
            .unwrap();
        img.media
            .write_at(layout::CACHE_INFO_OFF_618, &bytes)
            .unwrap();
        let r = report(&img.media, BACKING);
        if decode_meta::<CacheInfo>(&bytes, 8216).is_ok() {
            let f = r.findings.find("old_618_stride").unwrap();
            assert!(
                f.repair.is_none() && f.message.contains("nothing to recover"),
                "{f}"
            );
        } else {
            assert!(r.findings.find("old_618_stride").is_none());
        }
        let media = media_of(&img.media);
        let cfg = CacheConfig {
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media, Arc::new(MemBacking::new(BACKING)), cfg).unwrap();
        c.close().unwrap();
    }
}

/// A repair can reveal what the record it fixed hid: with cache_info only at 8216 the
/// check stops at cache_info, so a damaged generation copy behind it shows only once the
/// copy is in its slot. `--repair` makes both repairs in one run (exit 1, clean after),
/// as e2fsck restarts after a repair that changes what it can read.
#[test]
fn a_repair_that_reveals_another_makes_both() {
    let mut img = samples::data_keys();
    let slot1 = img.media.bytes(layout::cache_info_off(1), 24);
    img.media
        .write_at(layout::cache_info_off(1), &[0; 24])
        .unwrap();
    img.media
        .write_at(layout::CACHE_INFO_OFF_618, &slot1)
        .unwrap();
    // Segment 3's newer generation copy is copy 1 (samples::data_keys).
    let gen = layout::seg_gen_off(3, 0);
    let good = img.media.bytes(layout::seg_gen_off(3, 1), 16);
    let mut bad = img.media.bytes(gen, 16);
    bad[0] ^= 0x40;
    img.media.write_at(gen, &bad).unwrap();
    let r = report(&img.media, BACKING);
    let text = fsck::text(&r, "img");
    assert_eq!(r.findings.repairs().len(), 1, "hidden at first: {text}");

    let opts = FsckOptions {
        repair: true,
        backing_size: Some(BACKING),
        ..FsckOptions::default()
    };
    let r = fsck::check_and_repair(&mut img.media, &opts).unwrap();
    let text = fsck::text(&r, "img");
    assert_eq!(r.exit_code, exit::CORRECTED, "{text}");
    let fixed: Vec<u64> = r.repaired.iter().map(|d| d.repair.to).collect();
    assert_eq!(fixed, [layout::cache_info_off(1), gen], "{text}");
    assert_eq!(img.media.bytes(gen, 16), good);
    assert!(r.findings.repairs().is_empty(), "{text}");
    let again = report(&img.media, BACKING);
    assert_eq!(
        again.exit_code,
        exit::CLEAN,
        "{}",
        fsck::text(&again, "img")
    );
}
