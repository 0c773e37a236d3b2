//! Cache media on a pmem block device (`/dev/pmemN`) without the page cache: every
//! access is a positional `O_DIRECT` read or write, and durability is the block layer's
//! flush.
//!
//! Userspace cannot map a pmem *block* device with DAX: a mapping of `/dev/pmemN` goes
//! through the page cache, and each persistence step then costs an `msync` that writes
//! pages back through the block layer ([`FileMedia`](super::FileMedia)). The pmem driver
//! (`drivers/nvdimm/pmem.c`) serves an `O_DIRECT` write by copying the bytes into
//! persistent memory with its cache-bypassing copy (`memcpy_flushcache`: non-temporal
//! stores) before the write completes; a bio with `REQ_PREFLUSH` or `REQ_FUA` runs
//! `nvdimm_flush` (a store fence and the platform's flush hints), after which everything
//! written before is durable. An `fdatasync` of the block device sends that flush.
//!
//! So the media's persistence model (`docs/design.md`, "The persistence model") maps
//! onto it as:
//! - [`CacheMedia::write`]: a `pwritev2` with `RWF_DSYNC` (`REQ_FUA`: the driver copies,
//!   then runs `nvdimm_flush`), durable when it returns: the engine fences every write
//!   right after it anyway, and one call costs less than a write and an `fdatasync`;
//! - [`CacheMedia::flush`]: nothing left to do;
//! - [`CacheMedia::fence`]: nothing, unless a write went out without `RWF_DSYNC` (a
//!   kernel that refuses the flag): then `fdatasync` (`REQ_PREFLUSH` → `nvdimm_flush`),
//!   after which every write completed before it is durable.
//!
//! A write is durable no later than the fence after it, whether or not its range was
//! flushed: a subset of what persistent memory may do (a store may reach the media early
//! by cache eviction), so the engine's steps hold unchanged. A cut may lose or tear a
//! write in flight; the engine's CRCs find a torn record as they do on pmem, where stores
//! tear at 8 bytes.
//!
//! Transfers must be aligned to the device's logical block (512 bytes for pmem) in
//! offset, length and buffer address. Data and the 4 KiB metadata slots always are; a
//! kset shares its first and last blocks with its neighbours in the log, so an unaligned
//! write reads its edge blocks, patches them and writes the blocks back, holding a lock
//! on each edge block (striped), so two such writes of one block never lose each other's
//! bytes. Reads of poisoned blocks fail with `EIO` from the driver's machine-check-safe
//! copy: [`MediaError::Poisoned`], as a caught machine check on a mapping.

use super::file::file_size;
use super::{check_range, CacheMedia, MediaError};
use parking_lot::{Mutex, MutexGuard};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `_IO(0x12, 104)`: logical block size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;

/// Locks on the edge blocks of unaligned writes (a block's lock is `block % STRIPES`).
const STRIPES: usize = 64;

/// What a [`BlockMedia`] reads and writes: a device of whole blocks (transfers at
/// block-aligned offsets, of whole blocks, from and to block-aligned buffers).
pub trait BlockDevice: Send + Sync + std::fmt::Debug + 'static {
    /// Reads `buf.len()` bytes at `off`.
    ///
    /// # Errors
    /// The device's; `EIO` for a poisoned block.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes `data` at `off`; with `durable`, the write is durable when it returns
    /// (`RWF_DSYNC`), else once a [`BlockDevice::sync`] that starts after it returns.
    ///
    /// # Errors
    /// The device's; `EOPNOTSUPP` if it cannot make a single write durable.
    fn write_at(&self, off: u64, data: &[u8], durable: bool) -> io::Result<()>;

    /// Makes every write completed before it durable (`fdatasync`).
    ///
    /// # Errors
    /// The device's.
    fn sync(&self) -> io::Result<()>;

    /// The descriptor a caller may write to directly ([`CacheMedia::direct`]), if the
    /// device has one. The provided method says none.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// A block device (or file) by its descriptor.
#[derive(Debug)]
struct FileDevice(File);

impl BlockDevice for FileDevice {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }

    fn write_at(&self, off: u64, data: &[u8], durable: bool) -> io::Result<()> {
        if durable {
            pwrite_dsync(&self.0, off, data)
        } else {
            self.0.write_all_at(data, off)
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.0.as_raw_fd())
    }
}

