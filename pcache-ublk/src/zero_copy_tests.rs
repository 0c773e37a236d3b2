//! The zero-copy state machine of a queue, against the real engine on a block media
//! (a file): the ring is played by the test, which writes each submitted piece through
//! the engine (`Cache::write_direct_piece`, what `WRITE_FIXED` does) and hands back its
//! completion.

use std::sync::Arc;

use libublk::io::UblkIOCtx;
use libublk::sys;
use pcache_engine::backing::MemBacking;
use pcache_engine::media::{BlockMedia, CacheMedia};
use pcache_engine::{testing, CacheConfig};

use super::{Finished, Start, ZeroCopy, PIECE_OP, ZERO_COPY_MIN};
use crate::engine::EngineTarget;
use crate::request::IoDesc;
use crate::target::Target;

const DEV: u64 = 64 << 20;

fn target(dir: &std::path::Path) -> EngineTarget {
    let path = dir.join("pmem.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let media: Arc<dyn CacheMedia> = Arc::new(
        BlockMedia::open(&path, false)
            .or_else(|_| BlockMedia::open_with(&path, false, false))
            .unwrap(),
    );
    testing::write_superblock(&*media);
    let cfg = CacheConfig {
        background: false,
        ..CacheConfig::default()
    };
    EngineTarget::open_on(media, Arc::new(MemBacking::new(DEV)), cfg, &path, &path).unwrap()
}

fn desc(op: u32, off: u64, len: u32) -> IoDesc {
    IoDesc {
        op_flags: op,
        nr_sectors: len / 512,
        start_sector: off / 512,
    }
}

/// Plays the ring for request `tag`: writes its pieces (`bytes`) and returns their
/// completions' user data and results.
fn land(t: &EngineTarget, zc: &ZeroCopy, tag: u16, bytes: &[u8]) -> Vec<(u64, i32)> {
    let w = zc.staged(tag).expect("in flight");
    let mut done = Vec::new();
    for (i, p) in w.pieces().iter().enumerate() {
        let piece = &bytes[p.at as usize..][..p.len as usize];
        t.cache().write_direct_piece(w, i, piece).unwrap();
        #[allow(clippy::cast_possible_truncation)]
        let data = UblkIOCtx::build_user_data(tag, PIECE_OP, i as u32, true);
        done.push((data, p.len as i32));
    }
    done
}

#[test]
fn writes_go_out_and_what_may_wait_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mut zc = ZeroCopy::new(0, 8);
    let sqes = std::cell::Cell::new(0);
    let mut submit = |_| sqes.set(sqes.get() + 1);
    let a = vec![0xa5u8; 64 << 10];
    assert_eq!(
        zc.start(
            &t,
            0,
            &desc(sys::UBLK_IO_OP_WRITE, 1 << 20, 64 << 10),
            &mut submit
        ),
        Start::Submitted
    );
    // A flush waits for the write in flight, a write after it waits behind it, a read
    // does not wait.
    assert_eq!(
        zc.start(&t, 1, &desc(sys::UBLK_IO_OP_FLUSH, 0, 0), &mut submit),
        Start::Deferred
    );
    assert_eq!(
        zc.start(
            &t,
            2,
            &desc(sys::UBLK_IO_OP_WRITE, 2 << 20, 32 << 10),
            &mut submit
        ),
        Start::Deferred
    );
    assert_eq!(
        zc.start(&t, 3, &desc(sys::UBLK_IO_OP_READ, 0, 4096), &mut submit),
        Start::Serve
    );
    assert_eq!(zc.ready(), None, "a write is in flight");
    let mut buf = vec![0u8; 64 << 10];
    let done = land(&t, &zc, 0, &a);
    t.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, vec![0; 64 << 10], "not visible before its commit");
    let mut last = Finished::Pending;
    for (data, res) in done {
        last = zc.piece_done(&t, 0, data, res);
    }
    assert_eq!(last, Finished::Done(64 << 10));
    t.read(0, 1 << 20, &mut buf).unwrap();
    assert_eq!(buf, a, "committed");
    // In the order they came: the flush, then the write (staged now).
    assert_eq!(zc.ready(), Some(1));
    assert_eq!(
        zc.resume(&t, 1, &desc(sys::UBLK_IO_OP_FLUSH, 0, 0), &mut submit),
        Start::Serve
    );
    assert_eq!(zc.ready(), Some(2));
    assert_eq!(
        zc.resume(
            &t,
            2,
            &desc(sys::UBLK_IO_OP_WRITE, 2 << 20, 32 << 10),
            &mut submit
        ),
        Start::Submitted
    );
    assert_eq!(zc.ready(), None);
    assert_eq!(zc.in_flight(), 1);
    assert!(sqes.get() >= 2, "{} pieces submitted", sqes.get());
}

#[test]
fn small_writes_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mut zc = ZeroCopy::new(0, 4);
    let mut submit = |_| panic!("nothing goes to the ring");
    #[allow(clippy::cast_possible_truncation)]
    let below = (ZERO_COPY_MIN - 4096) as u32;
    assert_eq!(
        zc.start(&t, 0, &desc(sys::UBLK_IO_OP_WRITE, 0, below), &mut submit),
        Start::Serve
    );
    assert_eq!(zc.in_flight(), 0);
}

#[test]
fn a_failed_piece_gives_the_space_back_and_the_request_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mut zc = ZeroCopy::new(0, 4);
    let mut submit = |_| {};
    const LEN: u32 = 32 << 10;
    let old = vec![7u8; LEN as usize];
    t.write(0, 4 << 20, &old, false).unwrap();
    assert_eq!(
        zc.start(
            &t,
            1,
            &desc(sys::UBLK_IO_OP_WRITE, 4 << 20, LEN),
            &mut submit
        ),
        Start::Submitted
    );
    let data = UblkIOCtx::build_user_data(1, PIECE_OP, 0, true);
    assert_eq!(zc.piece_done(&t, 1, data, -libc::EIO), Finished::Retry);
    assert_eq!(zc.in_flight(), 0);
    let mut buf = vec![0u8; LEN as usize];
    t.read(0, 4 << 20, &mut buf).unwrap();
    assert_eq!(buf, old, "the failed write changed nothing");
    // It comes back first, to be served by copy, not staged again.
    assert_eq!(zc.ready(), Some(1));
    assert_eq!(
        zc.resume(
            &t,
            1,
            &desc(sys::UBLK_IO_OP_WRITE, 4 << 20, LEN),
            &mut submit
        ),
        Start::Serve
    );
    // A device that refuses the write turns zero copy off for the queue.
    assert_eq!(
        zc.start(
            &t,
            2,
            &desc(sys::UBLK_IO_OP_WRITE, 4 << 20, LEN),
            &mut submit
        ),
        Start::Submitted
    );
    let data = UblkIOCtx::build_user_data(2, PIECE_OP, 0, true);
    assert_eq!(
        zc.piece_done(&t, 2, data, -libc::EOPNOTSUPP),
        Finished::Retry
    );
    assert_eq!(zc.ready(), Some(2));
    assert_eq!(
        zc.start(&t, 3, &desc(sys::UBLK_IO_OP_WRITE, 0, LEN), &mut submit),
        Start::Serve,
        "zero copy is off"
    );
}
