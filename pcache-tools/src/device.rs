//! Access to a cache device: a regular file (usually sparse), a block device (`/dev/pmem0`)
//! or a DAX character device (`/dev/dax0.0`).
//!
//! The tools see a device only through two small traits, [`Image`] (sized, positional
//! reads) and [`ImageMut`] (positional writes and a durability barrier), so everything they
//! do can be run against an in-memory image in tests.
//!
//! The bytes are the engine's media ([`DaxMedia`]: one mapping, flush and fence
//! implementation for the whole of pcache): files and block devices are mapped and made
//! durable with `msync`; a DAX character device is mapped and made durable by flushing
//! the CPU cache lines written and a fence. A read of a poisoned line (a machine check) or
//! of a file truncated under the mapping is an I/O error naming the byte, not a crash.
//!
//! Opening a device takes pcache's claim on it ([`pcache_engine::claim`], the one the
//! daemon takes): a writer's exclusive claim for [`Access::ReadWrite`], refused while any
//! other program holds the cache; a reader's shared claim for [`Access::ReadOnly`], which
//! keeps writers out while we read. A reader still opens a cache a writer holds (a live
//! cache), and [`Device::live`] names the holder so the tool can warn that what it reads
//! may be torn.

use std::io;
use std::path::{Path, PathBuf};

use pcache_engine::claim::{self, Claim, ClaimError, Holder, RangeClaim};
use pcache_engine::format::shared::TableEntry;
use pcache_engine::media::{CacheMedia, DaxMedia, MediaError};
use pcache_engine::shared::{SharedDevice, SharedError};

use pcache_engine::report::image::{io_error as io_err, range};
pub use pcache_engine::report::Image;

/// A cache device the tools may write.
pub trait ImageMut: Image {
    /// Writes `buf` at byte `off`. Not durable until [`ImageMut::sync`] returns.
    ///
    /// # Errors
    /// The range is not inside the device, or the write failed.
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes every write so far durable.
    ///
    /// # Persistence
    /// When this returns `Ok`, all data passed to [`ImageMut::write_at`] before the call
    /// survives a power failure.
    ///
    /// # Errors
    /// The flush failed; nothing can be assumed about what is durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Whether a device is opened for reading only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only (dump, fsck without `--repair`).
    ReadOnly,
    /// Reading and writing (mkfs, fsck `--repair`): refused while another program holds
    /// the device (a pcache-ublk daemon, another tool, or, for a block device, a mount or
    /// device-mapper through `O_EXCL`).
    ReadWrite,
}

/// What kind of device a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A regular file.
    File,
    /// A block device.
    Block,
    /// A DAX character device, accessed through a mapping.
    Dax,
}

