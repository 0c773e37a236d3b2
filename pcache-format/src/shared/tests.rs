use super::*;
use proptest::prelude::*;

const GIB: u64 = 1 << 30;

fn entry(name: &str, start: u64, len: u64) -> TableEntry {
    TableEntry {
        id: 0,
        name: name.into(),
        start,
        len,
        backing: BackingRecord {
            size: 10 * GIB,
            id: "serial:disk-1".into(),
            path: "/dev/vdb".into(),
        },
        created: 1_700_000_000,
    }
}

fn three() -> CacheTable {
    let mut t = CacheTable::empty([7; 16]);
    for (name, start) in [
        ("db", RANGES_OFF),
        ("logs", RANGES_OFF + GIB),
        ("web", 3 * GIB),
    ] {
        t = t.with_added(entry(name, start, GIB)).unwrap().0;
    }
    t
}

#[test]
fn superblock_round_trip_and_refusals() {
    let sb = SharedSuperblock {
        uuid: [3; 16],
        device_bytes: 8 * GIB,
    };
    let bytes = sb.encode();
    assert!(SharedSuperblock::has_magic(&bytes));
    assert_eq!(SharedSuperblock::parse(&bytes).unwrap(), sb);
    // The kernel's superblock is not a shared one, and vice versa: the magics differ.
    assert_ne!(SHARED_MAGIC, crate::record::PCACHE_MAGIC);
    let mut bad = bytes;
    bad[30] ^= 1;
    assert!(matches!(
        SharedSuperblock::parse(&bad).unwrap_err().reason,
        Reason::BadCrc { .. }
    ));
    assert!(SharedSuperblock::parse(&bytes[..40]).is_err());
    assert!(sb.check_device(8 * GIB).is_ok());
    assert!(sb.check_device(8 * GIB - 1).is_err());
}

#[test]
fn table_round_trip() {
    let t = three();
    assert_eq!(t.seq, 4);
    assert_eq!(t.next_id, 4);
    let ids: Vec<u32> = t.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    let bytes = t.encode();
    assert_eq!(bytes.len(), TABLE_HEADER_SIZE + 3 * ENTRY_SIZE);
    assert_eq!(CacheTable::parse(&bytes, TABLE_OFF).unwrap(), t);
    assert_eq!(t.find("logs").unwrap().id, 2);
    assert_eq!(t.find("3").unwrap().name, "web");
    assert!(t.find("4").is_none());
    assert!(t.find("nope").is_none());
}

#[test]
fn every_flipped_bit_is_refused() {
    let bytes = three().encode();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(CacheTable::parse(&b, TABLE_OFF).is_err(), "byte {i}");
    }
}

#[test]
fn rules_are_checked() {
    let t = three();
    // Overlap with the range before.
    assert!(t.with_added(entry("x", RANGES_OFF + GIB / 2, GIB)).is_err());
    // Misaligned, too small, inside the table area, duplicate name.
    assert!(t.with_added(entry("x", 5 * GIB + 4096, GIB)).is_err());
    assert!(t.with_added(entry("x", 5 * GIB, 256 << 20)).is_err());
    assert!(CacheTable::empty([0; 16])
        .with_added(entry("x", 0, GIB))
        .is_err());
    assert!(t.with_added(entry("db", 5 * GIB, GIB)).is_err());
    let mut bad = entry("x", 5 * GIB, GIB);
    bad.backing.size = 1000;
    assert!(t.with_added(bad).is_err());
    // The device end.
    assert!(t.check_device(TABLE_OFF, 4 * GIB).is_ok());
    let e = t.check_device(TABLE_OFF, 4 * GIB - 1).unwrap_err();
    assert_eq!(e.structure, Structure::TableEntry);
    // A name written past the rules by hand is refused by the parser.
    let mut raw = t.clone();
    raw.entries[1].name = "has space".into();
    assert!(CacheTable::parse(&raw.encode(), TABLE_OFF).is_err());
}

#[test]
fn names() {
    for ok in ["db", "a.b_c-d", "x1", "0a"] {
        assert_eq!(check_name(ok), Ok(()), "{ok}");
    }
    assert_eq!(check_name(""), Err(NameError::Empty));
    assert_eq!(check_name(&"a".repeat(64)), Err(NameError::TooLong));
    assert_eq!(check_name("a/b"), Err(NameError::BadChar));
    assert_eq!(check_name("-x"), Err(NameError::LeadingDash));
    assert_eq!(check_name("42"), Err(NameError::Numeric));
}

