//! Writes whose data the caller moves into the cache itself (`Cache::stage_direct`, the
//! zero-copy path of pcache-ublk on a pmem block device): against a model of the device,
//! across a reopen, mixed with ordinary writes, committed out of order, aborted; and what
//! cannot be staged is refused without taking anything.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, MemMedia};
use pcache_engine::testing::{self, write_superblock, SplitMix};
use pcache_engine::{Cache, CacheConfig, CacheMode, SeqCutoff};
use std::fs::File;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const DEV: u64 = 64 << 20;

fn block(path: &Path) -> Arc<dyn CacheMedia> {
    testing::block_media(path)
}

fn image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pmem.img");
    File::create(&path).unwrap().set_len(CACHE).unwrap();
    write_superblock(&*block(&path));
    path
}

fn cfg(data_crc: bool) -> CacheConfig {
    testing::quiet_config(data_crc)
}

/// A duplicate of the media's descriptor, as the daemon registers it on its ring.
fn device_of(fd: RawFd) -> File {
    // SAFETY: `fd` is the media's descriptor, open while the cache lives, which outlives
    // this borrow; we only duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    File::from(borrowed.try_clone_to_owned().unwrap())
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

fn check(c: &Cache, model: &[u8], what: &str) {
    testing::assert_reads_back(c, model, what);
}

#[test]
fn direct_writes_match_a_model_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let backing = Arc::new(MemBacking::new(DEV));
    let mut model = vec![0u8; DEV as usize];
    let c = Cache::open(block(&path), backing.clone(), cfg(false)).unwrap();
    let direct = c.direct().expect("a block media can be written directly");
    let dev = device_of(direct.fd.expect("a file has a descriptor"));
    let mut rng = SplitMix(7);
    let mut staged = 0;
    assert!(direct.block <= 4096);
    for i in 0..600u64 {
        let len = 4096 * (1 + rng.below(32)) as usize;
        let off = rng.below((DEV - len as u64) / 512) * 512;
        let bytes = data(i, len);
        let fua = rng.below(8) == 0;
        let q = (i % 2) as u32;
        match rng.below(3) {
            0 => c.write(q, off, &bytes, fua).unwrap(),
            how => match c.stage_direct(q, off, len).unwrap() {
                Some(w) => {
                    staged += 1;
                    let mut covered = 0;
                    for (k, p) in w.pieces().iter().enumerate() {
                        assert_eq!(p.at, covered, "pieces in order, without gaps");
                        covered += u64::from(p.len);
                        let piece = &bytes[p.at as usize..][..p.len as usize];
                        if how == 1 {
                            // What the daemon's WRITE_FIXED does, through the descriptor
                            // (`O_DIRECT`: from an aligned buffer, as a request's pages).
                            let mut buf = vec![0u8; piece.len() + 4096];
                            let skip = buf.as_ptr().align_offset(4096);
                            let aligned = &mut buf[skip..skip + piece.len()];
                            aligned.copy_from_slice(piece);
                            dev.write_all_at(aligned, p.dev_off).unwrap();
                            dev.sync_data().unwrap();
                        } else {
                            c.write_direct_piece(&w, k, piece).unwrap();
                        }
                    }
                    assert_eq!(covered, len as u64, "pieces cover the request");
                    c.commit_direct(w, fua).unwrap();
                }
                None => {
                    // Only a write across a 4 MiB region is refused here (every write
                    // is of whole 4 KiB blocks, so the cache space stays aligned).
                    assert_ne!(off >> 22, (off + len as u64 - 1) >> 22, "{off:#x}+{len:#x}");
                    c.write(q, off, &bytes, fua).unwrap();
                }
            },
        }
        model[off as usize..][..len].copy_from_slice(&bytes);
        if i % 97 == 0 {
            c.writeback_step().unwrap();
        }
    }
    assert!(staged > 300, "only {staged} writes staged");
    assert_eq!(
        c.status().direct_writes,
        staged,
        "status counts the committed ones"
    );
    assert_eq!(c.status().direct_aborts, 0);
    check(&c, &model, "written");
    c.flush().unwrap();
    c.close().unwrap();
    let c = Cache::open(block(&path), backing.clone(), cfg(false)).unwrap();
    check(&c, &model, "reopened");
    c.writeback_all().unwrap();
    let mut back = vec![0u8; DEV as usize];
    pcache_engine::backing::Backing::read_at(&*backing, 0, &mut back).unwrap();
    assert!(back == model, "the backing device after writeback");
    c.close().unwrap();
}

