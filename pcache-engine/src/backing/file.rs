//! A backing file or block device with positional I/O.
//!
//! The device is opened twice where it allows `O_DIRECT`: aligned transfers (buffer
//! address, offset and length all multiples of the direct-I/O alignment) bypass the page
//! cache; anything else goes through the buffered descriptor. Mixing the two is coherent
//! on Linux (direct I/O writes back and invalidates the page-cache range it covers).

use super::{check, Backing};
use crate::media::file::file_size;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `_IO(0x12, 119)`: discard a byte range of a block device.
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `_IO(0x12, 127)`: zero a byte range of a block device.
const BLKZEROOUT: libc::c_ulong = 0x127f;
/// `_IO(0x12, 104)`: logical block size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;

/// A file or block device.
#[derive(Debug)]
pub struct FileBacking {
    buffered: File,
    direct: Option<File>,
    align: u64,
    size: u64,
    is_block: bool,
    path: PathBuf,
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
        Ok(Self {
            buffered,
            direct,
            align,
            size,
            is_block,
            path: path.to_path_buf(),
        })
    }

    /// Whether aligned transfers use `O_DIRECT`.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn pick(&self, off: u64, ptr: *const u8, len: usize) -> &File {
        match &self.direct {
            Some(d)
                if off % self.align == 0
                    && (len as u64) % self.align == 0
                    && (ptr as u64) % self.align == 0 =>
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