/// Why a device could not be opened or accessed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// `open` or `stat` failed.
    #[error("cannot open")]
    Open(#[source] io::Error),
    /// The path is neither a regular file, a block device nor a character device.
    #[error("not a block device, DAX device or regular file ({0})")]
    Unsupported(&'static str),
    /// The size could not be determined.
    #[error("cannot determine the size")]
    Size(#[source] io::Error),
    /// A DAX device could not be mapped.
    #[error("cannot map the DAX device")]
    Map(#[source] io::Error),
    /// Another program holds the device; nothing was written.
    #[error("in use by {0}; nothing was written (stop it first)")]
    Busy(Holder),
    /// The device is not a shared cache device, its table cannot be read, or it has no
    /// such cache.
    #[error(transparent)]
    Shared(#[from] SharedError),
}

/// An opened cache device.
pub struct Device {
    path: PathBuf,
    kind: DeviceKind,
    size: u64,
    /// The mapping (none for an empty file).
    media: Option<DaxMedia>,
    /// Where the bytes seen start on the device: the cache's range on a shared device.
    base: u64,
    /// The cache of a shared device this is, if it is one.
    cache: Option<TableEntry>,
    /// The range claim on that cache.
    _range: Option<RangeClaim>,
    /// The bytes written since the last sync.
    dirty: Option<(u64, u64)>,
    /// Our claim, held as long as the device is open (none when a reader found it live).
    _claim: Option<Claim>,
    /// Who holds the device, when a reader opened it live.
    live: Option<Holder>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens `path` with pcache's claim on it (see the module documentation). Nothing is
    /// written by opening, whatever the access.
    ///
    /// # Errors
    /// The path cannot be opened, is of an unsupported type, or its size is unknown;
    /// [`DeviceError::Busy`] for [`Access::ReadWrite`] on a device another program holds.
    pub fn open(path: &Path, access: Access) -> Result<Self, DeviceError> {
        let meta = std::fs::metadata(path).map_err(DeviceError::Open)?;
        let kind = match claim::DeviceKind::of(&meta) {
            Some(claim::DeviceKind::File) => DeviceKind::File,
            Some(claim::DeviceKind::Block) => DeviceKind::Block,
            Some(claim::DeviceKind::Char) => DeviceKind::Dax,
            None if meta.is_dir() => return Err(DeviceError::Unsupported("a directory")),
            None => return Err(DeviceError::Unsupported("a special file")),
        };
        let (claim, live) = match access {
            Access::ReadWrite => (
                Some(Claim::exclusive("cache", path).map_err(claim_err)?),
                None,
            ),
            Access::ReadOnly => match Claim::shared("cache", path) {
                Ok(c) => (Some(c), None),
                Err(ClaimError::Busy { holder, .. }) => (None, Some(holder)),
                Err(e) => return Err(claim_err(e)),
            },
        };
        // The claim holds the block device's O_EXCL open: our own opens still work.
        let media = if kind == DeviceKind::File && meta.len() == 0 {
            None
        } else {
            Some(DaxMedia::open(path, access == Access::ReadOnly).map_err(media_err)?)
        };
        Ok(Self {
            path: path.to_owned(),
            kind,
            size: media.as_ref().map_or(0, CacheMedia::len),
            media,
            base: 0,
            cache: None,
            _range: None,
            dirty: None,
            _claim: claim,
            live,
        })
    }

    /// Opens the cache `sel` (a name, or an id) of the shared device at `path`: the bytes
    /// seen are its range, exactly a kernel cache device of that size. The claim is the
    /// range claim ([`RangeClaim`]): exclusive for [`Access::ReadWrite`], refused while
    /// another program holds that cache; shared for [`Access::ReadOnly`], which opens a
    /// cache a writer holds with [`Device::live`] set.
    ///
    /// # Errors
    /// As [`Device::open`]; [`DeviceError::Shared`] when the device is not shared, its
    /// table cannot be read, or it has no such cache.
    pub fn open_cache(path: &Path, sel: &str, access: Access) -> Result<Self, DeviceError> {
        let meta = std::fs::metadata(path).map_err(DeviceError::Open)?;
        let kind = match claim::DeviceKind::of(&meta) {
            Some(claim::DeviceKind::File) => DeviceKind::File,
            Some(claim::DeviceKind::Block) => DeviceKind::Block,
            Some(claim::DeviceKind::Char) => DeviceKind::Dax,
            None => return Err(DeviceError::Unsupported("a special file")),
        };
        let ro = DaxMedia::open(path, true).map_err(media_err)?;
        let entry = SharedDevice::read(&ro)?.entry(sel)?.clone();
        drop(ro);
        let exclusive = access == Access::ReadWrite;
        let (range, live) =
            match RangeClaim::take(path, &entry.name, entry.start, entry.len, exclusive) {
                Ok(c) => (Some(c), None),
                Err(ClaimError::RangeBusy { holder, .. }) if !exclusive => (None, Some(holder)),
                Err(e) => return Err(claim_err(e)),
            };
        // Read again under the claim: the table may have changed in between.
        let media = DaxMedia::open(path, !exclusive).map_err(media_err)?;
        let now = SharedDevice::read(&media)?.entry(sel)?.clone();
        if now != entry {
            return Err(DeviceError::Shared(SharedError::NoSuchCache(
                sel.to_owned(),
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            kind,
            size: entry.len,
            media: Some(media),
            base: entry.start,
            cache: Some(entry),
            _range: range,
            dirty: None,
            _claim: None,
            live,
        })
    }

    /// The cache of a shared device this is ([`Device::open_cache`]).
    #[must_use]
    pub fn cache(&self) -> Option<&TableEntry> {
        self.cache.as_ref()
    }

    /// Who holds the device, if it was opened for reading while another program held it
    /// for writing: what is read may be torn by its writes.
    #[must_use]
    pub fn live(&self) -> Option<&Holder> {
        self.live.as_ref()
    }

    /// The path it was opened with.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of device.
    #[must_use]
    pub const fn kind(&self) -> DeviceKind {
        self.kind
    }
}

fn claim_err(e: ClaimError) -> DeviceError {
    match e {
        ClaimError::Busy { holder, .. } | ClaimError::RangeBusy { holder, .. } => {
            DeviceError::Busy(holder)
        }
        ClaimError::Device { source, .. } => DeviceError::Open(source),
        other => DeviceError::Open(io::Error::other(other)),
    }
}

fn media_err(e: MediaError) -> DeviceError {
    match e {
        MediaError::Io { op: "open", source } => DeviceError::Open(source),
        MediaError::Io { op: "size", source } => DeviceError::Size(source),
        MediaError::Io { source, .. } => DeviceError::Map(source),
        other => DeviceError::Map(io::Error::other(other)),
    }
}

impl Image for Device {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        range(off, buf.len(), self.size)?;
        match &self.media {
            Some(m) => m.read(self.base + off, buf).map_err(io_err),
            None => Ok(()),
        }
    }
}

impl ImageMut for Device {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        range(off, buf.len(), self.size)?;
        let Some(m) = &self.media else {
            return Ok(());
        };
        m.write(self.base + off, buf).map_err(io_err)?;
        let off = self.base + off;
        let end = off + buf.len() as u64;
        self.dirty = Some(match self.dirty {
            Some((lo, hi)) => (lo.min(off), hi.max(end)),
            None => (off, end),
        });
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let (Some(m), Some((lo, hi))) = (&self.media, self.dirty.take()) else {
            return Ok(());
        };
        // The engine's persistence: flush the written range (cache lines or msync), then a
        // fence; a failed flush is latched and reported by `check`.
        m.flush(lo, hi - lo);
        m.fence();
        m.check().map_err(io_err)
    }
}

/// An image in memory, for tests and tools that build images: a byte vector.
impl ImageMut for Vec<u8> {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size())?;
        self[r].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M: ImageMut + ?Sized> ImageMut for &mut M {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(off, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose bytes cannot be read (a file truncated under its mapping stands in
    /// for a poisoned line: both raise SIGBUS) gives an I/O error naming the offset, not a
    /// crash; readable bytes read as usual.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn unreadable_mapped_bytes_are_an_io_error() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(16384).unwrap();
        f.write_all_at(&[7; 4096], 0).unwrap();
        let d = Device::open(&path, Access::ReadOnly).unwrap();
        f.set_len(8192).unwrap();
        let mut buf = vec![0; 4096];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, vec![7; 4096]);
        let e = d.read_at(8192, &mut buf).unwrap_err();
        assert!(e.to_string().contains("at byte 0x2000"), "{e}");
        let mut two = vec![0; 8192];
        let e = d.read_at(4096, &mut two).unwrap_err();
        assert!(e.to_string().contains("at byte 0x2000"), "{e}");
    }

    #[test]
    fn file_round_trip_and_bounds() {
        let dir = std::env::temp_dir().join(format!("pcache-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(8192).unwrap();
        drop(f);
        let mut d = Device::open(&path, Access::ReadWrite).unwrap();
        assert_eq!((d.size(), d.kind()), (8192, DeviceKind::File));
        d.write_at(4000, b"hello").unwrap();
        d.sync().unwrap();
        let mut buf = [0; 5];
        d.read_at(4000, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(d.read_at(8190, &mut buf).is_err());
        assert!(d.read_at(u64::MAX - 1, &mut buf).is_err());
        assert!(d.write_at(8190, &buf).is_err());
        let e = Device::open(&dir, Access::ReadOnly).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        assert!(Device::open(&dir.join("missing"), Access::ReadOnly).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vec_media_bounds() {
        let mut v = vec![0u8; 16];
        v.write_at(12, &[1, 2, 3, 4]).unwrap();
        assert!(v.write_at(13, &[1, 2, 3, 4]).is_err());
        let mut b = [0; 2];
        v.read_at(14, &mut b).unwrap();
        assert_eq!(b, [3, 4]);
    }
}
