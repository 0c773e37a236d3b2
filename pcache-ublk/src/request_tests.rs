//! Tests for the request → target mapping, with [`MemTarget`] as the model.

use std::cell::RefCell;
use std::io;

use libublk::sys;

use super::*;
use crate::target::MemTarget;

const MIB: u64 = 1 << 20;

fn desc(op: u32, flags: u32, start_sector: u64, nr_sectors: u32) -> IoDesc {
    IoDesc {
        op_flags: op | flags,
        nr_sectors,
        start_sector,
    }
}

fn run(t: &MemTarget, d: IoDesc, buf: &mut [u8]) -> i32 {
    handle(t, 0, &d, DataPath::Buffer(buf))
}

#[test]
fn io_desc_is_copied_from_the_kernel_descriptor() {
    let iod = sys::ublksrv_io_desc {
        op_flags: sys::UBLK_IO_OP_WRITE | sys::UBLK_IO_F_FUA,
        nr_sectors: 8,
        start_sector: 16,
        addr: 0xdead,
    };
    let d = IoDesc::from_iod(&iod);
    assert_eq!(d.op(), sys::UBLK_IO_OP_WRITE);
    assert!(d.fua());
    assert_eq!((d.start_sector, d.nr_sectors), (16, 8));
}

#[test]
fn decode_converts_sectors_to_bytes() {
    let d = desc(sys::UBLK_IO_OP_READ, 0, 3, 5);
    assert_eq!(
        decode(&d, MIB, 4096),
        Ok(Request::Read {
            off: 3 * 512,
            len: 5 * 512
        })
    );
    let d = desc(sys::UBLK_IO_OP_DISCARD, 0, 8, 1 << 20);
    assert_eq!(
        decode(&d, 1 << 40, 0),
        Ok(Request::Discard {
            off: 4096,
            len: 512 << 20
        })
    );
}

#[test]
fn decode_maps_each_supported_op() {
    let fua = desc(sys::UBLK_IO_OP_WRITE, sys::UBLK_IO_F_FUA, 0, 1);
    assert_eq!(
        decode(&fua, MIB, 512),
        Ok(Request::Write {
            off: 0,
            len: 512,
            fua: true
        })
    );
    let plain = desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1);
    assert!(matches!(
        decode(&plain, MIB, 512),
        Ok(Request::Write { fua: false, .. })
    ));
    let flush = desc(sys::UBLK_IO_OP_FLUSH, 0, 0, 0);
    assert_eq!(decode(&flush, MIB, 0), Ok(Request::Flush));
    let wz = desc(sys::UBLK_IO_OP_WRITE_ZEROES, sys::UBLK_IO_F_NOUNMAP, 2, 2);
    assert_eq!(
        decode(&wz, MIB, 0),
        Ok(Request::WriteZeroes {
            off: 1024,
            len: 1024
        })
    );
}

#[test]
fn decode_rejects_unknown_ops_with_eopnotsupp() {
    for op in [
        sys::UBLK_IO_OP_WRITE_SAME,
        sys::UBLK_IO_OP_ZONE_APPEND,
        sys::UBLK_IO_OP_REPORT_ZONES,
        0x7f,
    ] {
        assert_eq!(
            decode(&desc(op, 0, 0, 1), MIB, 4096),
            Err(-libc::EOPNOTSUPP),
            "op {op}"
        );
    }
}

#[test]
fn decode_rejects_ranges_past_the_end_with_eio() {
    let sectors = MIB / 512;
    assert!(decode(&desc(sys::UBLK_IO_OP_READ, 0, sectors - 1, 1), MIB, 512).is_ok());
    assert_eq!(
        decode(&desc(sys::UBLK_IO_OP_READ, 0, sectors - 1, 2), MIB, 1024),
        Err(-libc::EIO)
    );
    assert_eq!(
        decode(&desc(sys::UBLK_IO_OP_DISCARD, 0, sectors, 1), MIB, 0),
        Err(-libc::EIO)
    );
    // Sector arithmetic that overflows u64 is out of range too, not a panic.
    assert_eq!(
        decode(&desc(sys::UBLK_IO_OP_WRITE, 0, u64::MAX / 2, 1), MIB, 512),
        Err(-libc::EIO)
    );
    assert_eq!(
        decode(
            &desc(sys::UBLK_IO_OP_WRITE_ZEROES, 0, u64::MAX / 512, 8),
            u64::MAX,
            0
        ),
        Err(-libc::EIO)
    );
}

