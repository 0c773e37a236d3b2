//! Request → target mapping: decoding a ublk I/O descriptor and executing it against a
//! [`Target`].
//!
//! Nothing here touches ublk's rings, so all of it is unit-tested with
//! [`MemTarget`](crate::target::MemTarget) and the real engine. The queue module
//! ([`crate::queue`]) feeds it each request and completes the request with the returned value: the byte count on success, a
//! negative errno on failure. Nothing on this path panics.

use std::io;

use libublk::sys;

use crate::target::{Errno, Target};

/// Bytes per ublk sector; the request descriptor always counts in 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;

/// The fields of a ublk I/O descriptor (`struct ublksrv_io_desc`) that we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoDesc {
    /// Bits 0-7: operation (`UBLK_IO_OP_*`); bits 8-31: flags (`UBLK_IO_F_*`, which are
    /// defined in these same bit positions).
    pub op_flags: u32,
    /// Length in 512-byte sectors.
    pub nr_sectors: u32,
    /// Start in 512-byte sectors.
    pub start_sector: u64,
}

impl IoDesc {
    /// Copies the fields out of the shared descriptor the kernel filled in.
    pub fn from_iod(iod: &sys::ublksrv_io_desc) -> Self {
        IoDesc {
            op_flags: iod.op_flags,
            nr_sectors: iod.nr_sectors,
            start_sector: iod.start_sector,
        }
    }

    /// The operation (`UBLK_IO_OP_*`).
    pub fn op(&self) -> u32 {
        self.op_flags & 0xff
    }

    /// Whether the request carries Force Unit Access.
    pub fn fua(&self) -> bool {
        self.op_flags & sys::UBLK_IO_F_FUA != 0
    }
}

/// A decoded, range-checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes at `off`.
    Read {
        /// Byte offset.
        off: u64,
        /// Byte count.
        len: usize,
    },
    /// Write `len` bytes at `off`.
    Write {
        /// Byte offset.
        off: u64,
        /// Byte count.
        len: usize,
        /// Force Unit Access.
        fua: bool,
    },
    /// Flush the volatile write cache.
    Flush,
    /// Discard a byte range.
    Discard {
        /// Byte offset.
        off: u64,
        /// Byte count.
        len: u64,
    },
    /// Zero a byte range.
    WriteZeroes {
        /// Byte offset.
        off: u64,
        /// Byte count.
        len: u64,
    },
}

/// Decodes `desc` for a device of `dev_size` bytes whose data buffer holds `max_data` bytes.
///
/// Errors: an unknown or unsupported operation is `-EOPNOTSUPP`; a range past the end of
/// the device (or one whose arithmetic overflows) is `-EIO`, as the block layer reports it;
/// a data transfer larger than the buffer is `-EINVAL`.
pub fn decode(desc: &IoDesc, dev_size: u64, max_data: usize) -> Result<Request, Errno> {
    let op = desc.op();
    if op == sys::UBLK_IO_OP_FLUSH {
        return Ok(Request::Flush);
    }
    if !matches!(
        op,
        sys::UBLK_IO_OP_READ
            | sys::UBLK_IO_OP_WRITE
            | sys::UBLK_IO_OP_DISCARD
            | sys::UBLK_IO_OP_WRITE_ZEROES
    ) {
        return Err(-libc::EOPNOTSUPP);
    }
    let off = desc
        .start_sector
        .checked_mul(SECTOR_SIZE)
        .ok_or(-libc::EIO)?;
    let len = u64::from(desc.nr_sectors) * SECTOR_SIZE;
    let end = off.checked_add(len).ok_or(-libc::EIO)?;
    if end > dev_size {
        return Err(-libc::EIO);
    }
    match op {
        sys::UBLK_IO_OP_READ | sys::UBLK_IO_OP_WRITE => {
            let len = usize::try_from(len).map_err(|_| -libc::EINVAL)?;
            if len > max_data {
                return Err(-libc::EINVAL);
            }
            if op == sys::UBLK_IO_OP_READ {
                Ok(Request::Read { off, len })
            } else {
                Ok(Request::Write {
                    off,
                    len,
                    fua: desc.fua(),
                })
            }
        }
        sys::UBLK_IO_OP_DISCARD => Ok(Request::Discard { off, len }),
        _ => Ok(Request::WriteZeroes { off, len }),
    }
}

