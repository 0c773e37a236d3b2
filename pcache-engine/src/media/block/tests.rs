use super::*;
use crate::testing::SplitMix;
use std::path::PathBuf;

const SIZE: u64 = 4 << 20;

/// A file of `SIZE` bytes in a fresh directory, as a `BlockMedia` (with `O_DIRECT` where
/// the directory's file system takes it).
fn media(dir: &tempfile::TempDir, direct: bool) -> (BlockMedia, PathBuf) {
    let path = dir.path().join("pmem.img");
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    let m = BlockMedia::open_with(&path, false, direct)
        .or_else(|_| BlockMedia::open_with(&path, false, false))
        .unwrap();
    (m, path)
}

/// Random reads and writes of every alignment, through every method, against a model.
#[test]
fn block_media_matches_a_model() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (m, path) = media(&dir, direct);
        let mut model = vec![0u8; SIZE as usize];
        let mut rng = SplitMix(7);
        for round in 0..600u64 {
            let len = match rng.below(4) {
                0 => 1 + rng.below(100),
                1 => 1 + rng.below(9000),
                2 => 4096 * (1 + rng.below(8)),
                _ => 512 * (1 + rng.below(40)),
            } as usize;
            let off = match rng.below(3) {
                0 => rng.below(SIZE - len as u64),
                1 => (rng.below(SIZE - len as u64) / 512) * 512,
                _ => (rng.below(SIZE - len as u64) / 4096) * 4096,
            };
            let r = off as usize..off as usize + len;
            match rng.below(6) {
                0 | 1 => {
                    let data: Vec<u8> = (0..len).map(|i| (round as u8) ^ (i as u8)).collect();
                    m.write(off, &data).unwrap();
                    model[r].copy_from_slice(&data);
                }
                2 => {
                    let fill = round as u8 | 1;
                    m.fill(off, len, &mut |dst| {
                        dst.fill(fill);
                        Ok(())
                    })
                    .unwrap();
                    model[r].fill(fill);
                }
                3 => {
                    m.zero(off, len as u64).unwrap();
                    model[r].fill(0);
                }
                4 => {
                    let mut seen = Vec::new();
                    m.view(off, len, &mut |b| {
                        seen.extend_from_slice(b);
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(seen, model[r], "view {off:#x}+{len:#x}");
                }
                _ => {
                    let mut buf = vec![0; len];
                    m.read(off, &mut buf).unwrap();
                    assert_eq!(buf, model[r], "read {off:#x}+{len:#x}");
                }
            }
        }
        let ranges = [(1u64, 10usize), (4096, 4096), (5000, 3000), (SIZE - 7, 7)];
        m.view_many(&ranges, &mut |views| {
            for (&(off, len), v) in ranges.iter().zip(views) {
                assert_eq!(*v, &model[off as usize..off as usize + len]);
            }
            Ok(())
        })
        .unwrap();
        m.fence();
        m.check().unwrap();
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), model, "direct {direct}");
    }
}

/// Unaligned writes of disjoint bytes that share blocks, from several threads at once:
/// the read-modify-write of one never loses the bytes of another.
#[test]
fn unaligned_writes_sharing_blocks_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = media(&dir, true);
    const THREADS: u64 = 4;
    const PIECE: u64 = 100;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let m = &m;
            s.spawn(move || {
                for round in 0..200u64 {
                    for k in 0..64u64 {
                        let off = (k * THREADS + t) * PIECE;
                        let byte = (t * 61 + round) as u8;
                        m.write(off, &[byte; PIECE as usize]).unwrap();
                    }
                }
            });
        }
    });
    let mut buf = vec![0; (64 * THREADS * PIECE) as usize];
    m.read(0, &mut buf).unwrap();
    for (i, piece) in buf.chunks(PIECE as usize).enumerate() {
        let t = i as u64 % THREADS;
        assert!(
            piece.iter().all(|&b| b == (t * 61 + 199) as u8),
            "piece {i} of thread {t}: {:?}",
            &piece[..4]
        );
    }
}

#[test]
fn bounds_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let (m, path) = media(&dir, true);
    assert_eq!(m.len(), SIZE);
    assert!(matches!(
        m.write(SIZE - 4, b"12345"),
        Err(MediaError::OutOfRange { .. })
    ));
    let mut buf = [0u8; 8];
    assert!(matches!(
        m.read(u64::MAX - 2, &mut buf),
        Err(MediaError::OutOfRange { .. })
    ));
    m.write(100, b"durable").unwrap();
    m.fence();
    drop(m);
    let ro = BlockMedia::open_with(&path, true, false).unwrap();
    assert!(ro.is_read_only());
    assert!(matches!(ro.write(0, b"x"), Err(MediaError::ReadOnly)));
    ro.read(100, &mut buf[..7]).unwrap();
    assert_eq!(&buf[..7], b"durable");
    assert!(
        ro.describe().contains("durable by RWF_DSYNC"),
        "{}",
        ro.describe()
    );
}

/// Writes go out with RWF_DSYNC, durable on completion: no fence syncs. Without it, a
/// fence syncs only when a write completed since the last sync began.
#[test]
fn a_fence_with_nothing_written_since_makes_no_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = media(&dir, true);
    m.write(0, &[1; 4096]).unwrap();
    m.write(4097, b"x").unwrap();
    m.fence();
    assert_eq!(m.syncs(), 0, "RWF_DSYNC writes");
    let m = m.without_dsync();
    m.fence();
    assert_eq!(m.syncs(), 0, "nothing written");
    m.write(0, &[1; 4096]).unwrap();
    m.fence();
    assert_eq!(m.syncs(), 1);
    m.fence();
    m.flush(0, 4096);
    m.fence();
    assert_eq!(m.syncs(), 1, "nothing written since");
    m.write(4097, b"x").unwrap();
    m.fence();
    assert_eq!(m.syncs(), 2, "an unaligned write");
    m.check().unwrap();
}
