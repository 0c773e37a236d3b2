//! A backing file or block device with positional I/O.
//!
//! The device is opened twice where it allows `O_DIRECT`: aligned transfers (buffer
//! address, offset and length all multiples of the direct-I/O alignment) bypass the page
//! cache; anything else goes through the buffered descriptor. Mixing the two is coherent
//! on Linux (direct I/O writes back and invalidates the page-cache range it covers).

use super::{check, Backing, BatchError};
use crate::media::file::file_size;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `_IO(0x12, 119)`: discard a byte range of a block device.
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `_IO(0x12, 127)`: zero a byte range of a block device.
const BLKZEROOUT: libc::c_ulong = 0x127f;
/// `_IO(0x12, 104)`: logical block size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;

/// `statfs.f_type` of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Threads that write one large batch ([`Backing::write_many`]) together.
const WRITERS: usize = 4;

/// A batch of at least this many bytes is written by [`WRITERS`] threads (starting threads
/// costs more than it saves for a smaller one).
const PARALLEL_BYTES: u64 = 8 << 20;

/// A file or block device.
#[derive(Debug)]
pub struct FileBacking {
    buffered: File,
    direct: Option<File>,
    align: u64,
    size: u64,
    is_block: bool,
    path: PathBuf,
    /// Whether a large batch is written by several threads: [`FileBacking::writes_async`].
    parallel: bool,
}

