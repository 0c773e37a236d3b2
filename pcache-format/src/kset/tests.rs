use super::*;
use crate::layout::SEG_DATA_SIZE;
use proptest::prelude::*;

const BOUNDS: KeyBounds = KeyBounds {
    backing_size: 1 << 40,
    n_segs: 63,
};

fn key(off: u64, len: u32, seg: u32, seg_off: u32) -> Key {
    Key {
        off,
        len,
        flags: 0,
        pos: CachePos::new(seg, seg_off),
        seg_gen: 0,
        data_crc: 0,
    }
}

/// D.5: the LAST kset vector.
#[test]
fn last_kset_vector() {
    let b = encode_last_kset(1);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(hex, "511c1884010000001a4f164ea69468670100000000000000");
    assert_eq!(
        read_kset(&b, SEG_DATA_SIZE, 2, 0),
        Ok(KsetRead::Last { next: 1 })
    );
    // A link outside the cache fails hard (7.x).
    assert!(read_kset(&b, SEG_DATA_SIZE, 1, 0).is_err());
}

/// D.5: a normal kset with one key.
#[test]
fn one_key_kset_vector() {
    let mut k = KsetBuf::new();
    assert!(k.push(&key(4096, 4096, 1, 0).to_raw()));
    let bytes = k.seal().to_vec();
    assert_eq!(bytes.len(), 64);
    assert_eq!(&bytes[..4], &0xD0EE_3C16u32.to_le_bytes());
    let KsetRead::Keys { keys, size } = read_kset(&bytes, SEG_DATA_SIZE, 2, 0).unwrap() else {
        panic!("not a normal kset")
    };
    assert_eq!(size, 64);
    assert_eq!(Key::decode(&keys[0], &BOUNDS, 0), Ok(key(4096, 4096, 1, 0)));
}

#[test]
fn end_of_log_cases() {
    assert_eq!(
        read_kset(&[0; 24], SEG_DATA_SIZE, 2, 0),
        Ok(KsetRead::End(LogEnd::BadMagic))
    );
    assert_eq!(
        read_kset(&[0; 10], SEG_DATA_SIZE, 2, 0),
        Ok(KsetRead::End(LogEnd::NoRoom))
    );
    let b = encode_last_kset(1);
    assert_eq!(read_kset(&b, 23, 2, 0), Ok(KsetRead::End(LogEnd::NoRoom)));
    // key_num > 128 is the end of the log.
    let mut b = encode_last_kset(129);
    b[16] = 0;
    assert_eq!(
        read_kset(&b, SEG_DATA_SIZE, 2, 0),
        Ok(KsetRead::End(LogEnd::TooManyKeys(129)))
    );
    // A full kset that overruns its segment fails hard.
    let mut k = KsetBuf::new();
    for i in 0..128u32 {
        assert!(k.push(&key(u64::from(i) * 512, 512, 0, 0).to_raw()));
    }
    assert!(!k.push(&key(0, 512, 0, 0).to_raw()), "129th key refused");
    let bytes = k.seal().to_vec();
    assert_eq!(bytes.len(), 5144);
    assert!(matches!(
        read_kset(&bytes, 5144, 2, 0),
        Ok(KsetRead::Keys { .. })
    ));
    assert!(read_kset(&bytes, 5143, 2, 0).is_err());
}

#[test]
fn kset_buf_pop_and_clear() {
    let mut k = KsetBuf::new();
    assert!(k.pop().is_none());
    k.push(&key(0, 512, 0, 0).to_raw());
    k.push(&key(512, 512, 0, 512).to_raw());
    assert_eq!(k.pop(), Some(key(512, 512, 0, 512).to_raw()));
    assert_eq!(k.keys(), &[key(0, 512, 0, 0).to_raw()]);
    k.clear();
    assert!(k.is_empty());
    assert_eq!(k.size(), 24);
}

#[test]
fn key_bounds() {
    let ok = key((4 << 20) - 4096, 4096, 62, SEG_DATA_SIZE - 4096);
    assert_eq!(Key::decode(&ok.to_raw(), &BOUNDS, 0), Ok(ok));
    let bad = [
        key(0, 0, 0, 0),                      // empty
        key((4 << 20) - 512, 1024, 0, 0),     // crosses 4 MiB
        key(0, 512, 63, 0),                   // segment out of range
        key(0, 1024, 0, SEG_DATA_SIZE - 512), // overruns the data area
        key(u64::MAX - 100, 512, 0, 0),       // offset overflow
        key((1 << 40) - 512, 1024, 0, 0),     // beyond the backing device
        key(100, 512, 0, 0),                  // offset not sector aligned
        key(0, 100, 0, 0),                    // length not sector aligned
        key(0, 512, 0, 100),                  // data position not sector aligned
    ];
    for k in bad {
        assert!(Key::decode(&k.to_raw(), &BOUNDS, 0).is_err(), "{k:?}");
    }
    let mut clean = ok;
    clean.flags = KEY_FLAG_CLEAN | KEY_FLAG_EMPTY;
    assert_eq!(
        clean.to_raw().flags.get(),
        KEY_FLAG_CLEAN,
        "EMPTY is never persisted"
    );
}