/// Positioned I/O on the ublk character device, as user-copy mode needs it. Implemented
/// for `File`; tests use an in-memory double.
pub trait UserCopyIo {
    /// `pread(2)`.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// `pwrite(2)`.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
}

impl UserCopyIo for std::fs::File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self, buf, pos)
    }
}

/// The offset on `/dev/ublkcN` at which user-copy mode reads or writes the data of request
/// `tag` on queue `q` (the kernel's `ublk_pos` encoding: a fixed base, queue id above bit
/// `UBLK_QID_OFF`, tag above bit `UBLK_TAG_OFF`).
pub fn user_copy_pos(q: u16, tag: u16) -> u64 {
    u64::from(sys::UBLKSRV_IO_BUF_OFFSET)
        + ((u64::from(q) << sys::UBLK_QID_OFF) | (u64::from(tag) << sys::UBLK_TAG_OFF))
}

/// Where a request's data lives.
pub enum DataPath<'a> {
    /// Copy mode: the kernel has copied a write's payload into this per-tag buffer, and
    /// copies a read's payload out of it when the request completes.
    Buffer(&'a mut [u8]),
    /// User-copy mode: the payload is moved with `pread`/`pwrite` on `/dev/ublkcN` at `pos`
    /// (see [`user_copy_pos`]). A write's payload is `pread` straight into the target's
    /// storage ([`Target::write_with`]) unless the target stages it in `scratch`; a read's
    /// is `pwrite`n straight from the target's storage ([`Target::read_with`]), its small
    /// pieces gathered in `scratch` first.
    UserCopy {
        /// The ublk character device.
        dev: &'a dyn UserCopyIo,
        /// [`user_copy_pos`] of this request.
        pos: u64,
        /// Staging buffer, at least twice as large as the largest request: a read may
        /// need one half for a target that stages and the other to gather pieces in.
        scratch: &'a mut [u8],
    },
}

impl std::fmt::Debug for DataPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataPath::Buffer(b) => write!(f, "Buffer({} bytes)", b.len()),
            DataPath::UserCopy { pos, scratch, .. } => {
                write!(f, "UserCopy(pos {pos:#x}, {} bytes)", scratch.len())
            }
        }
    }
}

impl DataPath<'_> {
    fn capacity(&self) -> usize {
        match self {
            DataPath::Buffer(b) => b.len(),
            DataPath::UserCopy { scratch, .. } => scratch.len() / 2,
        }
    }
}

fn io_errno(e: &io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code > 0 => -code,
        _ => -libc::EIO,
    }
}

/// Reads exactly `buf.len()` bytes from the request at `pos`.
fn copy_in(dev: &dyn UserCopyIo, buf: &mut [u8], pos: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        match dev.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => return Err(-libc::EIO),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    Ok(())
}

