//! The engine's side of the kernel's loader hardening (issue 17) that needs the engine
//! running, not just opening: the allocator hands out only the cache's own (initialised)
//! segments, and images of kernels 6.18.0 to 6.18.3 (cache_info at the wrong stride) are
//! loaded safely. Every check against a built image, fsck's and the open's, is in
//! pcache-tools/tests/hardening.rs; docs/design.md ("Hardening checks") lists them all.

use pcache_engine::backing::MemBacking;
use pcache_engine::format::layout::{self, SEG_DATA_SIZE};
use pcache_engine::format::record::{encode_meta, CacheInfo, Dual};
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::testing;
use pcache_engine::{Cache, CacheConfig, EngineError};
use std::sync::Arc;
use zerocopy::IntoBytes;

const CACHE: u64 = 512 << 20;
const MIB: u64 = 1 << 20;

fn cfg() -> CacheConfig {
    CacheConfig {
        background: false,
        ..CacheConfig::default()
    }
}

fn bytes(m: &MemMedia, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    m.read(off, &mut v).unwrap();
    v
}

/// The latest cache_info, its slot and seq.
fn cache_info(m: &MemMedia) -> (CacheInfo, usize, u8) {
    let at = [layout::cache_info_off(0), layout::cache_info_off(1)];
    let raw = [bytes(m, at[0], 24), bytes(m, at[1], 24)];
    let dual = Dual::<CacheInfo>::decode([&raw[0], &raw[1]], at);
    let slot = dual.latest_slot().expect("a valid cache_info");
    let v = dual.latest().unwrap();
    (v.value, slot, v.seq)
}

/// A cache formatted and activated by the engine, holding `mib` MiB written at 0.
fn activated(mib: u64) -> (Arc<MemMedia>, Arc<MemBacking>) {
    let media = Arc::new(testing::formatted(CACHE));
    let backing = Arc::new(MemBacking::new(1 << 30));
    let c = Cache::open(media.clone(), backing.clone(), cfg()).unwrap();
    for i in 0..mib {
        c.write(0, i * MIB, &vec![i as u8 + 1; MIB as usize], false)
            .unwrap();
    }
    c.flush().unwrap();
    c.close().unwrap();
    (media, backing)
}

/// With n_segs below seg_num, segments n_segs.. are formatted but not the cache's: the
/// kernel's 7.x fix "only hand out initialized cache segments". pcache's allocator is
/// bounded by the chain it loaded (n_segs segments, each with a valid seg_info): a cache
/// of 4 segments fills, reclaims and refills them, and never touches another.
#[test]
fn hardening_11_allocation_stays_in_n_segs() {
    let (media, backing) = activated(0);
    let (info, slot, seq) = cache_info(&media);
    let four = CacheInfo { n_segs: 4, ..info };
    media
        .write(
            layout::cache_info_off(1 - slot),
            encode_meta(&four, seq.wrapping_add(1)).as_bytes(),
        )
        .unwrap();
    let outside: Vec<(u64, Vec<u8>)> = (4..31)
        .map(|seg| {
            let at = layout::segment_base(seg);
            (at, bytes(&media, at, 12_288 + 4096))
        })
        .collect();
    let c = Cache::open(media.clone(), backing.clone(), cfg()).unwrap();
    assert_eq!(c.status().dmsetup_line().split(' ').nth(2), Some("4"));
    // Three data segments' worth, twice over: reclaimed and reused.
    let total = 2 * 3 * (u64::from(SEG_DATA_SIZE) / MIB);
    for i in 0..total {
        c.write(0, i * MIB, &vec![(i % 251) as u8 + 1; MIB as usize], false)
            .unwrap();
    }
    c.flush().unwrap();
    let mut buf = vec![0; MIB as usize];
    for i in [0, total / 2, total - 1] {
        c.read(0, i * MIB, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == (i % 251) as u8 + 1), "MiB {i}");
    }
    c.close().unwrap();
    for (at, before) in outside {
        assert!(
            bytes(&media, at, before.len()) == before,
            "segment at {at:#x} was touched"
        );
    }
}

/// A 6.18.3 kernel wrote every activation's cache_info at 8216 (8192 + sizeof), where no
/// kernel reads it: the kernel would format such a cache again. The engine refuses to
/// (read-only or not) and writes nothing; with a valid slot, the misplaced copy is
/// ignored, as every kernel ignores it, even when it is the newer one.
#[test]
fn hardening_old_618_stride() {
    let (media, backing) = activated(8);
    let (info, slot, seq) = cache_info(&media);
    let slot_bytes = bytes(&media, layout::cache_info_off(slot), 24);

    // Moved to 8216, both slots empty: refused, nothing written.
    media.write(layout::cache_info_off(slot), &[0; 24]).unwrap();
    media
        .write(layout::CACHE_INFO_OFF_618, &slot_bytes)
        .unwrap();
    let before = bytes(&media, 0, 64 << 10);
    for read_only in [true, false] {
        let e = Cache::open(
            media.clone(),
            backing.clone(),
            CacheConfig { read_only, ..cfg() },
        )
        .unwrap_err();
        assert!(
            matches!(e, EngineError::MisplacedCacheInfo { at: 8216, seq: s } if s == seq),
            "{e}"
        );
        assert!(e.to_string().contains("6.18.0 to 6.18.3"), "{e}");
    }
    assert!(bytes(&media, 0, 64 << 10) == before, "nothing written");

    // Back in its slot, with a newer copy at 8216 (a lost gc_percent message of
    // 6.18.0-6.18.2): the slot's settings, and the data.
    media
        .write(layout::cache_info_off(slot), &slot_bytes)
        .unwrap();
    let newer = CacheInfo {
        gc_percent: 20,
        ..info
    };
    media
        .write(
            layout::CACHE_INFO_OFF_618,
            encode_meta(&newer, seq.wrapping_add(5)).as_bytes(),
        )
        .unwrap();
    let c = Cache::open(media.clone(), backing, cfg()).unwrap();
    let line = c.status().dmsetup_line();
    assert!(line.contains(&format!(" {} ", info.gc_percent)), "{line}");
    let mut buf = vec![0; MIB as usize];
    c.read(0, 7 * MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 8));
    c.close().unwrap();
    assert_eq!(
        bytes(&media, layout::CACHE_INFO_OFF_618, 24),
        encode_meta(&newer, seq.wrapping_add(5)).as_bytes(),
        "pcache never writes at 8216"
    );
}