/// Writes all of `data` at `off` with `RWF_DSYNC`: durable when it returns.
fn pwrite_dsync(file: &File, mut off: u64, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        let at =
            libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: one iovec over `data`, which lives across the call and is only read by
        // the kernel; the descriptor is our own.
        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &raw const iov, 1, at, libc::RWF_DSYNC) };
        match usize::try_from(n) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                data = &data[n..];
                off += n as u64;
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// A pmem block device (or, for tests, a file) read and written with `O_DIRECT`.
#[derive(Debug)]
pub struct BlockMedia {
    dev: Box<dyn BlockDevice>,
    size: u64,
    /// Logical block size: the alignment of every transfer.
    block: u64,
    writable: bool,
    /// What the device is, for [`CacheMedia::describe`].
    name: String,
    stripes: Vec<Mutex<()>>,
    /// The first failed fence, reported by [`CacheMedia::check`].
    error: Mutex<Option<io::Error>>,
    /// Whether writes go out with `RWF_DSYNC` (durable on completion).
    dsync: AtomicBool,
    /// Writes completed without `RWF_DSYNC` so far.
    written: AtomicU64,
    /// `written` as it was when the last successful `fdatasync` started: every write
    /// counted in it is durable.
    synced: AtomicU64,
    /// `fdatasync` calls made.
    syncs: AtomicU64,
}

thread_local! {
    /// Block-aligned bounce space of this thread, for unaligned transfers and for
    /// [`CacheMedia::fill`] and [`CacheMedia::view`]; grown to the largest transfer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of `align`-aligned scratch space (this thread's, or a fresh
/// buffer when this thread's is in use further up the stack).
fn with_scratch<R>(len: usize, align: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let aligned = |v: &mut Vec<u8>| {
        if v.len() < len + align {
            v.resize(len + align, 0);
        }
        v.as_ptr().align_offset(align).min(align)
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            let start = aligned(&mut v);
            f(&mut v[start..start + len])
        }
        Err(_) => {
            let mut v = Vec::new();
            let start = aligned(&mut v);
            f(&mut v[start..start + len])
        }
    })
}

