//! Access to a cache device: a regular file (usually sparse), a block device (`/dev/pmem0`)
//! or a DAX character device (`/dev/dax0.0`).
//!
//! The tools see a device only through two small traits, [`Media`] (sized, positional
//! reads) and [`MediaMut`] (positional writes and a durability barrier), so everything they
//! do can be run against an in-memory image in tests.
//!
//! Files and block devices are read with `pread` and made durable with `fdatasync`. A DAX
//! character device cannot be `pread`: it is mapped whole with `mmap`, and written data is
//! made durable by flushing the CPU cache lines it touched (x86-64) and `msync`.
//!
//! Opening a device takes pcache's claim on it ([`pcache_engine::claim`], the one the
//! daemon takes): a writer's exclusive claim for [`Access::ReadWrite`], refused while any
//! other program holds the cache; a reader's shared claim for [`Access::ReadOnly`], which
//! keeps writers out while we read. A reader still opens a cache a writer holds (a live
//! cache), and [`Device::live`] names the holder so the tool can warn that what it reads
//! may be torn.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use pcache_engine::claim::{Claim, ClaimError, Holder};

/// A cache device as the tools read it.
pub trait Media {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from byte `off`.
    ///
    /// # Errors
    /// The range is not inside the device, or the read failed.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A cache device the tools may write.
pub trait MediaMut: Media {
    /// Writes `buf` at byte `off`. Not durable until [`MediaMut::sync`] returns.
    ///
    /// # Errors
    /// The range is not inside the device, or the write failed.
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes every write so far durable.
    ///
    /// # Persistence
    /// When this returns `Ok`, all data passed to [`MediaMut::write_at`] before the call
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
}

enum Backend {
    File(File),
    Map(memmap2::Mmap),
    MapMut(memmap2::MmapMut),
}

/// An opened cache device.
pub struct Device {
    path: PathBuf,
    kind: DeviceKind,
    size: u64,
    backend: Backend,
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
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            DeviceKind::File
        } else if ft.is_block_device() {
            DeviceKind::Block
        } else if ft.is_char_device() {
            DeviceKind::Dax
        } else if ft.is_dir() {
            return Err(DeviceError::Unsupported("a directory"));
        } else {
            return Err(DeviceError::Unsupported("a special file"));
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
        // The claim holds the block device's O_EXCL open: our own plain opens still work.
        let mut opts = OpenOptions::new();
        opts.read(true).write(access == Access::ReadWrite);
        let mut file = opts.open(path).map_err(DeviceError::Open)?;
        let (size, backend) = match kind {
            DeviceKind::File => (meta.len(), Backend::File(file)),
            DeviceKind::Block => {
                let size = file.seek(SeekFrom::End(0)).map_err(DeviceError::Size)?;
                (size, Backend::File(file))
            }
            DeviceKind::Dax => {
                let size = dax_size(meta.rdev()).map_err(DeviceError::Size)?;
                (size, map(&file, size, access)?)
            }
        };
        Ok(Self {
            path: path.to_owned(),
            kind,
            size,
            backend,
            _claim: claim,
            live,
        })
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
        ClaimError::Busy { holder, .. } => DeviceError::Busy(holder),
        ClaimError::Device { source, .. } => DeviceError::Open(source),
        other => DeviceError::Open(io::Error::other(other.to_string())),
    }
}

/// The size of a device-DAX character device, from `/sys/dev/char/MAJ:MIN/size`.
fn dax_size(rdev: u64) -> io::Result<u64> {
    // glibc's dev_t encoding (gnu_dev_major / gnu_dev_minor).
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    let attr = format!("/sys/dev/char/{major}:{minor}/size");
    let text = std::fs::read_to_string(&attr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{attr}: {e} (not a device-DAX character device?)"),
        )
    })?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{attr}: not a number: {:?}", text.trim()),
        )
    })
}

#[allow(unsafe_code)]
fn map(file: &File, size: u64, access: Access) -> Result<Backend, DeviceError> {
    let len = usize::try_from(size)
        .map_err(|_| DeviceError::Map(io::Error::other("device larger than the address space")))?;
    let mut opts = memmap2::MmapOptions::new();
    opts.len(len);
    match access {
        // SAFETY: the mapping is private to this process's `Device` and only ever read
        // through bounds-checked slices. Another process (or the kernel's dm-pcache) may
        // change the device under us; that changes the bytes we read, not their validity
        // as `u8`, and every parser treats them as untrusted.
        Access::ReadOnly => unsafe { opts.map(file) }.map(Backend::Map),
        // SAFETY: as above; writes go through bounds-checked slices, and the tools open a
        // block device exclusively for writing, so no other writer is expected.
        Access::ReadWrite => unsafe { opts.map_mut(file) }.map(Backend::MapMut),
    }
    .map_err(DeviceError::Map)
}

