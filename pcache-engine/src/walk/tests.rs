use super::*;
use crate::media::MemMedia;
use pcache_format::kset::{encode_last_kset, KsetBuf};

const N_SEGS: u32 = 3;

fn media() -> MemMedia {
    MemMedia::new(layout::segment_base(N_SEGS))
}

fn key(off: u64, seg: u32, seg_off: u32, gen: u64) -> Key {
    Key {
        off,
        len: 4096,
        flags: 0,
        pos: CachePos::new(seg, seg_off),
        seg_gen: gen,
        data_crc: 0,
    }
}

/// Writes a kset of `keys` at `pos` (identity chain); returns its size.
fn put_kset(m: &MemMedia, pos: CachePos, keys: &[Key]) -> u32 {
    let mut b = KsetBuf::default();
    for k in keys {
        assert!(b.push(&k.to_raw()));
    }
    let bytes = b.seal().to_vec();
    let at = layout::data_area_off(pos.seg) + u64::from(pos.off);
    m.write(at, &bytes).unwrap();
    u32::try_from(bytes.len()).unwrap()
}

fn put_last(m: &MemMedia, pos: CachePos, next: u32) {
    let at = layout::data_area_off(pos.seg) + u64::from(pos.off);
    m.write(at, &encode_last_kset(next)).unwrap();
}

/// A short description of every item of a walk, and how it ended.
fn walk(m: &MemMedia, start: CachePos) -> (Vec<String>, Option<String>) {
    let chain = SegmentChain::identity(N_SEGS);
    let mut w = LogWalker::new(m, &chain, start);
    let mut items = Vec::new();
    loop {
        match w.next_item() {
            Ok(Some(WalkItem::Kset {
                pos,
                keys,
                size,
                at,
            })) => {
                assert_eq!(Some(at), chain.abs(pos));
                assert_eq!(size, 24 + 40 * keys.len() as u32);
                items.push(format!("kset {pos} {}", keys.len()));
            }
            Ok(Some(WalkItem::Last { pos, next, .. })) => items.push(format!("last {pos} {next}")),
            Ok(Some(WalkItem::End {
                pos, end, header, ..
            })) => {
                let zero = header.iter().all(|&b| b == 0);
                items.push(format!("end {pos} {end:?} zero={zero}"));
            }
            Ok(None) => return (items, None),
            Err(e) => return (items, Some(format!("{e}"))),
        }
    }
}

#[test]
fn a_log_across_a_last_link_is_walked_in_order() {
    let m = media();
    let a = put_kset(
        &m,
        CachePos::new(0, 0),
        &[key(0, 1, 0, 0), key(8192, 1, 4096, 0)],
    );
    let b = put_kset(&m, CachePos::new(0, a), &[key(4096, 1, 8192, 0)]);
    put_last(&m, CachePos::new(0, a + b), 2);
    put_kset(&m, CachePos::new(2, 0), &[key(0, 1, 12288, 0)]);
    let (items, err) = walk(&m, CachePos::new(0, 0));
    assert_eq!(err, None);
    assert_eq!(
        items,
        [
            "kset 0:0 2".to_owned(),
            format!("kset 0:{a} 1"),
            format!("last 0:{} 2", a + b),
            "kset 2:0 1".into(),
            "end 2:64 BadMagic zero=true".into(),
        ]
    );
}

#[test]
fn a_bad_crc_ends_the_log_there() {
    let m = media();
    let a = put_kset(&m, CachePos::new(0, 0), &[key(0, 1, 0, 0)]);
    put_kset(&m, CachePos::new(0, a), &[key(4096, 1, 4096, 0)]);
    // A flipped bit in the second kset's key.
    let at = layout::data_area_off(0) + u64::from(a) + 30;
    let mut byte = [0];
    m.read(at, &mut byte).unwrap();
    m.write(at, &[byte[0] ^ 2]).unwrap();
    let (items, err) = walk(&m, CachePos::new(0, 0));
    assert_eq!(err, None);
    assert_eq!(
        items.last().unwrap(),
        &format!("end 0:{a} BadCrc zero=false")
    );
    assert_eq!(items.len(), 2);
}

#[test]
fn a_loop_of_last_links_is_a_cycle_error() {
    let m = media();
    put_last(&m, CachePos::new(0, 0), 1);
    put_last(&m, CachePos::new(1, 0), 0);
    let (items, err) = walk(&m, CachePos::new(0, 0));
    assert_eq!(items, ["last 0:0 1"]);
    let err = err.unwrap();
    assert!(err.contains("loops") && err.contains("segment 0"), "{err}");
}

#[test]
fn the_start_segment_may_be_entered_once_after_starting_in_its_middle() {
    // key_tail in the middle of segment 0; the log wraps through 1 back to 0's start.
    let m = media();
    put_last(&m, CachePos::new(0, 4096), 1);
    put_last(&m, CachePos::new(1, 0), 0);
    put_kset(&m, CachePos::new(0, 0), &[key(0, 2, 0, 0)]);
    let (items, err) = walk(&m, CachePos::new(0, 4096));
    assert_eq!(err, None);
    assert_eq!(
        items,
        [
            "last 0:4096 1",
            "last 1:0 0",
            "kset 0:0 1",
            "end 0:64 BadMagic zero=true"
        ]
    );
}