impl BlockMedia {
    /// Opens `path` (a pmem block device) for `O_DIRECT` access.
    ///
    /// # Errors
    /// The device cannot be opened with `O_DIRECT`, or sized.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self, MediaError> {
        Self::open_with(path, read_only, true)
    }

    /// Opens `path`; `direct` false opens it without `O_DIRECT` (a file on tmpfs, for
    /// tests: the transfers and the persistence calls are the same).
    ///
    /// # Errors
    /// As [`BlockMedia::open`].
    pub fn open_with(
        path: impl AsRef<Path>,
        read_only: bool,
        direct: bool,
    ) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let file = opts.open(path).map_err(MediaError::io("open O_DIRECT"))?;
        let meta = file.metadata().map_err(MediaError::io("stat"))?;
        let size = file_size(&file).map_err(MediaError::io("size"))?;
        let mut block = 4096;
        if meta.file_type().is_block_device() {
            let mut ssz: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the valid pointer.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET as _, &raw mut ssz) };
            if rc == 0 {
                if let Ok(s) = u64::try_from(ssz) {
                    if s.is_power_of_two() && s <= 4096 {
                        block = s;
                    }
                }
            }
        }
        let name = format!(
            "block device {}{}",
            path.display(),
            if direct { " (O_DIRECT)" } else { "" }
        );
        Ok(Self::on_device(
            FileDevice(file),
            size,
            block,
            read_only,
            name,
        ))
    }

    /// A media of `size` bytes on `dev`, whose blocks are `block` bytes (a power of two,
    /// at most 4096).
    ///
    /// # Panics
    /// If `block` is not a power of two of at most 4096.
    #[must_use]
    pub fn on_device(
        dev: impl BlockDevice,
        size: u64,
        block: u64,
        read_only: bool,
        name: String,
    ) -> Self {
        assert!(
            block.is_power_of_two() && block <= 4096,
            "block size {block}"
        );
        Self {
            dev: Box::new(dev),
            size,
            block,
            writable: !read_only,
            name,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            error: Mutex::new(None),
            dsync: AtomicBool::new(true),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// The `fdatasync` calls made so far (a fence with no write since the last one that
    /// went out without `RWF_DSYNC` makes none).
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The logical block size: the alignment of every transfer.
    #[must_use]
    pub fn block_size(&self) -> u64 {
        self.block
    }

    fn align(&self) -> usize {
        // At most 4096 (see `open_with`).
        #[allow(clippy::cast_possible_truncation)]
        let a = self.block as usize;
        a
    }

    /// Whether a transfer of `len` bytes at `off` from or to `ptr` needs no bounce.
    fn aligned(&self, off: u64, ptr: *const u8, len: usize) -> bool {
        off.is_multiple_of(self.block)
            && (len as u64).is_multiple_of(self.block)
            && (ptr as usize).is_multiple_of(self.align())
    }

    /// The blocks `[lo, hi)` (byte offsets) that hold `[off, off + len)`.
    fn span(&self, off: u64, len: usize) -> (u64, u64) {
        let lo = off - off % self.block;
        let hi = (off + len as u64).next_multiple_of(self.block);
        (lo, hi)
    }

    /// Reads `buf.len()` bytes at block-aligned `off` into block-aligned `buf`.
    fn pread(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.dev.read_at(off, buf).map_err(|e| {
            if e.raw_os_error() == Some(libc::EIO) {
                // The driver's machine-check-safe copy met a poisoned line (or a known
                // bad block).
                MediaError::Poisoned {
                    off,
                    len: buf.len() as u64,
                    at: off,
                }
            } else {
                MediaError::Io {
                    op: "pread",
                    source: e,
                }
            }
        })
    }

    /// Makes writes go out without `RWF_DSYNC`, made durable by the fence's
    /// `fdatasync` instead (what a kernel that refuses the flag gets).
    #[must_use]
    pub fn without_dsync(self) -> Self {
        self.dsync.store(false, Ordering::Relaxed);
        self
    }

    fn pwrite(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if self.dsync.load(Ordering::Relaxed) {
            match self.dev.write_at(off, data, true) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                    ) =>
                {
                    // No RWF_DSYNC here: plain writes, made durable by the fence.
                    self.dsync.store(false, Ordering::Relaxed);
                }
                r => return r.map_err(MediaError::io("pwritev2 RWF_DSYNC")),
            }
        }
        self.dev
            .write_at(off, data, false)
            .map_err(MediaError::io("pwrite"))?;
        self.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The locks of the edge blocks of an unaligned write to `[lo, hi)`, in stripe order.
    fn lock_edges(&self, lo: u64, hi: u64) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let stripe = |b: u64| {
            // Below STRIPES.
            #[allow(clippy::cast_possible_truncation)]
            let s = ((b / self.block) % STRIPES as u64) as usize;
            s
        };
        let (a, b) = (stripe(lo), stripe(hi - self.block));
        let (first, second) = (a.min(b), a.max(b));
        let g1 = self.stripes[first].lock();
        let g2 = (second != first).then(|| self.stripes[second].lock());
        (g1, g2)
    }
}