#[test]
fn placement_is_first_fit() {
    let t = three();
    // Gaps: [1 GiB + 2 MiB, 3 GiB) and [4 GiB, 8 GiB).
    let free = t.free(8 * GIB);
    assert_eq!(
        free,
        [
            (RANGES_OFF + 2 * GIB, 3 * GIB - RANGES_OFF - 2 * GIB),
            (4 * GIB, 4 * GIB)
        ]
    );
    assert_eq!(t.place(8 * GIB, 512 << 20), Some(RANGES_OFF + 2 * GIB));
    assert_eq!(t.place(8 * GIB, GIB), Some(4 * GIB));
    assert_eq!(t.place(8 * GIB, 5 * GIB), None);
    // A device size that is not a multiple of 2 MiB ends at the last whole 2 MiB.
    assert_eq!(
        CacheTable::empty([0; 16]).free(GIB + 4096),
        [(RANGES_OFF, GIB - RANGES_OFF)]
    );
    let removed = t.with_removed(2).unwrap();
    assert_eq!(removed.seq, t.seq + 1);
    assert_eq!(
        removed.place(8 * GIB, GIB + GIB / 2),
        Some(RANGES_OFF + GIB)
    );
    assert_eq!(removed.place(8 * GIB, 2 * GIB), Some(4 * GIB));
}

#[test]
fn latest_copy() {
    let old = three();
    let new = old.with_removed(1).unwrap();
    let (a, b) = (old.encode(), new.encode());
    let c = TableCopies::parse(&a, &b);
    assert_eq!(c.latest(), Ok(1));
    assert_eq!(c.table().unwrap(), &new);
    let c = TableCopies::parse(&b, &a);
    assert_eq!(c.latest(), Ok(0));
    let torn = vec![0xAB; 200];
    assert_eq!(TableCopies::parse(&torn, &a).table().unwrap(), &old);
    assert_eq!(
        TableCopies::parse(&torn, &torn)
            .latest()
            .unwrap_err()
            .reason,
        Reason::NoValidCopy
    );
    // Same seq, different content: refused, not guessed.
    let mut twin = new.clone();
    twin.seq = old.seq;
    assert!(TableCopies::parse(&a, &twin.encode()).latest().is_err());
}

#[test]
fn dm_linear_line() {
    let e = entry("db", 4 * GIB, GIB);
    assert_eq!(
        e.dm_linear("/dev/pmem0"),
        "0 2097152 linear /dev/pmem0 8388608"
    );
}

#[test]
fn long_strings_are_cut_at_a_character() {
    let mut e = entry("db", RANGES_OFF, GIB);
    e.backing.path = format!("/{}", "é".repeat(150));
    let t = CacheTable::empty([0; 16]).with_added(e).unwrap().0;
    let back = CacheTable::parse(&t.encode(), TABLE_OFF).unwrap();
    let p = &back.entries[0].backing.path;
    assert!(p.len() <= BACKING_PATH_MAX && p.starts_with("/é"), "{p}");
}

proptest! {
    /// Any bytes parse to an error or to a table that encodes back to the same bytes.
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(t) = CacheTable::parse(&bytes, TABLE_OFF) {
            let enc = t.encode();
            prop_assert_eq!(&bytes[..enc.len()], &enc[..]);
        }
        let _ = SharedSuperblock::parse(&bytes);
    }

    /// Tables built by adding and removing round-trip and keep the rules.
    #[test]
    fn built_tables_round_trip(ops in proptest::collection::vec((any::<bool>(), 1u64..4), 0..40)) {
        let dev = 64 * GIB;
        let mut t = CacheTable::empty([1; 16]);
        for (i, (add, gib)) in ops.into_iter().enumerate() {
            if add || t.entries.is_empty() {
                if let Some(start) = t.place(dev, gib * GIB) {
                    t = t.with_added(entry(&format!("c{i}"), start, gib * GIB)).unwrap().0;
                }
            } else {
                let id = t.entries[i % t.entries.len()].id;
                t = t.with_removed(id).unwrap();
            }
            prop_assert!(t.check_device(TABLE_OFF, dev).is_ok());
            prop_assert_eq!(CacheTable::parse(&t.encode(), TABLE_OFF).unwrap(), t.clone());
        }
    }
}