/// Writes all of `buf` into the request at `pos`.
fn copy_out(dev: &dyn UserCopyIo, buf: &[u8], pos: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        match dev.write_at(&buf[done..], pos + done as u64) {
            Ok(0) => return Err(-libc::EIO),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    Ok(())
}

/// A piece of a read at least this long is `pwrite`n into the request straight from
/// where the target keeps it; a shorter one (a fragment of a read the cache holds in many
/// places) is gathered in the staging buffer first, so that one `pwrite` carries many.
const DIRECT_PIECE: usize = 32 << 10;

/// A user-copy read: the target hands over the payload in pieces ([`Target::read_with`]).
/// The whole payload, or any piece of at least [`DIRECT_PIECE`] bytes, is `pwrite`n into
/// the request at once (for the engine: from the cache media, so the data moves once);
/// smaller pieces are gathered in the second half of `scratch` and written in runs at the
/// end; a target that stages gets the first half.
fn read_user_copy(
    target: &dyn Target,
    q: u32,
    off: u64,
    len: usize,
    dev: &dyn UserCopyIo,
    pos: u64,
    scratch: &mut [u8],
) -> Result<(), Errno> {
    // Half for a target that stages, half to gather pieces in (`DataPath::UserCopy`).
    let (stage, gather) = scratch.split_at_mut(scratch.len() / 2);
    if gather.len() < len {
        return Err(-libc::EINVAL);
    }
    // (start, end) in the request of each gathered piece.
    let mut gathered: Vec<(usize, usize)> = Vec::new();
    let mut sink = |at: u64, bytes: &[u8]| -> Result<(), Errno> {
        let start = usize::try_from(at).map_err(|_| -libc::EINVAL)?;
        let end = start.checked_add(bytes.len()).ok_or(-libc::EINVAL)?;
        if end > len {
            return Err(-libc::EINVAL);
        }
        if bytes.len() >= DIRECT_PIECE || bytes.len() == len {
            return copy_out(dev, bytes, pos.saturating_add(at));
        }
        // `bytes` may be the cache media's own: a checked copy turns a machine check (or
        // a truncated cache file) into EFAULT, as the kernel's copy in a `pwrite` does
        // (the target serves clean data again from the backing device, and reports EIO
        // for dirty data).
        pcache_engine::media::copy_checked(&mut gather[start..end], bytes)
            .map_err(|_| -libc::EFAULT)?;
        gathered.push((start, end));
        Ok(())
    };
    target.read_with(q, off, len, &mut sink, stage)?;
    gathered.sort_unstable();
    let mut i = 0;
    while let Some(&(start, mut end)) = gathered.get(i) {
        i += 1;
        while let Some(&(_, e)) = gathered.get(i).filter(|&&(s, _)| s == end) {
            end = e;
            i += 1;
        }
        copy_out(dev, &gather[start..end], pos.saturating_add(start as u64))?;
    }
    Ok(())
}

/// The first `len` bytes of `buf`, or `-EINVAL` if it is shorter (a request that was
/// not checked by [`decode`]; never a panic).
fn prefix_mut(buf: &mut [u8], len: usize) -> Result<&mut [u8], Errno> {
    buf.get_mut(..len).ok_or(-libc::EINVAL)
}

/// Executes a decoded request. Returns the ublk result: bytes transferred for reads and
/// writes, 0 for flush, discard and write-zeroes (the kernel ignores the count for those,
/// and a discard can be longer than `i32::MAX` bytes), or a negative errno.
pub fn execute(target: &dyn Target, queue: u16, req: Request, data: DataPath<'_>) -> i32 {
    let q = u32::from(queue);
    let res = match (req, data) {
        (Request::Read { off, len }, DataPath::Buffer(buf)) => prefix_mut(buf, len)
            .and_then(|b| target.read(q, off, b))
            .map(|()| len),
        (Request::Read { off, len }, DataPath::UserCopy { dev, pos, scratch }) => {
            read_user_copy(target, q, off, len, dev, pos, scratch).map(|()| len)
        }
        (Request::Write { off, len, fua }, DataPath::Buffer(buf)) => prefix_mut(buf, len)
            .and_then(|b| target.write(q, off, b, fua))
            .map(|()| len),
        // Each piece is `pread` from the request straight to where the target keeps it
        // (for the engine: the cache media); `scratch` only if the target stages.
        (Request::Write { off, len, fua }, DataPath::UserCopy { dev, pos, scratch }) => target
            .write_with(
                q,
                off,
                len,
                fua,
                &mut |at, dst| copy_in(dev, dst, pos.saturating_add(at)),
                scratch,
            )
            .map(|()| len),
        (Request::Flush, _) => target.flush().map(|()| 0),
        (Request::Discard { off, len }, _) => target.discard(off, len).map(|()| 0),
        (Request::WriteZeroes { off, len }, _) => target.write_zeroes(off, len).map(|()| 0),
    };
    match res {
        // `len` never exceeds the I/O buffer (at most a few MiB), so this cannot saturate
        // in practice; saturating keeps the path panic-free regardless.
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) if e < 0 => e,
        // A target that reports a non-negative "error" still failed the request.
        Err(_) => -libc::EIO,
    }
}

/// Whether the request `desc` may wait for a slow device, and so is better served off
/// the queue thread ([`crate::offload`]): a read the target says may wait (a cache miss)
/// and a discard (which reaches the backing device). A request that does not decode fails
/// at once, so it never waits.
pub fn may_wait(target: &dyn Target, desc: &IoDesc) -> bool {
    match decode(desc, target.size(), usize::MAX) {
        Ok(Request::Read { off, len }) => target.read_may_wait(off, len),
        Ok(Request::Discard { .. }) => true,
        Ok(Request::Write { .. } | Request::Flush | Request::WriteZeroes { .. }) | Err(_) => false,
    }
}

/// Decodes and executes one request: the whole per-request work of a queue thread.
pub fn handle(target: &dyn Target, queue: u16, desc: &IoDesc, data: DataPath<'_>) -> i32 {
    match decode(desc, target.size(), data.capacity()) {
        Ok(req) => execute(target, queue, req, data),
        Err(e) => e,
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
