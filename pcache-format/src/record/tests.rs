use super::*;
use crate::layout::CachePos;
use proptest::prelude::*;

fn le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// Full-record vectors of upstream-format.md D.5.
#[test]
fn record_vectors() {
    let si = encode_meta(&SegInfo::data(None), 1);
    assert_eq!(&si.as_bytes()[..4], &le(0xFC8D_25FE));
    let si = encode_meta(&SegInfo::data(Some(1)), 2);
    assert_eq!(&si.as_bytes()[..4], &le(0x3B66_8E31));
    let gen = encode_meta(&SegGen(0), 1);
    assert_eq!(&gen.as_bytes()[..4], &le(0x6EF5_DFB0));
    let pos = encode_meta(&TailPos(CachePos::new(0, 0)), 1);
    assert_eq!(&pos.as_bytes()[..4], &le(0x6EF5_DFB0));
    let ci = encode_meta(&CacheInfo::fresh(31, false, 70), 1);
    assert_eq!(&ci.as_bytes()[..4], &le(0xDDCA_FE6D));
    assert_eq!(CacheInfo::fresh(31, true, 70).flags(), 0x1183);
}

#[test]
fn garbage_version_and_res_are_covered_not_rejected() {
    // A tail record as a kernel may leave it: version/res from uninitialised stack.
    let mut raw = encode_meta(&TailPos(CachePos::new(3, 4096)), 9);
    raw.header.version = 0xAB;
    raw.header.res = 0xCDEF.into();
    assert!(
        decode_meta::<TailPos>(raw.as_bytes(), 0).is_err(),
        "CRC covers them"
    );
    let crc = pcache_crc(&raw.as_bytes()[4..]);
    raw.header.crc = crc.into();
    let v = decode_meta::<TailPos>(raw.as_bytes(), 0).unwrap();
    assert_eq!((v.seq, v.value.0), (9, CachePos::new(3, 4096)));
}

#[test]
fn superblock_checks() {
    let good = Superblock::new(31).encode();
    assert_eq!(Superblock::parse(&good), Ok(Superblock::new(31)));
    assert!(Superblock::parse(&good)
        .unwrap()
        .check_device(512 << 20)
        .is_ok());
    let e = Superblock::parse(&good)
        .unwrap()
        .check_device(20_480 + 31 * (16 << 20) - 1)
        .unwrap_err();
    assert!(matches!(
        e.reason,
        Reason::OutOfRange {
            value: 31,
            limit: 30,
            ..
        }
    ));
    assert!(Superblock::new(0).check_device(1 << 30).is_err());

    assert!(Superblock::is_unformatted(&[0; 24]));
    assert!(!Superblock::is_unformatted(&good));
    assert!(!Superblock::is_unformatted(&[0; 10]), "too short to say");
    assert!(matches!(
        Superblock::parse(&[0; 24]).unwrap_err().reason,
        Reason::BadMagic { found: 0 }
    ));
    assert!(matches!(
        Superblock::parse(&good[..20]).unwrap_err().reason,
        Reason::Truncated { need: 24, have: 20 }
    ));
    // Padding bytes are covered by the CRC.
    let mut padded = good;
    padded[21] = 1;
    assert!(matches!(
        Superblock::parse(&padded).unwrap_err().reason,
        Reason::BadCrc { .. }
    ));
    // ...and kept as read when valid.
    let sb = Superblock {
        flags: 0,
        seg_num: 31,
        pad: [1, 2, 3, 4],
    };
    assert_eq!(Superblock::parse(&sb.encode()), Ok(sb));
    // Big-endian images are refused after the CRC check.
    let be = Superblock {
        flags: SB_F_BIGENDIAN,
        seg_num: 31,
        pad: [0; 4],
    }
    .encode();
    assert_eq!(
        Superblock::parse(&be).unwrap_err().reason,
        Reason::BigEndian
    );
}

/// An independent statement of the kernel's rule: slot 1 is the latest iff it is valid and
/// either slot 0 is invalid or seq1 is 1..=127 steps ahead of seq0 (mod 256).
fn reference_latest(s0: Option<u8>, s1: Option<u8>) -> Option<usize> {
    match (s0, s1) {
        (None, None) => None,
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (Some(a), Some(b)) => {
            let ahead = (u16::from(b) + 256 - u16::from(a)) % 256;
            if (1..=127).contains(&ahead) {
                Some(1)
            } else {
                Some(0)
            }
        }
    }
}