impl FileBacking {
    /// Opens `path`, with `O_DIRECT` where the device supports it.
    ///
    /// # Errors
    /// The file cannot be opened or sized.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<Self> {
        Self::open_with(path, read_only, true)
    }

    /// Opens `path`; `direct` false never uses `O_DIRECT`.
    ///
    /// # Errors
    /// The file cannot be opened or sized.
    pub fn open_with(path: impl AsRef<Path>, read_only: bool, direct: bool) -> io::Result<Self> {
        let path = path.as_ref();
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        let buffered = opts.open(path)?;
        let is_block = buffered.metadata()?.file_type().is_block_device();
        let size = file_size(&buffered)?;
        let direct = if direct {
            opts.custom_flags(libc::O_DIRECT).open(path).ok()
        } else {
            None
        };
        let mut align = 4096;
        if is_block {
            let mut ssz: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the valid pointer.
            let rc = unsafe { libc::ioctl(buffered.as_raw_fd(), BLKSSZGET as _, &raw mut ssz) };
            if rc == 0 {
                if let Ok(s) = u64::try_from(ssz) {
                    if s.is_power_of_two() {
                        align = s;
                    }
                }
            }
        }
        let mut backing = Self {
            buffered,
            direct,
            align,
            size,
            is_block,
            path: path.to_path_buf(),
            parallel: false,
        };
        backing.parallel = backing.writes_async();
        Ok(backing)
    }

    /// Whether aligned transfers use `O_DIRECT`.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether aligned writes go straight to the device without the writer waiting on
    /// them in the kernel: `O_DIRECT` to a block device, or to a file on a filesystem
    /// other than tmpfs. That is where [`UringBacking`](super::UringBacking) pays off (see
    /// [`open_best`](super::open_best)); tmpfs takes no write without blocking, so io_uring
    /// hands each one to a kernel worker thread, which costs more than a `pwrite`.
    #[must_use]
    pub fn writes_async(&self) -> bool {
        if self.direct.is_none() {
            return false;
        }
        if self.is_block {
            return true;
        }
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs writes one `struct statfs` through the pointer, which points at
        // enough (zeroed) memory for it, on our own open descriptor.
        let rc = unsafe { libc::fstatfs(self.buffered.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        // SAFETY: fstatfs succeeded, so it initialised the struct (all-zero is valid too).
        let st = unsafe { st.assume_init() };
        // `f_type` is an i64 here, another integer type on other targets.
        #[allow(clippy::unnecessary_cast, clippy::cast_possible_wrap)]
        let f_type = st.f_type as i64;
        f_type != TMPFS_MAGIC
    }

    /// The direct-I/O alignment (buffer address, offset and length).
    #[must_use]
    pub fn alignment(&self) -> u64 {
        self.align
    }

    /// The descriptor for a transfer of `len` bytes at `off` from or to `ptr`: the
    /// `O_DIRECT` one if the transfer is aligned, else the buffered one.
    pub(super) fn pick(&self, off: u64, ptr: *const u8, len: usize) -> &File {
        match &self.direct {
            Some(d)
                if off.is_multiple_of(self.align)
                    && (len as u64).is_multiple_of(self.align)
                    && (ptr as u64).is_multiple_of(self.align) =>
            {
                d
            }
            _ => &self.buffered,
        }
    }

    fn range_ioctl(&self, req: libc::c_ulong, off: u64, len: u64) -> io::Result<()> {
        let range = [off, len];
        // SAFETY: BLKDISCARD/BLKZEROOUT read two u64 (start, length) from the pointer.
        let rc = unsafe { libc::ioctl(self.buffered.as_raw_fd(), req as _, range.as_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate on our own descriptor with a checked range.
        let rc = unsafe { libc::fallocate(self.buffered.as_raw_fd(), mode, o, l) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn write_zero_buffers(&self, off: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            // n <= 1 MiB.
            #[allow(clippy::cast_possible_truncation)]
            self.buffered
                .write_all_at(&zeros[..n as usize], off + done)?;
            done += n;
        }
        Ok(())
    }
}

impl Backing for FileBacking {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        check(off, buf.len() as u64, self.size)?;
        self.pick(off, buf.as_ptr(), buf.len())
            .read_exact_at(buf, off)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        check(off, data.len() as u64, self.size)?;
        self.pick(off, data.as_ptr(), data.len())
            .write_all_at(data, off)
    }

    /// A large batch of direct writes to a device that blocks on them
    /// ([`FileBacking::writes_async`]) is written by several threads at once; anything
    /// else in the calling thread. Buffered writes are copies into the page cache under
    /// the file's inode lock: threads would only contend for it (measured on tmpfs:
    /// lock spinning and thread start-up cost more than the copies).
    fn write_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BatchError> {
        let bytes: u64 = writes.iter().map(|w| w.1.len() as u64).sum();
        if writes.len() <= 2 || bytes < PARALLEL_BYTES || !self.parallel {
            // A run of writes back to back on the device (writeback's come in logical
            // order) goes out as one `pwritev`, whatever their sources: one call and one
            // I/O instead of one per write. A run that fails is reported at its first write.
            let mut i = 0;
            while i < writes.len() {
                let (off, data) = writes[i];
                let fd = self.pick(off, data.as_ptr(), data.len());
                let mut end = off.saturating_add(data.len() as u64);
                let mut j = i + 1;
                while j < writes.len() && j - i < MAX_IOVECS && writes[j].0 == end {
                    let (o, d) = writes[j];
                    if !std::ptr::eq(self.pick(o, d.as_ptr(), d.len()), fd) {
                        break;
                    }
                    end = end.saturating_add(d.len() as u64);
                    j += 1;
                }
                if j == i + 1 || check(off, end - off, self.size).is_err() {
                    // One write, or a run that leaves the device: each write alone, so a
                    // failure names the write that fails.
                    for (k, &(o, d)) in writes.iter().enumerate().take(j).skip(i) {
                        self.write_at(o, d)
                            .map_err(|e| BatchError::new(k, writes, e))?;
                    }
                } else {
                    write_all_vectored_at(fd, off, &writes[i..j])
                        .map_err(|e| BatchError::new(i, writes, e))?;
                }
                i = j;
            }
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        let first_err: Mutex<Option<BatchError>> = Mutex::new(None);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..WRITERS.min(writes.len()))
                .map(|_| {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(off, data)) = writes.get(i) else {
                            return;
                        };
                        if let Err(e) = self.write_at(off, data) {
                            let mut f = first_err.lock();
                            if f.as_ref().is_none_or(|f| f.index > i) {
                                *f = Some(BatchError::new(i, writes, e));
                            }
                            // No new writes after a failure.
                            next.store(writes.len(), Ordering::Relaxed);
                            return;
                        }
                    })
                })
                .collect();
            // Each thread joined whole, its thread-local destructors included (see
            // `Replay::run`); a writer never panics.
            for w in writers {
                let _ = w.join();
            }
        });
        first_err.into_inner().map_or(Ok(()), Err)
    }

    fn flush(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        check(off, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        if self.is_block {
            self.range_ioctl(BLKDISCARD, off, len)
        } else {
            match self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            ) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.write_zero_buffers(off, len)
                }
                r => r,
            }
        }
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        check(off, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        let fast = if self.is_block {
            self.range_ioctl(BLKZEROOUT, off, len)
        } else {
            self.fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        match fast {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOTTY)
                ) =>
            {
                self.write_zero_buffers(off, len)
            }
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} ({} bytes{})",
            if self.is_block {
                "block device"
            } else {
                "file"
            },
            self.path.display(),
            self.size,
            if self.is_direct() { ", O_DIRECT" } else { "" }
        )
    }
}

/// The most buffers one `pwritev` takes (the kernel's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Writes the buffers of `writes` back to back from `off` with `pwritev`, going on after a
/// short write.
fn write_all_vectored_at(file: &File, off: u64, writes: &[(u64, &[u8])]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = writes.iter().map(|w| io::IoSlice::new(w.1)).collect();
    let mut bufs = &mut slices[..];
    let mut at = off;
    while !bufs.is_empty() {
        match rustix::io::pwritev(file, bufs, at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                at += n as u64;
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