#[test]
fn decode_rejects_transfers_larger_than_the_buffer_with_einval() {
    assert_eq!(
        decode(&desc(sys::UBLK_IO_OP_WRITE, 0, 0, 9), MIB, 4096),
        Err(-libc::EINVAL)
    );
    // Discard and write-zeroes carry no data, so the buffer size does not limit them.
    assert!(decode(&desc(sys::UBLK_IO_OP_DISCARD, 0, 0, 9), MIB, 0).is_ok());
}

#[test]
fn write_then_read_returns_bytes_and_moves_data() {
    let t = MemTarget::new(MIB);
    let mut buf = vec![0xab_u8; 4096];
    assert_eq!(
        run(&t, desc(sys::UBLK_IO_OP_WRITE, 0, 8, 8), &mut buf),
        4096
    );
    assert_eq!(t.snapshot(4096, 4096), vec![0xab; 4096]);

    let mut out = vec![0_u8; 8192];
    assert_eq!(run(&t, desc(sys::UBLK_IO_OP_READ, 0, 8, 4), &mut out), 2048);
    assert_eq!(&out[..2048], &[0xab; 2048][..]);
    // Only the requested length is touched.
    assert_eq!(&out[2048..], &[0; 6144][..]);
}

#[test]
fn fua_reaches_the_target_only_when_flagged() {
    let t = MemTarget::new(MIB);
    let mut buf = vec![1_u8; 512];
    run(&t, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1), &mut buf);
    run(
        &t,
        desc(sys::UBLK_IO_OP_WRITE, sys::UBLK_IO_F_FUA, 1, 1),
        &mut buf,
    );
    // FUA on a read is meaningless and is not an error.
    assert_eq!(
        run(
            &t,
            desc(sys::UBLK_IO_OP_READ, sys::UBLK_IO_F_FUA, 1, 1),
            &mut buf
        ),
        512
    );
    let c = t.counters();
    assert_eq!((c.writes, c.fua_writes, c.reads), (2, 1, 1));
}

#[test]
fn flush_discard_and_write_zeroes_reach_the_target_and_return_zero() {
    let t = MemTarget::new(MIB);
    let mut buf = vec![9_u8; 4096];
    run(&t, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 8), &mut buf);
    let mut none: [u8; 0] = [];
    assert_eq!(run(&t, desc(sys::UBLK_IO_OP_FLUSH, 0, 0, 0), &mut none), 0);
    assert_eq!(
        run(&t, desc(sys::UBLK_IO_OP_WRITE_ZEROES, 0, 1, 2), &mut none),
        0
    );
    assert_eq!(
        run(&t, desc(sys::UBLK_IO_OP_DISCARD, 0, 4, 4), &mut none),
        0
    );
    let c = t.counters();
    assert_eq!((c.flushes, c.write_zeroes, c.discards), (1, 1, 1));
    let img = t.snapshot(0, 4096);
    assert_eq!(&img[..512], &[9; 512][..]);
    assert_eq!(&img[512..1536], &[0; 1024][..]);
    assert_eq!(&img[1536..2048], &[9; 512][..]);
}

#[test]
fn target_errors_become_the_request_result() {
    let t = MemTarget::new(MIB);
    let mut buf = vec![0_u8; 512];
    for e in [-libc::EIO, -libc::ENOSPC, -libc::EROFS] {
        t.fail_with(Some(e));
        assert_eq!(run(&t, desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1), &mut buf), e);
        assert_eq!(run(&t, desc(sys::UBLK_IO_OP_READ, 0, 0, 1), &mut buf), e);
        assert_eq!(run(&t, desc(sys::UBLK_IO_OP_FLUSH, 0, 0, 0), &mut buf), e);
    }
}

#[test]
fn a_non_negative_target_error_still_fails_the_request() {
    struct Weird;
    impl Target for Weird {
        fn size(&self) -> u64 {
            MIB
        }
        fn read(&self, _: u32, _: u64, _: &mut [u8]) -> Result<(), Errno> {
            Err(5)
        }
        fn write(&self, _: u32, _: u64, _: &[u8], _: bool) -> Result<(), Errno> {
            Err(0)
        }
        crate::target::no_op_control!();
    }
    let mut buf = vec![0_u8; 512];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 0, 1);
    assert_eq!(
        handle(&Weird, 0, &d, DataPath::Buffer(&mut buf)),
        -libc::EIO
    );
    let d = desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1);
    assert_eq!(
        handle(&Weird, 0, &d, DataPath::Buffer(&mut buf)),
        -libc::EIO
    );
}