#[test]
fn latest_slot_matches_reference_exhaustively() {
    let opts = |s: u8| [None, Some(s)];
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for s0 in opts(a) {
                for s1 in opts(b) {
                    assert_eq!(
                        select_latest([s0, s1]),
                        reference_latest(s0, s1),
                        "{s0:?} {s1:?}"
                    );
                }
            }
        }
    }
    // Spot checks of the traps: wrap-around, ties and exactly 128.
    assert_eq!(select_latest([Some(255), Some(0)]), Some(1));
    assert_eq!(select_latest([Some(0), Some(255)]), Some(0));
    assert_eq!(select_latest([Some(7), Some(7)]), Some(0));
    assert_eq!(select_latest([Some(0), Some(128)]), Some(0));
    assert_eq!(select_latest([Some(128), Some(0)]), Some(0));
}

#[test]
fn next_write_targets_the_other_slot() {
    assert_eq!(next_write(None), (1, 1));
    assert_eq!(next_write(Some((0, 4))), (1, 5));
    assert_eq!(next_write(Some((1, 255))), (0, 0));
    // The record written there becomes the latest.
    for seq in 0..=255u8 {
        for slot in 0..2 {
            let (to, s) = next_write(Some((slot, seq)));
            let mut seqs = [None, None];
            seqs[slot] = Some(seq);
            seqs[to] = Some(s);
            assert_eq!(select_latest(seqs), Some(to));
        }
    }
}

#[test]
fn dual_reports_each_copy() {
    let a = encode_meta(&SegGen(5), 10);
    let mut b = encode_meta(&SegGen(6), 11);
    b.gen = 99.into(); // corrupt slot 1
    let d = Dual::<SegGen>::decode([a.as_bytes(), b.as_bytes()], [100, 116]);
    assert!(matches!(
        d.slots[1],
        Slot::Invalid(FormatError { offset: 116, .. })
    ));
    assert_eq!(
        d.latest(),
        Some(&Versioned {
            seq: 10,
            value: SegGen(5)
        })
    );
    assert_eq!(d.next_write(), (1, 11));
    let d = Dual::<TailPos>::decode([&[0; 16], &[0; 16]], [0, 16]).relabel(Structure::DirtyTail);
    assert_eq!(d.latest(), None);
    assert!(matches!(
        d.slots[0],
        Slot::Invalid(FormatError {
            structure: Structure::DirtyTail,
            ..
        })
    ));
}

#[test]
fn tail_bounds() {
    let t = TailPos(CachePos::new(2, SEG_DATA_SIZE - 8));
    assert!(t.validate(3, Structure::KeyTail, 0).is_ok());
    assert!(t.validate(2, Structure::KeyTail, 0).is_err());
    assert!(TailPos(CachePos::new(0, SEG_DATA_SIZE))
        .validate(3, Structure::KeyTail, 0)
        .is_err());
}

#[test]
fn cache_info_checks() {
    let ci = CacheInfo::fresh(31, true, 70);
    assert!(ci.validate(31, 0).is_ok());
    assert!(ci.validate(30, 0).is_err());
    assert!(CacheInfo { seg_id: 31, ..ci }.validate(31, 0).is_err());
    assert!(CacheInfo { n_segs: 0, ..ci }.validate(31, 0).is_err());
    assert!(ci.lint().is_empty());
    assert!(ci.validate_pcache(0).is_ok());
    assert_eq!(
        CacheInfo {
            gc_percent: 127,
            cache_mode: 9,
            ..ci
        }
        .lint()
        .len(),
        1
    );
    let e = CacheInfo {
        gc_percent: 91,
        ..ci
    }
    .validate_pcache(0)
    .unwrap_err();
    assert!(matches!(e.reason, Reason::OutOfRange { value: 91, .. }));
    assert!(CacheInfo {
        unknown_flags: 1 << 20,
        ..ci
    }
    .validate_pcache(0)
    .is_err());
    // Every mode pcache knows is fine; the kernel keeps the bits as they are.
    for m in crate::CacheMode::ALL {
        assert!(
            CacheInfo {
                cache_mode: m.value(),
                ..ci
            }
            .lint()
            .is_empty(),
            "{m}"
        );
    }
}

