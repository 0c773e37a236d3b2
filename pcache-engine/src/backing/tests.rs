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

fn backing_file(dir: &tempfile::TempDir, len: u64) -> std::path::PathBuf {
    let path = dir.path().join("backing.img");
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    path
}

#[test]
fn uring_backing() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 1 << 20);
    for direct in [false, true] {
        let b = UringBacking::open_with(&path, false, direct).unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert_eq!(
            b.file().is_direct(),
            FileBacking::open_with(&path, false, direct)
                .unwrap()
                .is_direct()
        );
        exercise(&b);
        exercise_batches(&b);
    }
    let ro = UringBacking::open(&path, true).unwrap();
    assert!(ro.write_at(0, b"x").is_err());
    let e = ro.write_many(&[(0, b"x"), (4096, b"y")]).unwrap_err();
    assert_eq!(e.off, 0, "{e}");
    assert!(UringBacking::open(dir.path().join("missing"), true).is_err());
}

#[test]
fn file_and_mem_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 1 << 20);
    exercise_batches(&FileBacking::open(&path, false).unwrap());
    exercise_batches(&MemBacking::new(1 << 20));
}

/// A 4096-aligned buffer of `len` bytes inside `v` (so an aligned transfer can use
/// O_DIRECT).
fn aligned(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    v.resize(len + 4096, 0);
    let at = v.as_ptr().align_offset(4096);
    &mut v[at..at + len]
}

/// Batches on a backing of at least 1 MiB: aligned and unaligned, short lengths, an error
/// that names the offset.
fn exercise_batches(b: &dyn Backing) {
    let size = b.size();
    let mut va = Vec::new();
    let a = aligned(&mut va, 8192);
    a.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i % 253) as u8);
    let a = &*a;
    let odd: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8 + 1).collect();
    b.write_many(&[
        (8192, a),
        (3, &odd),
        (65536 + 512, &odd[..512]),
        (20000, &[]),
    ])
    .unwrap();
    let mut buf = vec![0u8; 8192];
    b.read_at(8192, &mut buf).unwrap();
    assert_eq!(&buf, a);
    let mut small = vec![0u8; 1000];
    b.read_at(3, &mut small).unwrap();
    assert_eq!(small, odd);
    b.read_at(65536 + 512, &mut small[..512]).unwrap();
    assert_eq!(&small[..512], &odd[..512]);
    b.write_many(&[]).unwrap();
    // A write past the end fails and names its offset.
    let e = b
        .write_many(&[(0, &odd[..10]), (size - 4, &odd[..10])])
        .unwrap_err();
    assert_eq!((e.index, e.off, e.len), (1, size - 4, 10));
    let io: io::Error = e.into();
    assert!(io.to_string().contains(&format!("{:#x}", size - 4)), "{io}");
    let e = b.write_many(&[(u64::MAX, &odd[..1])]).unwrap_err();
    assert_eq!(e.off, u64::MAX);
    // ... also inside a run back to back.
    let e = b
        .write_many(&[
            (size - 1000, &odd[..500]),
            (size - 500, &odd[..500]),
            (size, &odd[..10]),
        ])
        .unwrap_err();
    assert_eq!((e.index, e.off, e.len), (2, size, 10));
}

/// The model: random batches of non-overlapping writes (sector-granular offsets and
/// lengths, aligned and not) on the backing and on a `MemBacking`; after each batch (and
/// at the end, through a fresh open of the file) both read the same.
fn random_batches(b: &dyn Backing, seed: u64) -> MemBacking {
    let size = b.size();
    let model = MemBacking::new(size);
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut store = Vec::new();
    for round in 0..40 {
        let n = 1 + (next() % 200) as usize;
        // Non-overlapping: pick distinct 64 KiB slots, a random range inside each.
        let slots = size / 65536;
        let mut used = std::collections::BTreeSet::new();
        let mut ranges = Vec::new();
        if round % 2 == 1 {
            // A run back to back on the device from separate buffers (as writeback's
            // rounds are), aligned pieces and not, then a few more elsewhere.
            let mut off = (next() % (slots - 8)) * 65536;
            for _ in 0..1 + next() % 40 {
                let len = if next() % 2 == 0 {
                    4096 * (1 + next() % 4)
                } else {
                    512 * (1 + next() % 16)
                };
                ranges.push((off, len as usize));
                off += len;
            }
            let first = ranges[0].0 / 65536;
            for s in first..=(off - 1) / 65536 {
                used.insert(s);
            }
        }
        while ranges.len() < n.min(slots as usize) {
            let slot = next() % slots;
            if !used.insert(slot) {
                continue;
            }
            let (start, len) = if next() % 2 == 0 {
                // Aligned (O_DIRECT where available).
                (4096 * (next() % 8), 4096 * (1 + next() % 8))
            } else {
                (512 * (next() % 64), 512 * (1 + next() % 64))
            };
            let start = start.min(65536 - len);
            ranges.push((slot * 65536 + start, len as usize));
        }
        let total: usize = ranges.iter().map(|r| r.1.next_multiple_of(4096)).sum();
        store.resize(total + 4096, 0);
        let at = store.as_ptr().align_offset(4096);
        let mut free = &mut store[at..];
        let mut writes: Vec<(u64, &[u8])> = Vec::new();
        for &(off, len) in &ranges {
            let (buf, after) = std::mem::take(&mut free).split_at_mut(len.next_multiple_of(4096));
            free = after;
            let buf = &mut buf[..len];
            for x in buf.iter_mut() {
                *x = next() as u8;
            }
            writes.push((off, buf));
        }
        b.write_many(&writes).unwrap();
        model.write_many(&writes).unwrap();
        if round % 8 == 7 {
            b.flush().unwrap();
        }
        for &(off, len) in ranges.iter().take(5) {
            let mut got = vec![0u8; len];
            b.read_at(off, &mut got).unwrap();
            assert_eq!(got, model.to_vec(off, len), "round {round} at {off:#x}");
        }
    }
    let mut all = vec![0u8; usize::try_from(size).unwrap()];
    b.read_at(0, &mut all).unwrap();
    assert!(all == model.to_vec(0, all.len()), "seed {seed}");
    model
}