#[test]
fn a_link_out_of_range_and_an_overrun_fail_the_walk() {
    let m = media();
    put_last(&m, CachePos::new(0, 0), N_SEGS);
    let (_, err) = walk(&m, CachePos::new(0, 0));
    assert!(err.unwrap().contains("kset at 0:0"));
    // A full kset that does not fit before the end of the segment.
    let m = media();
    let keys: Vec<Key> = (0..128).map(|i| key(i * 4096, 1, 0, 0)).collect();
    let near_end = SEG_DATA_SIZE - 1000;
    let mut b = KsetBuf::default();
    for k in &keys {
        b.push(&k.to_raw());
    }
    let bytes = b.seal().to_vec();
    m.write(
        layout::data_area_off(0) + u64::from(near_end),
        &bytes[..1000],
    )
    .unwrap();
    let (items, err) = walk(&m, CachePos::new(0, near_end));
    assert!(items.is_empty(), "{items:?}");
    let err = err.unwrap();
    assert!(err.contains(&format!("kset at 0:{near_end}")), "{err}");
    // A position outside the cache.
    let (_, err) = walk(&m, CachePos::new(N_SEGS, 0));
    assert!(err.unwrap().contains("outside the cache"));
}

#[test]
fn no_room_for_a_header_ends_the_log() {
    let m = media();
    let (items, err) = walk(&m, CachePos::new(0, SEG_DATA_SIZE - 10));
    assert_eq!(err, None);
    assert_eq!(
        items,
        [format!("end 0:{} NoRoom zero=true", SEG_DATA_SIZE - 10)]
    );
}

#[test]
fn the_key_order_decides_a_stale_key_with_bad_data() {
    let m = media();
    let chain = SegmentChain::identity(N_SEGS);
    let gens = [0_u64, 5, 0];
    let gen = |s: u32| gens[s as usize];
    let mut k = key(0, 1, 0, 4);
    k.data_crc = 0xdead_beef; // zeros do not have this CRC
    let raw = k.to_raw();
    let cx = |order, data| KeyContext::<MemMedia> {
        bounds: KeyBounds {
            backing_size: 1 << 30,
            n_segs: N_SEGS,
        },
        gen: &gen,
        data,
        order,
        kernel_decode: false,
    };
    let with_data = Some((&m, &chain));
    let v = judge_key(&raw, 0, 0, &cx(KeyOrder::Pcache, with_data)).unwrap();
    assert_eq!(v, KeyVerdict::Stale(k));
    let v = judge_key(&raw, 0, 0, &cx(KeyOrder::Kernel, with_data)).unwrap();
    assert!(
        matches!(v, KeyVerdict::BadCrc { found, .. } if found == pcache_format::pcache_crc(&[0; 4096]))
    );
    // Without data CRCs the order does not matter.
    let v = judge_key(&raw, 0, 0, &cx(KeyOrder::Kernel, None)).unwrap();
    assert_eq!(v, KeyVerdict::Stale(k));
    // A current generation and matching data: live.
    let mut live = key(0, 2, 0, 0);
    live.data_crc = pcache_format::pcache_crc(&[0; 4096]);
    let v = judge_key(&live.to_raw(), 0, 0, &cx(KeyOrder::Kernel, with_data)).unwrap();
    assert_eq!(v, KeyVerdict::Live(live));
    // Decoding comes first: a key of length 0 is invalid whatever else.
    let mut bad = k.to_raw();
    bad.len = 0.into();
    let v = judge_key(&bad, 100, 3, &cx(KeyOrder::Pcache, with_data)).unwrap();
    match v {
        KeyVerdict::Invalid(e) => assert_eq!(e.offset, key_offset(100, 3)),
        other => panic!("{other:?}"),
    }
    // A key crossing a 4 MiB boundary: the kernel's decode takes it, pcache's does not.
    let cross = key((4 << 20) - 512, 2, 0, 0).to_raw();
    let mut kx = cx(KeyOrder::Pcache, None);
    assert!(matches!(
        judge_key(&cross, 0, 0, &kx).unwrap(),
        KeyVerdict::Invalid(_)
    ));
    kx.kernel_decode = true;
    assert!(matches!(
        judge_key(&cross, 0, 0, &kx).unwrap(),
        KeyVerdict::Live(_)
    ));
}

#[test]
fn facts_gathered_in_the_kernel_order_give_both_verdicts() {
    let m = media();
    let chain = SegmentChain::identity(N_SEGS);
    let gen = |s: u32| if s == 1 { 5 } else { 0 };
    let mut k = key(0, 1, 0, 4);
    k.data_crc = 1;
    let cx = KeyContext {
        bounds: KeyBounds {
            backing_size: 1 << 30,
            n_segs: N_SEGS,
        },
        gen: &gen,
        data: Some((&m, &chain)),
        order: KeyOrder::Kernel,
        kernel_decode: true,
    };
    let facts = examine_key(&k.to_raw(), 0, 0, &cx).unwrap().unwrap();
    assert!(facts.is_stale() && facts.crc_checked);
    assert!(facts.verdict(KeyOrder::Kernel).fails());
    assert_eq!(facts.verdict(KeyOrder::Pcache), KeyVerdict::Stale(k));
    // In pcache's order the stale key's data is not even read.
    let cx = KeyContext {
        order: KeyOrder::Pcache,
        ..cx
    };
    let facts = examine_key(&k.to_raw(), 0, 0, &cx).unwrap().unwrap();
    assert!(!facts.crc_checked);
}