#[test]
fn the_queue_id_reaches_the_target() {
    struct QueueSpy(std::sync::Mutex<Vec<u32>>);
    impl Target for QueueSpy {
        fn size(&self) -> u64 {
            MIB
        }
        fn read(&self, q: u32, _: u64, _: &mut [u8]) -> Result<(), Errno> {
            self.0.lock().unwrap().push(q);
            Ok(())
        }
        fn write(&self, q: u32, _: u64, _: &[u8], _: bool) -> Result<(), Errno> {
            self.0.lock().unwrap().push(q);
            Ok(())
        }
        crate::target::no_op_control!();
    }
    let spy = QueueSpy(std::sync::Mutex::new(Vec::new()));
    let mut buf = vec![0_u8; 512];
    handle(
        &spy,
        3,
        &desc(sys::UBLK_IO_OP_READ, 0, 0, 1),
        DataPath::Buffer(&mut buf),
    );
    handle(
        &spy,
        7,
        &desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1),
        DataPath::Buffer(&mut buf),
    );
    assert_eq!(*spy.0.lock().unwrap(), vec![3, 7]);
}

#[test]
fn user_copy_pos_matches_libublk() {
    for (q, tag) in [(0, 0), (1, 0), (0, 1), (3, 127), (31, 4095)] {
        assert_eq!(
            user_copy_pos(q, tag),
            libublk::io::UblkIOCtx::ublk_user_copy_pos(q, tag, 0)
        );
    }
}

/// A fake `/dev/ublkcN`: one request's data at one position, served in short chunks to
/// exercise the pread/pwrite loops, with an optional injected error.
struct FakeCdev {
    pos: u64,
    data: RefCell<Vec<u8>>,
    chunk: usize,
    fail: Option<i32>,
}

impl UserCopyIo for FakeCdev {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if let Some(e) = self.fail {
            return Err(io::Error::from_raw_os_error(e));
        }
        let start = usize::try_from(pos - self.pos).unwrap();
        let data = self.data.borrow();
        let n = buf.len().min(self.chunk).min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        if let Some(e) = self.fail {
            return Err(io::Error::from_raw_os_error(e));
        }
        let start = usize::try_from(pos - self.pos).unwrap();
        let mut data = self.data.borrow_mut();
        let n = buf.len().min(self.chunk).min(data.len() - start);
        data[start..start + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[test]
fn user_copy_write_pulls_the_payload_from_the_request() {
    let t = MemTarget::new(MIB);
    let pos = user_copy_pos(2, 5);
    let payload: Vec<u8> = (0..4096_u32).map(|i| (i % 251) as u8).collect();
    let cdev = FakeCdev {
        pos,
        data: RefCell::new(payload.clone()),
        chunk: 1000,
        fail: None,
    };
    let mut scratch = vec![0_u8; 65536];
    let d = desc(sys::UBLK_IO_OP_WRITE, 0, 16, 8);
    let res = handle(
        &t,
        2,
        &d,
        DataPath::UserCopy {
            dev: &cdev,
            pos,
            scratch: &mut scratch,
        },
    );
    assert_eq!(res, 4096);
    assert_eq!(t.snapshot(16 * 512, 4096), payload);
}

#[test]
fn user_copy_read_pushes_the_data_into_the_request() {
    let t = MemTarget::new(MIB);
    t.write(0, 8192, &[0x5a; 2048], false).unwrap();
    let pos = user_copy_pos(0, 9);
    let cdev = FakeCdev {
        pos,
        data: RefCell::new(vec![0; 2048]),
        chunk: 300,
        fail: None,
    };
    let mut scratch = vec![0_u8; 4096];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 16, 4);
    let res = handle(
        &t,
        0,
        &d,
        DataPath::UserCopy {
            dev: &cdev,
            pos,
            scratch: &mut scratch,
        },
    );
    assert_eq!(res, 2048);
    assert_eq!(*cdev.data.borrow(), vec![0x5a; 2048]);
}

#[test]
fn user_copy_device_errors_fail_the_request_without_touching_the_target() {
    let t = MemTarget::new(MIB);
    let pos = user_copy_pos(0, 0);
    let cdev = FakeCdev {
        pos,
        data: RefCell::new(vec![0; 512]),
        chunk: 512,
        fail: Some(libc::EFAULT),
    };
    let mut scratch = vec![0_u8; 1024];
    let d = desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1);
    let res = handle(
        &t,
        0,
        &d,
        DataPath::UserCopy {
            dev: &cdev,
            pos,
            scratch: &mut scratch,
        },
    );
    assert_eq!(res, -libc::EFAULT);
    assert_eq!(t.counters().writes, 0);
}

