//! Claims on one cache of a shared cache device: a byte-range lock on its range.
//!
//! A program that reads or writes one cache of a shared device holds a *shared* `flock` on
//! the device (so a program that writes the whole device, such as `pcache-shared format`,
//! cannot start under it, and it cannot start under that one) and an open file
//! description lock (`F_OFD_SETLK`) on the bytes of its cache's range: exclusive for a
//! writer, shared for a reader. Programs on different caches never exclude each other;
//! the table's writers lock the table's bytes the same way. OFD locks belong to the open
//! file, not the process, so two claims in one process exclude each other too, and they
//! go with the file when the process dies.
//!
//! A block device is not opened `O_EXCL` (the kernel allows one such holder, and several
//! daemons share the device); it is probed like a reader's claim, so a device that
//! device-mapper or a mount holds is still refused.

use super::{kernel_holder, lock_holder, ClaimError, DeviceKind, Holder};
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A claim on `[start, start + len)` of a shared device, released on drop.
#[derive(Debug)]
pub struct RangeClaim {
    path: PathBuf,
    start: u64,
    len: u64,
    exclusive: bool,
    _file: File,
}

impl RangeClaim {
    /// Takes the claim on `[start, start + len)` of `path` for the cache `what` (for
    /// messages): exclusive for a writer, shared for a reader.
    ///
    /// # Errors
    /// [`ClaimError::Device`] if the path cannot be opened; [`ClaimError::Busy`] if a
    /// program holds the whole device for writing, or the kernel holds the block device;
    /// [`ClaimError::RangeBusy`] if another program holds the range.
    pub fn take(
        path: &Path,
        what: &str,
        start: u64,
        len: u64,
        exclusive: bool,
    ) -> Result<Self, ClaimError> {
        let dev_err = |source: io::Error| ClaimError::Device {
            role: "cache",
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(dev_err)?;
        let kind = DeviceKind::detect(path).map_err(dev_err)?;
        // A write lock needs a file open for writing.
        let file = OpenOptions::new()
            .read(true)
            .write(exclusive)
            .open(path)
            .map_err(dev_err)?;
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ClaimError::Busy {
                    role: "cache",
                    path: path.to_owned(),
                    holder: lock_holder(&meta),
                })
            }
            Err(TryLockError::Error(e)) => return Err(dev_err(e)),
        }
        if kind == DeviceKind::Block {
            probe_kernel(path, meta.rdev())?;
        }
        let kind_of_lock = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        match ofd_lock(&file, kind_of_lock, start, len) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                return Err(ClaimError::RangeBusy {
                    path: path.to_owned(),
                    what: what.to_owned(),
                    holder: range_holder(path, what),
                })
            }
            Err(e) => return Err(dev_err(e)),
        }
        Ok(Self {
            path: path.to_owned(),
            start,
            len,
            exclusive,
            _file: file,
        })
    }

    /// The device path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The range, `(start, len)`.
    #[must_use]
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.len)
    }

    /// Whether this is a writer's claim.
    #[must_use]
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

/// Whether a program holds `[start, start + len)` of `path` for writing (a reader's
/// question: is this cache live?). `None` when nobody does.
#[must_use]
pub fn range_writer(path: &Path, what: &str, start: u64, len: u64) -> Option<Holder> {
    let file = File::open(path).ok()?;
    let mut fl = flock_for(libc::F_RDLCK, start, len);
    // SAFETY: F_OFD_GETLK reads and writes the `flock` we pass, which lives across the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 || i32::from(fl.l_type) == libc::F_UNLCK {
        return None;
    }
    Some(range_holder(path, what))
}

fn flock_for(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all zeros is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    // The lock kinds and SEEK_SET are small constants.
    #[allow(clippy::cast_possible_truncation)]
    {
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
    }
    fl.l_start = i64::try_from(start).unwrap_or(i64::MAX);
    fl.l_len = i64::try_from(len).unwrap_or(i64::MAX);
    fl
}

fn ofd_lock(file: &File, kind: libc::c_int, start: u64, len: u64) -> io::Result<()> {
    let fl = flock_for(kind, start, len);
    // SAFETY: F_OFD_SETLK reads the `flock` we pass (l_pid must be 0, as zeroed), which
    // lives across the call; the lock belongs to `file`'s open file description.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Probes a block device with a short `O_EXCL` open: refused while the kernel holds it
/// (device-mapper, a mount). Another pcache program's probe can hold it for an instant,
/// so a refusal is retried a few times first.
fn probe_kernel(path: &Path, rdev: u64) -> Result<(), ClaimError> {
    for attempt in 0..20 {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
            Err(source) => {
                return Err(ClaimError::Device {
                    role: "cache",
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    Err(ClaimError::Busy {
        role: "cache",
        path: path.to_owned(),
        holder: kernel_holder(rdev),
    })
}

/// Who holds a cache's range: a pcache-ublk daemon whose run record names this device
/// and cache, else an unnamed program (OFD locks do not record a pid).
fn range_holder(path: &Path, what: &str) -> Holder {
    let dir = super::ublk_run_dir();
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let found = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.flatten().find_map(|e| {
            let name = e.file_name();
            let id: u32 = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let target = rec.get("target")?;
            let cache = PathBuf::from(target.get("cache")?.as_str()?);
            let same = std::fs::canonicalize(&cache).unwrap_or(cache) == canon;
            let named = target.get("cache_name").and_then(|v| v.as_str()) == Some(what);
            let pid = u32::try_from(rec.get("pid")?.as_u64()?).ok()?;
            (same && named).then_some((id, pid))
        })
    });
    match found {
        Some((id, pid)) => Holder::Process {
            pid,
            program: Some("pcache-ublk".into()),
            ublk_dev: Some(id),
            shared: false,
        },
        None => Holder::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::Claim;

    #[test]
    fn ranges_exclude_only_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shared.img");
        File::create(&p).unwrap().set_len(1 << 30).unwrap();
        let a = RangeClaim::take(&p, "a", 0, 100, true).unwrap();
        let _b = RangeClaim::take(&p, "b", 100, 100, true).unwrap();
        let e = RangeClaim::take(&p, "a", 50, 10, true).unwrap_err();
        assert!(e.to_string().starts_with("cache a of "), "{e}");
        assert!(matches!(e, ClaimError::RangeBusy { .. }));
        assert!(RangeClaim::take(&p, "a", 0, 100, false).is_err());
        assert!(range_writer(&p, "a", 0, 100).is_some());
        assert!(range_writer(&p, "c", 200, 100).is_none());
        // A whole-device writer cannot start under them, nor they under it.
        assert!(Claim::exclusive("cache", &p).is_err());
        drop(a);
        let _r1 = RangeClaim::take(&p, "a", 0, 100, false).unwrap();
        let _r2 = RangeClaim::take(&p, "a", 0, 100, false).unwrap();
        assert!(range_writer(&p, "a", 0, 100).is_none());
        assert!(RangeClaim::take(&p, "a", 0, 100, true).is_err());
        drop((_b, _r1, _r2));
        let whole = Claim::exclusive("cache", &p).unwrap();
        let e = RangeClaim::take(&p, "a", 0, 100, false).unwrap_err();
        assert!(matches!(e, ClaimError::Busy { .. }), "{e}");
        drop(whole);
    }
}
