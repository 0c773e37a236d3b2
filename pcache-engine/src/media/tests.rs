use super::*;
use crate::testing::CrashMedia;
use proptest::prelude::*;

#[test]
fn mem_media_round_trip_and_bounds() {
    let m = MemMedia::new(1 << 20);
    m.write(4090, b"hello world").unwrap();
    let mut buf = [0u8; 11];
    m.read(4090, &mut buf).unwrap();
    assert_eq!(&buf, b"hello world");
    m.zero(4092, 3).unwrap();
    m.read(4090, &mut buf).unwrap();
    assert_eq!(&buf, b"he\0\0\0 world");
    assert!(matches!(
        m.write((1 << 20) - 4, b"12345"),
        Err(MediaError::OutOfRange { .. })
    ));
    assert!(m.read(u64::MAX - 2, &mut buf).is_err());
    m.fence();
    assert_eq!(m.fences(), 1);
}

#[test]
fn file_media_persists_and_honours_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    {
        let m = FileMedia::open(&path, false).unwrap();
        assert_eq!(m.len(), 4 << 20);
        m.write(12_345, b"durable").unwrap();
        m.flush(12_345, 7);
        m.fence();
        m.check().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[12_345..12_352], b"durable");
    let ro = FileMedia::open(&path, true).unwrap();
    assert!(ro.is_read_only());
    let mut buf = [0u8; 7];
    ro.read(12_345, &mut buf).unwrap();
    assert_eq!(&buf, b"durable");
    assert!(ro.write(0, b"x").is_err());
    // DaxMedia falls back to a file mapping for regular files.
    let d = DaxMedia::open(&path, true).unwrap();
    d.read(12_345, &mut buf).unwrap();
    assert_eq!(&buf, b"durable");
    assert!(FileMedia::open(dir.path().join("missing"), true).is_err());
}

/// A file mapping whose file was truncated under it: reads past the new end fail with
/// `Poisoned` (SIGBUS caught) and the process goes on; reads before it are correct; a
/// read across the end fails at the end; so does `copy_checked` of viewed bytes. Through
/// `FileMedia` and `DaxMedia` (which maps a regular file as `FileMedia` does).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn reads_past_a_truncated_end_are_media_errors() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.img");
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let file = FileMedia::open(&path, false).unwrap();
    let dax = DaxMedia::open(&path, true).unwrap();
    // A multiple of any page size: the pages after it are gone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 * MIB)
        .unwrap();
    for m in [&file as &dyn CacheMedia, &dax] {
        for _ in 0..2 {
            let mut buf = vec![0; 64 << 10];
            let e = m.read(3 * MIB + 512, &mut buf).unwrap_err();
            assert!(
                matches!(e, MediaError::Poisoned { off, len, at }
                    if off == 3 * MIB + 512 && len == 64 << 10 && at == off),
                "{e:?}"
            );
            assert!(e.to_string().contains("machine check or SIGBUS"), "{e}");
            // Straddling the end: fails, at the end.
            let e = m.read(2 * MIB - 4096, &mut buf).unwrap_err();
            assert!(
                matches!(e, MediaError::Poisoned { at, .. } if at == 2 * MIB),
                "{e:?}"
            );
            // Before the end: correct.
            m.read(2 * MIB - (64 << 10), &mut buf).unwrap();
            let from = usize::try_from(2 * MIB).unwrap() - (64 << 10);
            assert_eq!(buf, data[from..from + (64 << 10)]);
            let mut byte = [0u8; 1];
            m.read(2 * MIB - 1, &mut byte).unwrap();
            assert_eq!(byte[0], data[data.len() / 2 - 1]);
            // Mapped bytes handed out by `view`, copied with `copy_checked`.
            m.view(2 * MIB - 4096, 8192, &mut |bytes| {
                let mut dst = vec![0; bytes.len()];
                assert_eq!(copy_checked(&mut dst, bytes), Err(4096));
                assert_eq!(copy_checked(&mut dst[..4096], &bytes[..4096]), Ok(()));
                assert_eq!(dst[..4096], data[from + (60 << 10)..from + (64 << 10)]);
                Ok(())
            })
            .unwrap();
        }
    }
}