#[test]
fn user_copy_short_device_is_eio() {
    let t = MemTarget::new(MIB);
    let pos = user_copy_pos(0, 0);
    // The "request" holds fewer bytes than the descriptor claims: read_at hits its end.
    let cdev = FakeCdev {
        pos,
        data: RefCell::new(vec![0; 100]),
        chunk: 512,
        fail: None,
    };
    let mut scratch = vec![0_u8; 1024];
    let d = desc(sys::UBLK_IO_OP_WRITE, 0, 0, 1);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&t, 0, &d, dp), -libc::EIO);
}

#[test]
fn user_copy_scratch_limits_the_transfer_size() {
    let t = MemTarget::new(MIB);
    let cdev = FakeCdev {
        pos: 0,
        data: RefCell::new(vec![]),
        chunk: 1,
        fail: None,
    };
    let mut scratch = vec![0_u8; 1024];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 0, 4);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos: 0,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&t, 0, &d, dp), -libc::EINVAL);
}

#[test]
fn execute_with_a_short_buffer_is_einval_not_a_panic() {
    let t = MemTarget::new(MIB);
    let mut small = vec![0_u8; 512];
    let req = Request::Write {
        off: 0,
        len: 4096,
        fua: false,
    };
    assert_eq!(
        execute(&t, 0, req, DataPath::Buffer(&mut small)),
        -libc::EINVAL
    );
    let req = Request::Read { off: 0, len: 1024 };
    assert_eq!(
        execute(&t, 0, req, DataPath::Buffer(&mut small)),
        -libc::EINVAL
    );
    assert_eq!(t.counters().writes + t.counters().reads, 0);
}

#[test]
fn a_zero_length_read_is_a_successful_no_op() {
    let t = MemTarget::new(MIB);
    let mut none: [u8; 0] = [];
    assert_eq!(run(&t, desc(sys::UBLK_IO_OP_READ, 0, 0, 0), &mut none), 0);
}

/// A target whose `read_with` hands out a read in given pieces (request-relative start,
/// length), in the given order, from a pattern (byte `i` of the device is `i % 253`).
struct PieceTarget(Vec<(usize, usize)>);

fn device_byte(i: u64) -> u8 {
    (i % 253) as u8
}

impl Target for PieceTarget {
    fn size(&self) -> u64 {
        MIB
    }
    fn read(&self, _: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = device_byte(off + i as u64);
        }
        Ok(())
    }
    fn read_with(
        &self,
        _: u32,
        off: u64,
        len: usize,
        sink: &mut crate::target::ReadSink<'_>,
        _: &mut [u8],
    ) -> Result<(), Errno> {
        assert_eq!(self.0.iter().map(|p| p.1).sum::<usize>(), len);
        for &(at, n) in &self.0 {
            let piece: Vec<u8> = (0..n).map(|i| device_byte(off + (at + i) as u64)).collect();
            sink(at as u64, &piece)?;
        }
        Ok(())
    }
    fn write(&self, _: u32, _: u64, _: &[u8], _: bool) -> Result<(), Errno> {
        Err(-libc::EROFS)
    }
    crate::target::no_op_control!();
}

/// A fake `/dev/ublkcN` that records each `pwrite` (request-relative start, length).
struct RecordingCdev {
    inner: FakeCdev,
    writes: RefCell<Vec<(usize, usize)>>,
}

impl UserCopyIo for RecordingCdev {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let n = self.inner.write_at(buf, pos)?;
        let at = usize::try_from(pos - self.inner.pos).unwrap();
        self.writes.borrow_mut().push((at, n));
        Ok(n)
    }
}