/// `decode_kernel` applies the kernel's checks only: a key crossing a 4 MiB boundary passes
/// it and fails `decode`; everything else fails both.
#[test]
fn decode_kernel_skips_only_the_4mib_rule() {
    let crossing = key((4 << 20) - 512, 1024, 0, 0);
    assert_eq!(
        Key::decode_kernel(&crossing.to_raw(), &BOUNDS, 0),
        Ok(crossing)
    );
    assert!(Key::decode(&crossing.to_raw(), &BOUNDS, 0).is_err());
    // The kernel does not check sector alignment either; pcache does.
    let odd = key(100, 512, 0, 0);
    assert_eq!(Key::decode_kernel(&odd.to_raw(), &BOUNDS, 0), Ok(odd));
    assert!(matches!(
        Key::decode(&odd.to_raw(), &BOUNDS, 0).map_err(|e| e.reason),
        Err(crate::Reason::Misaligned {
            field: "off",
            value: 100,
            align: 512
        })
    ));
    for k in [key(0, 0, 0, 0), key(0, 512, 63, 0)] {
        assert!(
            Key::decode_kernel(&k.to_raw(), &BOUNDS, 0).is_err(),
            "{k:?}"
        );
    }
}

fn any_key() -> impl Strategy<Value = Key> {
    (
        0u64..(1 << 28),
        1u32..=8,
        0u32..63,
        0u32..32000,
        any::<u64>(),
        any::<u32>(),
        0u32..4,
    )
        .prop_map(
            |(sector, sectors, seg, seg_sector, seg_gen, data_crc, flags)| {
                let off = sector * 512;
                let len = (sectors * 512)
                    .min(u32::try_from(crate::layout::bytes_to_subtree_end(off)).unwrap());
                Key {
                    off,
                    len,
                    flags: flags & KEY_FLAG_CLEAN,
                    pos: CachePos::new(seg, seg_sector * 512),
                    seg_gen,
                    data_crc,
                }
            },
        )
}

proptest! {
    #[test]
    fn kset_round_trip_and_flips(keys in proptest::collection::vec(any_key(), 1..12)) {
        let mut k = KsetBuf::new();
        for key in &keys {
            prop_assert!(k.push(&key.to_raw()));
        }
        let bytes = k.seal().to_vec();
        let KsetRead::Keys { keys: raw, size } = read_kset(&bytes, SEG_DATA_SIZE, 63, 0).unwrap() else {
            panic!("not a normal kset")
        };
        prop_assert_eq!(size as usize, bytes.len());
        let decoded: Vec<Key> = raw.iter().map(|r| Key::decode(r, &BOUNDS, 0).unwrap()).collect();
        prop_assert_eq!(&decoded, &keys);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let r = read_kset(&b, SEG_DATA_SIZE, 63, 0);
            prop_assert!(
                !matches!(r, Ok(KsetRead::Keys { .. } | KsetRead::Last { .. })),
                "flip of bit {} accepted: {:?}", bit, r
            );
        }
    }

    #[test]
    fn last_round_trip(next in 0u32..1000) {
        let b = encode_last_kset(next);
        prop_assert_eq!(read_kset(&b, 24, 1000, 0), Ok(KsetRead::Last { next }));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000), room in any::<u32>(), n_segs in any::<u32>(), backing in any::<u64>()) {
        if let Ok(KsetRead::Keys { keys, .. }) = read_kset(&bytes, room, n_segs, 0) {
            for k in keys {
                let _ = Key::decode(k, &KeyBounds { backing_size: backing, n_segs }, 0);
            }
        }
        if bytes.len() >= 40 {
            let raw = RawKey::read_from_prefix(&bytes).unwrap().0;
            let _ = Key::decode(&raw, &KeyBounds { backing_size: backing, n_segs }, 0);
        }
    }

    /// Random headers with a valid magic and CRC: whatever key_num and flags say, the reader
    /// neither panics nor reads past `room`.
    #[test]
    fn forged_headers(key_num in any::<u32>(), flags in any::<u64>(), room in 0u32..6000, n_segs in 1u32..100) {
        let mut buf = vec![0u8; 5144];
        buf[4..8].copy_from_slice(&key_num.to_le_bytes());
        buf[8..16].copy_from_slice(&KSET_MAGIC.to_le_bytes());
        buf[16..24].copy_from_slice(&flags.to_le_bytes());
        let size = if flags & 1 != 0 { 24 } else { crate::layout::kset_size(key_num.min(128)) as usize };
        let crc = pcache_crc(&buf[4..size]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        match read_kset(&buf, room, n_segs, 0) {
            Ok(KsetRead::Keys { size, .. }) => prop_assert!(size <= room),
            Ok(KsetRead::Last { next }) => prop_assert!(next < n_segs),
            _ => {}
        }
    }
}