/// The byte range `[off, off + len)` as slice indices, if it lies inside a device of `size`.
fn range(off: u64, len: usize, size: u64) -> io::Result<std::ops::Range<usize>> {
    let end = off.checked_add(len as u64).filter(|&end| end <= size);
    match (end, usize::try_from(off)) {
        (Some(end), Ok(start)) => Ok(start..usize::try_from(end).unwrap_or(usize::MAX)),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bytes {off}..+{len} are beyond the end of the device ({size} bytes)"),
        )),
    }
}

impl Media for Device {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size)?;
        match &self.backend {
            Backend::File(f) => f.read_exact_at(buf, off),
            Backend::Map(m) => checked_copy(buf, &m[r], off),
            Backend::MapMut(m) => checked_copy(buf, &m[r], off),
        }
    }
}

/// Copies mapped device bytes with the engine's checked copy: a machine check on a
/// poisoned line (on x86-64 Linux) is an I/O error naming the offset, as `pread` of a
/// pmem block device reports it, instead of killing the tool.
fn checked_copy(buf: &mut [u8], src: &[u8], off: u64) -> io::Result<()> {
    pcache_engine::media::copy_checked(buf, src).map_err(|done| {
        io::Error::other(format!(
            "media error (machine check or SIGBUS) at byte {:#x}",
            off + done as u64
        ))
    })
}

impl MediaMut for Device {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size)?;
        match &mut self.backend {
            Backend::File(f) => f.write_all_at(buf, off),
            Backend::MapMut(m) => {
                m[r.clone()].copy_from_slice(buf);
                flush_cache_lines(&m[r]);
                Ok(())
            }
            Backend::Map(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "device opened read-only",
            )),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match &mut self.backend {
            Backend::File(f) => f.sync_data(),
            Backend::MapMut(m) => {
                store_fence();
                // Device DAX has no fsync: there, the cache-line flushes and the fence
                // above are what make the stores durable, and msync may say EINVAL.
                match m.flush() {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                    other => other,
                }
            }
            Backend::Map(_) => Ok(()),
        }
    }
}

/// Writes back the CPU cache lines holding `bytes` (x86-64 `clflush`; elsewhere the
/// `msync` in [`MediaMut::sync`] is relied on).
#[allow(unsafe_code)]
fn flush_cache_lines(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        const LINE: usize = 64;
        let start = bytes.as_ptr() as usize & !(LINE - 1);
        let end = bytes.as_ptr() as usize + bytes.len();
        let mut line = start;
        while line < end {
            // SAFETY: `clflush` only writes a cache line back; it is available on every
            // x86-64 CPU (SSE2 is baseline). The line overlaps `bytes`, which lies inside
            // a live mapping, so the address is mapped.
            unsafe { core::arch::x86_64::_mm_clflush(line as *const u8) };
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Orders the cache-line flushes before anything that follows.
fn store_fence() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no memory-safety preconditions; SSE is baseline on x86-64.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_sfence();
    }
}

/// An image in memory, for tests and tools that build images: a byte vector.
impl Media for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size())?;
        buf.copy_from_slice(&self[r]);
        Ok(())
    }
}

impl MediaMut for Vec<u8> {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let r = range(off, buf.len(), self.size())?;
        self[r].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M: Media + ?Sized> Media for &M {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(off, buf)
    }
}

impl<M: Media + ?Sized> Media for &mut M {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(off, buf)
    }
}

impl<M: MediaMut + ?Sized> MediaMut for &mut M {
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

    /// A mapped device whose bytes cannot be read (a file truncated under its mapping
    /// stands in for a poisoned line: both raise SIGBUS) gives an I/O error naming the
    /// offset, not a crash; readable bytes copy as usual.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    #[allow(unsafe_code)]
    fn unreadable_mapped_bytes_are_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(16384).unwrap();
        f.write_all_at(&[7; 4096], 0).unwrap();
        // SAFETY: the file is this test's own, open for as long as the mapping lives; its
        // truncation below is the point of the test (reads past the end must fault).
        let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        f.set_len(8192).unwrap();
        let mut buf = vec![0; 4096];
        checked_copy(&mut buf, &m[..4096], 0).unwrap();
        assert_eq!(buf, vec![7; 4096]);
        let e = checked_copy(&mut buf, &m[8192..12288], 8192).unwrap_err();
        assert!(e.to_string().contains("at byte 0x2000"), "{e}");
        let mut two = vec![0; 8192];
        let e = checked_copy(&mut two, &m[4096..12288], 4096).unwrap_err();
        assert!(e.to_string().contains("at byte 0x2000"), "{e}");
    }

    #[test]
    fn file_round_trip_and_bounds() {
        let dir = std::env::temp_dir().join(format!("pcache-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let f = File::create(&path).unwrap();
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