#[test]
fn the_last_commit_wins_and_an_abort_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let c = Cache::open(block(&path), Arc::new(MemBacking::new(DEV)), cfg(false)).unwrap();
    let fill = |byte: u8| vec![byte; 8192];
    c.write(0, 1 << 20, &fill(1), false).unwrap();
    let a = c.stage_direct(0, 1 << 20, 8192).unwrap().unwrap();
    let b = c.stage_direct(1, 1 << 20, 8192).unwrap().unwrap();
    let d = c.stage_direct(1, 1 << 20, 8192).unwrap().unwrap();
    for (w, byte) in [(&a, 2), (&b, 3), (&d, 4)] {
        for (k, p) in w.pieces().iter().enumerate() {
            c.write_direct_piece(w, k, &fill(byte)[..p.len as usize])
                .unwrap();
        }
    }
    let mut buf = vec![0; 8192];
    c.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, fill(1), "staged data is not visible before its commit");
    c.commit_direct(b, false).unwrap();
    c.commit_direct(a, true).unwrap();
    c.abort_direct(d);
    c.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, fill(2), "the write committed last wins");
    assert_eq!((c.status().direct_writes, c.status().direct_aborts), (2, 1));
    c.close().unwrap();
    let c = Cache::open(block(&path), Arc::new(MemBacking::new(DEV)), cfg(false));
    // The backing device was a fresh MemBacking: only the cache holds the data.
    let c = c.unwrap();
    c.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, fill(2), "after a reopen");
}

#[test]
fn dropped_staged_writes_give_their_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let c = Cache::open(block(&path), Arc::new(MemBacking::new(DEV)), cfg(false)).unwrap();
    // Four times the cache's size: leaked space would run out long before.
    for i in 0..((4 * CACHE) >> 20) {
        let w = c.stage_direct(0, (i % 4) << 20, 1 << 20).unwrap();
        assert!(
            w.is_some(),
            "no space left after {i} MiB staged and dropped"
        );
    }
    let s = c.status();
    assert_eq!(s.dirty_bytes, 0, "nothing was written");
    c.close().unwrap();
}

#[test]
fn what_cannot_be_staged_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    // Data CRCs need the bytes.
    let crc_dir = tempfile::tempdir().unwrap();
    let crc_path = image(crc_dir.path());
    let c = Cache::open(block(&crc_path), Arc::new(MemBacking::new(DEV)), cfg(true)).unwrap();
    assert!(c.stage_direct(0, 0, 4096).unwrap().is_none(), "data_crc");
    c.close().unwrap();
    let c = Cache::open(block(&path), Arc::new(MemBacking::new(DEV)), cfg(false)).unwrap();
    assert!(c.stage_direct(0, 0, 4096).unwrap().is_some(), "writeback");
    assert!(
        c.stage_direct(0, (4 << 20) - 4096, 8192).unwrap().is_none(),
        "across a 4 MiB region"
    );
    assert!(c.stage_direct(0, 0, 0).unwrap().is_none(), "empty");
    let block = c.direct().unwrap().block;
    if block > 512 {
        assert!(
            c.stage_direct(0, 0, 512).unwrap().is_none(),
            "part of a block"
        );
    }
    assert!(c.stage_direct(0, 100, 4096).is_err(), "unaligned");
    assert!(c.stage_direct(0, DEV, 4096).is_err(), "past the end");
    c.set_seq_cutoff(SeqCutoff {
        read: 0,
        write: 1 << 20,
    });
    assert!(c.stage_direct(0, 0, 4096).unwrap().is_none(), "seq cutoff");
    c.set_seq_cutoff(SeqCutoff::default());
    c.set_cache_mode(CacheMode::Writethrough).unwrap();
    assert!(
        c.stage_direct(0, 0, 4096).unwrap().is_none(),
        "writethrough"
    );
    c.close().unwrap();
    // A mapped media has no direct access.
    let mem: Arc<dyn CacheMedia> = Arc::new(MemMedia::new(CACHE));
    write_superblock(&*mem);
    let c = Cache::open(mem, Arc::new(MemBacking::new(DEV)), cfg(false)).unwrap();
    assert!(c.direct().is_none());
    assert!(
        c.stage_direct(0, 0, 4096).unwrap().is_none(),
        "memory media"
    );
    c.close().unwrap();
}