/// The crash model: a store is in a crash image only once it was flushed and then
/// fenced; before that it is there only in a torn image, word by word.
#[test]
fn crash_media_durability_rules() {
    let m = CrashMedia::new(1 << 16);
    m.write(0, &[1; 8]).unwrap(); // never flushed
    m.write(64, &[2; 8]).unwrap();
    m.flush(64, 8); // flushed, fenced below
    m.fence();
    m.write(128, &[3; 8]).unwrap();
    m.flush(128, 8); // flushed, not fenced
    let img = m.crash_image(1, None);
    assert_eq!(img.to_vec(0, 8).unwrap(), [0; 8]);
    assert_eq!(img.to_vec(64, 8).unwrap(), [2; 8]);
    assert_eq!(img.to_vec(128, 8).unwrap(), [0; 8]);
    let before = m.crash_image(0, None);
    assert_eq!(before.to_vec(64, 8).unwrap(), [0; 8]);
    // Some seed includes the pending words.
    let any = (0..64).any(|s| m.crash_image(1, Some(s)).to_vec(128, 8).unwrap() == [3; 8]);
    assert!(any);
}

proptest! {
    /// The incremental replayer builds the same images as `crash_image`.
    #[test]
    fn replayer_matches_crash_image(ops in prop::collection::vec((0u64..2048, 1usize..200, 0u8..3), 1..60), seed in any::<u64>()) {
        let m = CrashMedia::new(4096);
        for (i, &(off, len, what)) in ops.iter().enumerate() {
            let len = len.min(4096 - off as usize);
            m.write(off, &vec![i as u8 + 1; len]).unwrap();
            if what >= 1 { m.flush(off, len as u64); }
            if what == 2 { m.fence(); }
        }
        let mut r = m.replayer();
        for k in 0..=m.events() {
            let want = m.crash_image(k, None).to_vec(0, 4096).unwrap();
            let img = r.image(k, None);
            let mut got = vec![0; 4096];
            img.read(0, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "fence {}", k);
            let torn = r.image(k, Some(seed));
            torn.read(0, &mut got).unwrap();
            // A torn image differs from the durable one only by stores issued so far.
            for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                let written = ops.iter().enumerate().any(|(j, &(off, len, _))| {
                    let len = len.min(4096 - off as usize);
                    (off as usize..off as usize + len).contains(&i) && g == j as u8 + 1
                });
                prop_assert!(g == w || written, "byte {} at fence {}", i, k);
            }
        }
    }
}

/// A page fault on a file's mapping reads the page faulted and none around it
/// (`MADV_RANDOM`). Without the advice the kernel reads the device's `read_ahead_kb`
/// around each fault (8 MiB on the test machine's disk): a scan of a cache's metadata, a
/// few records every 16 MiB, read half of a sparse 1 TiB cache file into the page cache
/// and took minutes (`pcache-tools/tests/limits.rs`).
#[test]
fn file_mapping_faults_read_no_pages_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let len: usize = 64 << 20;
    std::fs::File::create(&path)
        .unwrap()
        .set_len(len as u64)
        .unwrap();
    let m = FileMedia::open(&path, true).unwrap();
    let mut rec = [0u8; 16];
    m.read(32 << 20, &mut rec).unwrap();
    let page = usize::try_from(super::map::page_size()).unwrap();
    let mut resident = vec![0u8; len / page];
    // SAFETY: the range is the whole mapping, which `m` keeps mapped; `resident` has one
    // byte per page of it.
    let rc = unsafe { libc::mincore(m.map.at(0).cast(), len, resident.as_mut_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let read = resident.iter().filter(|&&v| v & 1 == 1).count();
    // The page itself (fault-around maps only pages already cached: none here).
    assert!(read <= 16, "{read} pages read for one record");
}
