use super::*;

fn exercise(b: &dyn Backing) {
    let size = b.size();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    b.write_at(4096, &data).unwrap();
    // An unaligned transfer goes through the buffered path.
    b.write_at(100, b"unaligned").unwrap();
    b.flush().unwrap();
    let mut buf = vec![0u8; 8192];
    b.read_at(4096, &mut buf).unwrap();
    assert_eq!(buf, data);
    let mut small = [0u8; 9];
    b.read_at(100, &mut small).unwrap();
    assert_eq!(&small, b"unaligned");
    b.write_zeroes(4096, 4096).unwrap();
    b.read_at(4096, &mut buf).unwrap();
    assert!(buf[..4096].iter().all(|&x| x == 0));
    assert_eq!(&buf[4096..], &data[4096..]);
    b.discard(8192, 4096).unwrap();
    assert!(b.read_at(size - 4096, &mut buf).is_err());
    assert!(b.write_at(size, b"x").is_err());
    assert!(b.write_at(u64::MAX, b"x").is_err());
}

#[test]
fn mem_backing() {
    let b = MemBacking::new(1 << 20);
    exercise(&b);
    assert_eq!(b.flushes(), 1);
    assert!(b.writes() >= 2);
}

#[test]
fn file_backing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    for direct in [false, true] {
        let b = FileBacking::open_with(&path, false, direct).unwrap();
        assert_eq!(b.size(), 1 << 20);
        exercise(&b);
    }
    let ro = FileBacking::open(&path, true).unwrap();
    assert!(ro.write_at(0, b"x").is_err());
    assert!(FileBacking::open(dir.path().join("missing"), true).is_err());
}