/// User-copy reads: a piece of 32 KiB or more, or the whole read, is written into the
/// request as it comes; smaller pieces are gathered and written in runs of adjacent
/// pieces. Whatever the order, the request ends up with exactly the device's bytes.
#[test]
fn user_copy_read_writes_big_pieces_directly_and_gathers_small_ones() {
    const K: usize = 1024;
    let len = 128 * K;
    // [0, 8K) and [8K, 12K) small and adjacent; [12K, 76K) big; [76K, 80K) small;
    // [80K, 128K) big; handed out of order.
    let pieces = vec![
        (80 * K, 48 * K),
        (8 * K, 4 * K),
        (12 * K, 64 * K),
        (0, 8 * K),
        (76 * K, 4 * K),
    ];
    let off = 3 * 4096_u64;
    let pos = user_copy_pos(1, 2);
    let cdev = RecordingCdev {
        inner: FakeCdev {
            pos,
            data: RefCell::new(vec![0; len]),
            chunk: usize::MAX,
            fail: None,
        },
        writes: RefCell::new(Vec::new()),
    };
    let mut scratch = vec![0_u8; 2 * len];
    let d = desc(sys::UBLK_IO_OP_READ, 0, off / 512, (len / 512) as u32);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&PieceTarget(pieces), 1, &d, dp), len as i32);
    let want: Vec<u8> = (0..len as u64).map(|i| device_byte(off + i)).collect();
    assert!(
        *cdev.inner.data.borrow() == want,
        "request holds the device's bytes"
    );
    assert_eq!(
        *cdev.writes.borrow(),
        vec![
            (80 * K, 48 * K),
            (12 * K, 64 * K),
            (0, 12 * K),
            (76 * K, 4 * K)
        ],
        "big pieces as they come, then the gathered runs"
    );

    // One piece that is the whole (small) read goes straight in.
    let cdev = RecordingCdev {
        inner: FakeCdev {
            pos,
            data: RefCell::new(vec![0; 4 * K]),
            chunk: usize::MAX,
            fail: None,
        },
        writes: RefCell::new(Vec::new()),
    };
    let mut scratch = vec![0_u8; 8 * K];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 8, 8);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    assert_eq!(handle(&PieceTarget(vec![(0, 4 * K)]), 0, &d, dp), 4096);
    assert_eq!(*cdev.writes.borrow(), vec![(0, 4 * K)]);
    let want: Vec<u8> = (0..4096).map(|i| device_byte(4096 + i)).collect();
    assert!(*cdev.inner.data.borrow() == want);
}

/// A piece outside the read, from a misbehaving target, fails the read with EINVAL
/// instead of writing out of bounds.
#[test]
fn user_copy_read_refuses_pieces_outside_the_request() {
    let pos = user_copy_pos(0, 0);
    let cdev = FakeCdev {
        pos,
        data: RefCell::new(vec![0; 4096]),
        chunk: usize::MAX,
        fail: None,
    };
    let mut scratch = vec![0_u8; 8192];
    let d = desc(sys::UBLK_IO_OP_READ, 0, 0, 8);
    let dp = DataPath::UserCopy {
        dev: &cdev,
        pos,
        scratch: &mut scratch,
    };
    // The lengths add up to the request, but the last piece lies past its end.
    let t = PieceTarget(vec![(0, 2048), (3072, 1024), (4096, 1024)]);
    assert_eq!(handle(&t, 0, &d, dp), -libc::EINVAL);
}

/// Which requests go to the queue's workers: reads the target says may wait, and
/// discards; never writes, flushes, write-zeroes or requests that do not decode.
#[test]
fn may_wait_picks_misses_and_discards() {
    struct Slow(MemTarget);
    impl Target for Slow {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read(&self, q: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
            self.0.read(q, off, buf)
        }
        fn read_may_wait(&self, off: u64, _: usize) -> bool {
            off >= 4096
        }
        fn write(&self, q: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
            self.0.write(q, off, data, fua)
        }
        crate::target::no_op_control!();
    }
    let t = Slow(MemTarget::new(MIB));
    assert!(!may_wait(&t, &desc(sys::UBLK_IO_OP_READ, 0, 0, 8)), "a hit");
    assert!(may_wait(&t, &desc(sys::UBLK_IO_OP_READ, 0, 8, 8)), "a miss");
    assert!(may_wait(&t, &desc(sys::UBLK_IO_OP_DISCARD, 0, 0, 8)));
    for op in [
        sys::UBLK_IO_OP_WRITE,
        sys::UBLK_IO_OP_FLUSH,
        sys::UBLK_IO_OP_WRITE_ZEROES,
    ] {
        assert!(!may_wait(&t, &desc(op, 0, 8, 8)), "op {op}");
    }
    // Past the end: fails at once on the queue thread.
    assert!(!may_wait(&t, &desc(sys::UBLK_IO_OP_READ, 0, MIB / 512, 8)));
    assert!(!may_wait(&t, &desc(0xee, 0, 8, 8)), "unknown op");
    // The in-memory target never waits.
    assert!(!may_wait(
        &MemTarget::new(MIB),
        &desc(sys::UBLK_IO_OP_READ, 0, 8, 8)
    ));
}