impl CacheMedia for BlockMedia {
    fn len(&self) -> u64 {
        self.size
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        check_range(off, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.aligned(off, buf.as_ptr(), buf.len()) {
            return self.pread(off, buf);
        }
        let (lo, hi) = self.span(off, buf.len());
        // Below the media size, checked above.
        #[allow(clippy::cast_possible_truncation)]
        let (n, skip) = ((hi - lo) as usize, (off - lo) as usize);
        with_scratch(n, self.align(), |s| {
            self.pread(lo, s)?;
            buf.copy_from_slice(&s[skip..skip + buf.len()]);
            Ok(())
        })
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if !self.writable {
            return Err(MediaError::ReadOnly);
        }
        check_range(off, data.len(), self.size)?;
        if data.is_empty() {
            return Ok(());
        }
        if self.aligned(off, data.as_ptr(), data.len()) {
            return self.pwrite(off, data);
        }
        let (lo, hi) = self.span(off, data.len());
        #[allow(clippy::cast_possible_truncation)]
        let (n, skip, b) = ((hi - lo) as usize, (off - lo) as usize, self.align());
        with_scratch(n, b, |s| {
            // Read-modify-write of the edge blocks, under their locks.
            let _edges = self.lock_edges(lo, hi);
            if skip != 0 {
                self.pread(lo, &mut s[..b])?;
            }
            if !(skip + data.len()).is_multiple_of(b) && (n > b || skip == 0) {
                self.pread(hi - b as u64, &mut s[n - b..])?;
            }
            s[skip..skip + data.len()].copy_from_slice(data);
            self.pwrite(lo, s)
        })
    }

    fn fill(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        if !self.writable {
            return Err(MediaError::ReadOnly);
        }
        check_range(off, len, self.size)?;
        if !off.is_multiple_of(self.block) || !(len as u64).is_multiple_of(self.block) {
            let mut buf = vec![0; len];
            f(&mut buf).map_err(MediaError::Source)?;
            return self.write(off, &buf);
        }
        // The source fills aligned space, which goes to the device as it is.
        with_scratch(len, self.align(), |s| {
            f(s).map_err(MediaError::Source)?;
            self.pwrite(off, s)
        })
    }

    fn view(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        check_range(off, len, self.size)?;
        let (lo, hi) = self.span(off, len);
        #[allow(clippy::cast_possible_truncation)]
        let (n, skip) = ((hi - lo) as usize, (off - lo) as usize);
        with_scratch(n, self.align(), |s| {
            self.pread(lo, s)?;
            f(&s[skip..skip + len]).map_err(MediaError::Source)
        })
    }

    fn view_many(
        &self,
        ranges: &[(u64, usize)],
        f: &mut dyn FnMut(&[&[u8]]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        // Each range read into its own aligned part of one scratch space.
        let mut spans = Vec::with_capacity(ranges.len());
        let mut total = 0usize;
        for &(off, len) in ranges {
            check_range(off, len, self.size)?;
            let (lo, hi) = self.span(off, len);
            #[allow(clippy::cast_possible_truncation)]
            let n = (hi - lo) as usize;
            spans.push((lo, n, total, (off - lo) as usize, len));
            total += n;
        }
        with_scratch(total, self.align(), |s| {
            for &(lo, n, at, _, _) in &spans {
                self.pread(lo, &mut s[at..at + n])?;
            }
            let views: Vec<&[u8]> = spans
                .iter()
                .map(|&(_, _, at, skip, len)| &s[at + skip..at + skip + len])
                .collect();
            f(&views).map_err(MediaError::Source)
        })
    }

    fn flush(&self, _off: u64, _len: u64) {
        // Nothing: a completed write is durable (RWF_DSYNC), or has left the CPU's
        // caches (the driver's non-temporal copy) and waits for the fence.
    }

    fn fence(&self) {
        if !self.writable {
            return;
        }
        // A write this thread completed is counted in `w`. If an fdatasync that started
        // after `written` reached `w` has completed, that write is durable already (a
        // fence with nothing written since, or one that another thread's fence covered).
        let w = self.written.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= w {
            return;
        }
        // REQ_PREFLUSH → nvdimm_flush: every write completed before is durable.
        self.syncs.fetch_add(1, Ordering::Relaxed);
        match self.dev.sync() {
            Ok(()) => {
                self.synced.fetch_max(w, Ordering::AcqRel);
            }
            Err(e) => {
                self.error.lock().get_or_insert(e);
            }
        }
    }

    fn check(&self) -> Result<(), MediaError> {
        match &*self.error.lock() {
            None => Ok(()),
            Some(e) => Err(MediaError::Io {
                op: "fdatasync",
                source: io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    /// A writable device whose writes with `RWF_DSYNC` work: a caller may write whole
    /// blocks itself, through the same descriptor (coherent with this media's own reads
    /// and writes, `O_DIRECT` or not).
    fn direct(&self) -> Option<super::Direct> {
        (self.writable && self.dsync.load(Ordering::Relaxed)).then(|| super::Direct {
            fd: self.dev.raw_fd(),
            base: 0,
            block: self.block,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} bytes, {}-byte blocks, {})",
            self.name,
            self.size,
            self.block,
            if self.dsync.load(Ordering::Relaxed) {
                "durable by RWF_DSYNC"
            } else {
                "durable by fdatasync"
            }
        )
    }
}

#[cfg(test)]
mod tests;