#[test]
fn uring_batches_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 8 << 20);
    for (seed, direct) in [(1u64, true), (2, false), (3, true)] {
        let model = {
            let b = UringBacking::open_with(&path, false, direct).unwrap();
            random_batches(&b, seed)
        };
        // What the file holds, read by an independent path.
        let disk = std::fs::read(&path).unwrap();
        assert!(disk == model.to_vec(0, disk.len()), "seed {seed}");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
    }
}

#[test]
fn file_batches_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 8 << 20);
    let b = FileBacking::open(&path, false).unwrap();
    random_batches(&b, 9);
}

/// Several threads write batches through one `UringBacking` at once (each takes its own
/// ring); every thread's data is there afterwards.
#[test]
fn uring_batches_from_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 8 << 20);
    let b = UringBacking::open(&path, false).unwrap();
    let threads = 6u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let b = &b;
            s.spawn(move || {
                for round in 0..20u64 {
                    let bufs: Vec<Vec<u8>> = (0..16u64)
                        .map(|i| vec![(t * 31 + round * 7 + i) as u8; 4096])
                        .collect();
                    let writes: Vec<(u64, &[u8])> = bufs
                        .iter()
                        .enumerate()
                        .map(|(i, v)| ((t * 16 + i as u64) * 4096, &v[..]))
                        .collect();
                    b.write_many(&writes).unwrap();
                }
            });
        }
    });
    let mut buf = vec![0u8; 4096];
    for t in 0..threads {
        for i in 0..16u64 {
            b.read_at((t * 16 + i) * 4096, &mut buf).unwrap();
            let want = (t * 31 + 19 * 7 + i) as u8;
            assert!(buf.iter().all(|&x| x == want), "thread {t} block {i}");
        }
    }
}

#[test]
fn open_best_picks_by_device() {
    // tmpfs (where the bench measured pwrite cheaper): a FileBacking.
    if let Ok(dir) = tempfile::tempdir_in("/dev/shm") {
        let path = backing_file(&dir, 1 << 20);
        let b = open_best(&path, false).unwrap();
        assert!(!b.describe().contains("io_uring"), "{}", b.describe());
        exercise(&*b);
    }
    // Without O_DIRECT: a FileBacking.
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, 1 << 20);
    assert!(!FileBacking::open_with(&path, false, false)
        .unwrap()
        .writes_async());
    let f = FileBacking::open(&path, false).unwrap();
    let b = open_best(&path, false).unwrap();
    assert_eq!(
        b.describe().contains("io_uring"),
        f.writes_async(),
        "{}",
        b.describe()
    );
    exercise(&*b);
    exercise_batches(&*b);
    // Read-only never needs batches.
    let ro = open_best(&path, true).unwrap();
    assert!(!ro.describe().contains("io_uring"));
    assert!(open_best(dir.path().join("missing"), false).is_err());
}

/// The engine writes back through each backing kind (batches of a kset's extents, large
/// ksets in several batches): afterwards the backing holds exactly what a model of the
/// writes says, read back through an independent path.
#[test]
fn writeback_through_each_backing_matches_the_model() {
    use crate::{Cache, CacheConfig};
    use std::sync::Arc;

    const DEV: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = backing_file(&dir, DEV);
    for kind in ["file", "uring", "best"] {
        std::fs::File::create(&path).unwrap().set_len(DEV).unwrap();
        let backing: Arc<dyn Backing> = match kind {
            "file" => Arc::new(FileBacking::open(&path, false).unwrap()),
            "uring" => Arc::new(UringBacking::open(&path, false).unwrap()),
            _ => open_best(&path, false).unwrap(),
        };
        let media = crate::testing::formatted(512 << 20);
        let cfg = CacheConfig {
            background: false,
            ..CacheConfig::default()
        };
        let cache = Cache::open(Arc::new(media), backing.clone(), cfg).unwrap();
        let mut model = vec![0u8; DEV as usize];
        let mut rng = 0x1234_5678_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..600u64 {
            // Mostly small writes, some up to 1 MiB (ksets of more than 8 MiB).
            let sectors = if i % 5 == 0 {
                1 + next() % 2048
            } else {
                1 + next() % 16
            };
            let len = sectors * 512;
            let off = (next() % ((DEV - len) / 512)) * 512;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            cache.write(0, off, &data, false).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
            if i % 200 == 199 {
                cache.writeback_all().unwrap();
            }
        }
        cache.writeback_all().unwrap();
        assert!(cache.status().is_clean(), "{kind}");
        cache.close().unwrap();
        let disk = std::fs::read(&path).unwrap();
        assert!(disk == model, "{kind}: the backing differs from the model");
    }
}
