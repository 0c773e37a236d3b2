//! A memory mapping and bounds-checked copies in and out of it. All of the media's
//! `unsafe` lives here, in `flush.rs` and in `mcsafe.rs` (the reads that survive a
//! machine check).

use super::{check_range, mcsafe, MediaError};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// How a file was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapKind {
    /// `MAP_SHARED_VALIDATE | MAP_SYNC`: stores reach the media through the CPU caches
    /// alone (DAX), so cache-line flushes make them durable.
    Sync,
    /// `MAP_SHARED`: through the page cache (or DAX without the MAP_SYNC guarantee), made
    /// durable by `msync`.
    Shared,
}

/// A mapping of `len` bytes. Reads and writes copy through raw pointers: the memory may
/// be shared with the kernel or another process, and the engine guarantees that no two
/// of its own accesses to the same bytes race (`docs/design.md`, "Concurrency").
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory owned by this value until `Drop`; every access goes
// through `read`/`write`, which copy with raw pointers inside the bounds, and the engine
// never lets two accesses to the same bytes race.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: shared references only perform bounds-checked raw copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Anonymous, private, zero-filled memory (pages are allocated on first touch).
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        Self::from_raw(ptr, len, true)
    }

    /// Maps `len` bytes of `file` shared. With `try_sync`, asks for `MAP_SYNC` first and
    /// reports which kind of mapping it got.
    pub(crate) fn file(
        file: &File,
        len: usize,
        writable: bool,
        try_sync: bool,
    ) -> io::Result<(Self, MapKind)> {
        // Before the first read of a file mapping, which may raise SIGBUS.
        mcsafe::install();
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        if try_sync && writable {
            // SAFETY: maps a file we hold open; no existing memory is affected.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len.max(1),
                    prot,
                    libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                // DAX has no page cache and so no read-around; the advice costs nothing.
                let map = Self::from_raw(ptr, len, writable)?;
                map.advise_random();
                return Ok((map, MapKind::Sync));
            }
        }
        // SAFETY: as above.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        let map = Self::from_raw(ptr, len, writable)?;
        map.advise_random();
        Ok((map, MapKind::Shared))
    }

    /// Tells the kernel that page faults on this mapping are random: each reads the page
    /// faulted and nothing around it. Without it, a fault on a page not yet in the page
    /// cache reads the device's `read_ahead_kb` around it (8 MiB on some virtual disks),
    /// and a cache's metadata is a few records every 16 MiB: a load or a scan of a cache
    /// file of 65 536 segments read half the file into the page cache (512 GiB of a
    /// sparse 1 TiB file) and took minutes, `pcache-mkfs` likewise. A cache is accessed
    /// at random anyway (its log and the data its keys point at). Advice only: a failure
    /// changes nothing else and is ignored.
    fn advise_random(&self) {
        // SAFETY: madvise on a mapping this value owns; MADV_RANDOM changes no content.
        let _ =
            unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len.max(1), libc::MADV_RANDOM) };
    }

    fn from_raw(ptr: *mut libc::c_void, len: usize, writable: bool) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("null mapping"))?;
        Ok(Self { ptr, len, writable })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Address of byte `off` (callers bounds-check before dereferencing).
    pub(super) fn at(&self, off: usize) -> *mut u8 {
        self.ptr.as_ptr().wrapping_add(off)
    }

    /// Copies `[off, off + buf.len())` into `buf` with [`mcsafe::copy_from_media`]: a
    /// machine check or SIGBUS while reading the mapping is [`MediaError::Poisoned`]
    /// (where the platform allows catching it), not the end of the process.
    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let len = buf.len();
        let start = check_range(off, len, self.len())?;
        // SAFETY: [start, start + len) is inside the mapping (checked above), which stays
        // mapped while `self` is borrowed; `buf` is a distinct Rust allocation, and no
        // write to these bytes runs concurrently.
        unsafe { mcsafe::copy_from_media(buf, self.at(start).cast_const()) }.map_err(|done| {
            MediaError::Poisoned {
                off,
                len: len as u64,
                at: off + done as u64,
            }
        })
    }

    pub(crate) fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if !self.writable {
            return Err(MediaError::ReadOnly);
        }
        let start = check_range(off, data.len(), self.len())?;
        // SAFETY: the range is inside a writable mapping (checked above), `data` does not
        // alias it, and no other access to these bytes runs concurrently.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(start), data.len()) };
        Ok(())
    }

    /// Hands `f` the mapped bytes `[off, off + len)` to fill in place
    /// ([`super::CacheMedia::fill`]).
    pub(crate) fn fill(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        if !self.writable {
            return Err(MediaError::ReadOnly);
        }
        let start = check_range(off, len, self.len())?;
        // SAFETY: [start, start + len) is inside a writable mapping (checked above), so the
        // pointer is valid, non-null and (for u8) aligned for `len` bytes, which stay mapped
        // while `self` is borrowed. The slice is the only access to these bytes while `f`
        // runs: the engine fills only fresh data space it has just allocated, and nobody
        // else reads or writes that space before its key is indexed (`docs/design.md`,
        // "Locks"); the slice does not outlive this call.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.at(start), len) };
        f(dst).map_err(MediaError::Source)
    }

    /// Hands `f` the mapped bytes `[off, off + len)` to read ([`super::CacheMedia::view`]).
    pub(crate) fn view(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let start = check_range(off, len, self.len())?;
        // SAFETY: [start, start + len) is inside the mapping (checked above), so the
        // pointer is valid, non-null and aligned for `len` bytes, which stay mapped while
        // `self` is borrowed. Nobody writes these bytes while `f` runs: the engine only
        // views data of a live extent while it holds its segment's generation, and data
        // space is written only when fresh, before any key points at it
        // (`docs/design.md`, "Locks"); the slice does not outlive this call.
        let src = unsafe { std::slice::from_raw_parts(self.at(start).cast_const(), len) };
        f(src).map_err(MediaError::Source)
    }

    /// Hands `f` the mapped bytes of every range ([`super::CacheMedia::view_many`]).
    pub(crate) fn view_many(
        &self,
        ranges: &[(u64, usize)],
        f: &mut dyn FnMut(&[&[u8]]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let mut views = Vec::with_capacity(ranges.len());
        for &(off, len) in ranges {
            let start = check_range(off, len, self.len())?;
            // SAFETY: as in `view`: the range is inside the mapping (checked above), its
            // bytes stay mapped while `self` is borrowed, nobody writes them while `f`
            // runs, and the slices do not outlive this call.
            views.push(unsafe { std::slice::from_raw_parts(self.at(start).cast_const(), len) });
        }
        f(&views).map_err(MediaError::Source)
    }

    pub(crate) fn zero(&self, off: u64, len: u64) -> Result<(), MediaError> {
        if !self.writable {
            return Err(MediaError::ReadOnly);
        }
        let n = usize::try_from(len).map_err(|_| MediaError::OutOfRange {
            off,
            len,
            size: self.len(),
        })?;
        let start = check_range(off, n, self.len())?;
        // SAFETY: the range is inside a writable mapping and not accessed concurrently.
        unsafe { std::ptr::write_bytes(self.at(start), 0, n) };
        Ok(())
    }

    /// `msync(MS_SYNC)` over the pages covering `[off, off + len)`.
    pub(crate) fn msync(&self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 || !self.writable {
            return Ok(());
        }
        let end = off.saturating_add(len).min(self.len());
        let page = page_size();
        let start = off.min(end) & !(page - 1);
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Ok(());
        };
        // SAFETY: [start, end) lies inside the mapping and `start` is page-aligned, as
        // msync requires; msync does not touch the bytes.
        let rc = unsafe { libc::msync(self.at(start).cast(), end - start, libc::MS_SYNC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Flushes the cache lines of `[off, off + len)` with `instr` (no fence).
    pub(crate) fn flush_lines(&self, instr: super::FlushInstr, off: u64, len: u64) {
        let end = off.saturating_add(len).min(self.len());
        let (Ok(start), Ok(end)) = (usize::try_from(off.min(end)), usize::try_from(end)) else {
            return;
        };
        super::flush::flush_range(instr, self.at(start), end - start);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; nothing refers to it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len.max(1));
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

/// The system page size.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}