fn any_cache_info() -> impl Strategy<Value = CacheInfo> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        0u8..16,
        0u8..128,
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(seg_id, n_segs, data_crc, init_done, cache_mode, gc_percent, unknown, reserved)| {
                CacheInfo {
                    seg_id,
                    n_segs,
                    data_crc,
                    init_done,
                    cache_mode,
                    gc_percent,
                    unknown_flags: unknown & !0x1FFF,
                    reserved,
                }
            },
        )
}

fn any_seg_info() -> impl Strategy<Value = SegInfo> {
    (any::<bool>(), 0u8..16, any::<u32>(), any::<u32>()).prop_map(
        |(has_next, seg_type, unknown, next_seg)| SegInfo {
            has_next,
            seg_type,
            unknown_flags: unknown & !0x1F,
            next_seg,
        },
    )
}

/// Every single-bit flip anywhere in an encoded record is rejected.
fn assert_flips_rejected<R: MetaRecord + core::fmt::Debug>(raw: &R::Raw) {
    let bytes = raw.as_bytes().to_vec();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            decode_meta::<R>(&b, 0).is_err(),
            "flip of bit {bit} accepted"
        );
    }
}

proptest! {
    #[test]
    fn cache_info_round_trip(ci in any_cache_info(), seq in any::<u8>()) {
        let raw = encode_meta(&ci, seq);
        prop_assert_eq!(decode_meta::<CacheInfo>(raw.as_bytes(), 0), Ok(Versioned { seq, value: ci }));
        assert_flips_rejected::<CacheInfo>(&raw);
    }

    #[test]
    fn seg_info_round_trip(si in any_seg_info(), seq in any::<u8>()) {
        let raw = encode_meta(&si, seq);
        prop_assert_eq!(decode_meta::<SegInfo>(raw.as_bytes(), 0), Ok(Versioned { seq, value: si }));
        assert_flips_rejected::<SegInfo>(&raw);
    }

    #[test]
    fn seg_gen_round_trip(gen in any::<u64>(), seq in any::<u8>()) {
        let raw = encode_meta(&SegGen(gen), seq);
        prop_assert_eq!(decode_meta::<SegGen>(raw.as_bytes(), 0), Ok(Versioned { seq, value: SegGen(gen) }));
        assert_flips_rejected::<SegGen>(&raw);
    }

    #[test]
    fn tail_round_trip(seg in any::<u32>(), off in any::<u32>(), seq in any::<u8>()) {
        let t = TailPos(CachePos::new(seg, off));
        let raw = encode_meta(&t, seq);
        prop_assert_eq!(decode_meta::<TailPos>(raw.as_bytes(), 0), Ok(Versioned { seq, value: t }));
        assert_flips_rejected::<TailPos>(&raw);
    }

    #[test]
    fn superblock_round_trip(seg_num in any::<u32>(), pad in any::<[u8; 4]>()) {
        let sb = Superblock { flags: 0, seg_num, pad };
        let bytes = sb.encode();
        prop_assert_eq!(Superblock::parse(&bytes), Ok(sb));
        for bit in 0..24 * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Superblock::parse(&b).is_err(), "flip of bit {} accepted", bit);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), dev in any::<u64>()) {
        if let Ok(sb) = Superblock::parse(&bytes) {
            let _ = sb.check_device(dev);
        }
        let _ = decode_meta::<CacheInfo>(&bytes, 0).map(|v| (v.value.validate(31, 0), v.value.lint()));
        let _ = decode_meta::<SegInfo>(&bytes, 0);
        let _ = decode_meta::<SegGen>(&bytes, 0);
        let _ = decode_meta::<TailPos>(&bytes, 0).map(|v| v.value.validate(7, Structure::KeyTail, 0));
        let _ = Dual::<TailPos>::decode([&bytes, &bytes], [0, 16]).next_write();
    }
}
