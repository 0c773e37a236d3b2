//! Cache media in a mapped regular file (or a block device through the page cache),
//! persisted by `msync`. With a file on a DAX file system the mapping is asked for
//! `MAP_SYNC`; when granted, persistence uses cache-line flushes instead.

use super::map::{page_size, MapKind, Mapping};
use super::{CacheMedia, FlushInstr, MediaError};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// How stores are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// `msync` of the flushed range.
    Msync,
    /// Cache-line flushes and a store fence.
    Cpu(FlushInstr),
}

/// A file (or block device) mapped shared.
#[derive(Debug)]
pub struct FileMedia {
    pub(crate) map: Mapping,
    pub(crate) persist: Persist,
    pub(crate) path: PathBuf,
    _file: File,
    error: Mutex<Option<io::Error>>,
}

/// `_IOR(0x12, 114, size_t)`: size of a block device in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 97)`: write back and drop a block device's page cache.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Size of an open file or block device.
pub(crate) fn file_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &raw mut size) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(size)
    } else {
        Ok(meta.len())
    }
}

/// Drops a block device's page cache, so a mapping does not see pages from before the
/// kernel's dm-pcache (which writes through DAX, around the page cache) last used it.
pub(crate) fn drop_block_cache(file: &File) {
    if file
        .metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
    {
        // SAFETY: BLKFLSBUF takes no argument; failure (no CAP_SYS_ADMIN) is harmless.
        unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF as _, 0) };
        // SAFETY: posix_fadvise only drops clean page-cache pages of this file.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

impl FileMedia {
    /// Maps the file or block device at `path`, read-only or read-write.
    ///
    /// # Errors
    /// The file cannot be opened, sized or mapped.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(MediaError::io("open"))?;
        drop_block_cache(&file);
        let size = file_size(&file).map_err(MediaError::io("size"))?;
        let len =
            usize::try_from(size).map_err(|_| MediaError::Unsupported(format!("{size} bytes")))?;
        let (map, kind) =
            Mapping::file(&file, len, !read_only, true).map_err(MediaError::io("mmap"))?;
        let persist = match (kind, FlushInstr::detect()) {
            (MapKind::Sync, Some(instr)) => Persist::Cpu(instr),
            _ => Persist::Msync,
        };
        Ok(Self::from_parts(map, persist, path, file))
    }

    pub(crate) fn from_parts(map: Mapping, persist: Persist, path: &Path, file: File) -> Self {
        Self {
            map,
            persist,
            path: path.to_path_buf(),
            _file: file,
            error: Mutex::new(None),
        }
    }

    pub(crate) fn latch(&self, e: io::Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            tracing::error!(path = %self.path.display(), error = %e, "media flush failed");
            *slot = Some(e);
        }
    }

    pub(crate) fn flush_range(&self, off: u64, len: u64) {
        match self.persist {
            Persist::Msync => {
                if let Err(e) = self.map.msync(off, len) {
                    self.latch(e);
                }
            }
            Persist::Cpu(instr) => self.map.flush_lines(instr, off, len),
        }
    }

    pub(crate) fn fence_now(&self) {
        if let Persist::Cpu(_) = self.persist {
            super::flush::store_fence();
        }
    }

    pub(crate) fn latched(&self) -> Result<(), MediaError> {
        match &*self.error.lock() {
            None => Ok(()),
            Some(e) => Err(MediaError::Io {
                op: "flush",
                source: io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }
}

impl CacheMedia for FileMedia {
    forward_data_path!(map);

    fn flush(&self, off: u64, len: u64) {
        self.flush_range(off, len);
    }

    fn fence(&self) {
        self.fence_now();
    }

    fn check(&self) -> Result<(), MediaError> {
        self.latched()
    }

    fn is_read_only(&self) -> bool {
        !self.map.is_writable()
    }

    fn describe(&self) -> String {
        let how = match self.persist {
            Persist::Msync => format!("msync, {} KiB pages", page_size() / 1024),
            Persist::Cpu(i) => format!("MAP_SYNC, {i:?} + sfence"),
        };
        format!("file {} ({} bytes, {how})", self.path.display(), self.len())
    }
}
