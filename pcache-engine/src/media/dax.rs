//! Cache media on persistent memory: a device-DAX character device (`/dev/daxN.M`),
//! mapped directly and persisted with cache-line flushes and a store fence; or a pmem
//! block device (`/dev/pmemN`), which cannot be mapped with DAX: it is read and written
//! with `O_DIRECT` and persisted by `fdatasync` ([`BlockMedia`]), or, where `O_DIRECT`
//! is refused (or `PCACHE_BLOCK_MEDIA=mmap` asks for it), mapped through the page cache
//! and persisted with `msync`.

use super::block::BlockMedia;
use super::file::{FileMedia, Persist};
use super::map::{MapKind, Mapping};
use super::{CacheMedia, FlushInstr, MediaError};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Persistent memory for the cache.
pub struct DaxMedia {
    inner: Box<dyn CacheMedia>,
    /// The flush instruction, where stores are persisted by cache-line flushes.
    instr: Option<FlushInstr>,
}

impl std::fmt::Debug for DaxMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaxMedia")
            .field("media", &self.inner.describe())
            .finish()
    }
}

/// How a pmem block device is accessed: `O_DIRECT` ([`BlockMedia`]) unless the
/// environment's `PCACHE_BLOCK_MEDIA` is `mmap` (the page cache and `msync`, as before
/// [`BlockMedia`]: for comparisons), or the device refuses `O_DIRECT`.
fn block_media_direct() -> bool {
    std::env::var("PCACHE_BLOCK_MEDIA").map_or(true, |v| v != "mmap")
}

fn devdax_size(rdev: u64) -> Result<u64, MediaError> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let path = format!("/sys/dev/char/{major}:{minor}/size");
    let text = std::fs::read_to_string(&path).map_err(MediaError::io("read device-dax size"))?;
    text.trim()
        .parse()
        .map_err(|_| MediaError::Unsupported(format!("{path} holds {text:?}")))
}

impl DaxMedia {
    /// Maps `/dev/daxN.M` (device DAX) or `/dev/pmemN` (pmem block device).
    ///
    /// # Errors
    /// The device cannot be opened or mapped; a device-DAX mapping on a CPU without a
    /// cache-line flush instruction.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(MediaError::io("stat"))?;
        if meta.file_type().is_block_device() && block_media_direct() {
            if let Ok(m) = BlockMedia::open(path, read_only) {
                return Ok(Self {
                    inner: Box::new(m),
                    instr: None,
                });
            }
        }
        if !meta.file_type().is_char_device() {
            // A file (or a block device without O_DIRECT): page cache and msync (MAP_SYNC
            // is tried for a file on a DAX file system).
            let m = FileMedia::open(path, read_only)?;
            let instr = match m.persist {
                Persist::Cpu(i) => Some(i),
                Persist::Msync => None,
            };
            return Ok(Self {
                inner: Box::new(m),
                instr,
            });
        }
        let instr = FlushInstr::detect().ok_or_else(|| {
            MediaError::Unsupported("no cache-line flush instruction on this CPU".into())
        })?;
        let size = devdax_size(meta.rdev())?;
        let len =
            usize::try_from(size).map_err(|_| MediaError::Unsupported(format!("{size} bytes")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(MediaError::io("open"))?;
        // Device DAX maps the media directly whether or not MAP_SYNC is granted.
        let (map, _kind): (Mapping, MapKind) =
            Mapping::file(&file, len, !read_only, true).map_err(MediaError::io("mmap"))?;
        Ok(Self {
            inner: Box::new(FileMedia::from_parts(map, Persist::Cpu(instr), path, file)),
            instr: Some(instr),
        })
    }

    /// The flush instruction in use, if stores are persisted by cache-line flushes.
    #[must_use]
    pub fn flush_instr(&self) -> Option<FlushInstr> {
        self.instr
    }
}

impl CacheMedia for DaxMedia {
    forward_data_path!(inner);

    fn flush(&self, off: u64, len: u64) {
        self.inner.flush(off, len);
    }

    fn fence(&self) {
        self.inner.fence();
    }

    fn check(&self) -> Result<(), MediaError> {
        self.inner.check()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn describe(&self) -> String {
        format!("dax {}", self.inner.describe())
    }

    fn direct(&self) -> Option<super::Direct> {
        self.inner.direct()
    }
}
