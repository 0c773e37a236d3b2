//! Claiming the cache and backing devices before anything is created.
//!
//! A [`Claim`] holds an exclusive `flock` on the path for as long as the daemon runs, so a
//! second pcache-ublk given the same cache or backing device refuses with a clear error
//! before any ublk device exists. Block devices are additionally opened with `O_EXCL`
//! and kept open: that fails while the device is mounted or held by device-mapper (the
//! kernel's dm-pcache, for example), and while we hold it nobody can mount the backing
//! device under the cache. The engine opens the devices itself afterwards (without
//! `O_EXCL`, which the kernel allows).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// What a cache path names, which decides the engine's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (emulated persistent memory, for tests and development).
    File,
    /// A block device (`/dev/pmemN` is one).
    Block,
    /// A character device (device-DAX, `/dev/daxN.M`).
    Char,
}

/// An exclusive claim on a cache or backing device, released on drop.
#[derive(Debug)]
pub struct Claim {
    role: &'static str,
    path: PathBuf,
    kind: Kind,
    identity: Identity,
    _lock: Flock<File>,
    _excl: Option<File>,
}

/// What makes two paths the same device: (kind, st_dev, st_ino) for files, (kind, 0,
/// st_rdev) for device nodes.
type Identity = (u8, u64, u64);

fn identity_of(meta: &std::fs::Metadata) -> Identity {
    let ft = meta.file_type();
    if ft.is_block_device() {
        (1, 0, meta.rdev())
    } else if ft.is_char_device() {
        (2, 0, meta.rdev())
    } else {
        (0, meta.dev(), meta.ino())
    }
}

impl Claim {
    /// Checks that `path` exists and is usable, then takes the exclusive lock.
    ///
    /// # Errors
    /// [`Error::Device`] if the path is missing or of the wrong type, [`Error::Busy`] if
    /// another process holds it.
    pub fn take(role: &'static str, path: &Path) -> Result<Self, Error> {
        let dev_err = |source: io::Error| Error::Device {
            role,
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(dev_err)?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_char_device() {
            Kind::Char
        } else {
            return Err(dev_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a block device, DAX device or regular file",
            )));
        };
        let mut excl = None;
        if kind == Kind::Block {
            // An O_EXCL open of a block device is an exclusive claim in the kernel; it fails
            // with EBUSY while the device is mounted or held by device-mapper. Plain opens
            // (the engine's) still succeed while we hold it.
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(path)
            {
                Ok(f) => excl = Some(f),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(Error::Busy {
                        role,
                        path: path.to_owned(),
                        holder: "mounted, held by device-mapper, or opened exclusively",
                    });
                }
                Err(e) => return Err(dev_err(e)),
            }
        }
        let file = OpenOptions::new().read(true).open(path).map_err(dev_err)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                Error::Busy {
                    role,
                    path: path.to_owned(),
                    holder: "locked by another pcache-ublk (or another flock user)",
                }
            } else {
                dev_err(io::Error::from(errno))
            }
        })?;
        Ok(Claim {
            role,
            path: path.to_owned(),
            kind,
            identity: identity_of(&meta),
            _lock: lock,
            _excl: excl,
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the path names.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `cache` or `backing`.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Whether two claims name the same file or device.
    pub fn same_device(&self, other: &Claim) -> bool {
        self.identity == other.identity
    }
}

/// Claims the cache and the backing device, refusing the same device twice.
///
/// # Errors
/// As [`Claim::take`], or [`Error::SameDevice`].
pub fn claim_pair(cache: &Path, backing: &Path) -> Result<(Claim, Claim), Error> {
    let cache_claim = Claim::take("cache", cache)?;
    // Check identity before locking the backing path: a second flock on the same inode
    // from this process would fail as "busy", which is the wrong message.
    if let Ok(meta) = std::fs::metadata(backing) {
        if identity_of(&meta) == cache_claim.identity {
            return Err(Error::SameDevice {
                cache: cache.to_owned(),
                backing: backing.to_owned(),
            });
        }
    }
    let backing_claim = Claim::take("backing", backing)?;
    Ok((cache_claim, backing_claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, vec![0_u8; 4096]).unwrap();
        p
    }

    #[test]
    fn a_missing_device_is_reported_with_its_role_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Claim::take("cache", &dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, Error::Device { role: "cache", .. }), "{err}");
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Claim::take("backing", dir.path()).unwrap_err();
        assert!(matches!(err, Error::Device { .. }), "{err}");
    }

    #[test]
    fn a_second_claim_on_the_same_file_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "cache.img");
        let first = Claim::take("cache", &p).unwrap();
        assert_eq!(first.kind(), Kind::File);
        let err = Claim::take("cache", &p).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        drop(first);
        Claim::take("cache", &p).unwrap();
    }

    #[test]
    fn the_lock_holds_against_another_process() {
        // flock locks are per open file description, so a child process that opens the
        // path on its own must see it locked.
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "backing.img");
        let _claim = Claim::take("backing", &p).unwrap();
        let out = std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(&p)
            .arg("true")
            .output();
        match out {
            Ok(o) => assert!(!o.status.success(), "flock(1) got the lock"),
            Err(e) => eprintln!("skipping the cross-process check: flock(1) unavailable: {e}"),
        }
    }

    #[test]
    fn the_same_file_as_cache_and_backing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "x.img");
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let err = claim_pair(&p, &link).unwrap_err();
        assert!(matches!(err, Error::SameDevice { .. }), "{err}");
    }

    #[test]
    fn a_hard_link_is_the_same_device() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "x.img");
        let link = dir.path().join("hard.img");
        std::fs::hard_link(&p, &link).unwrap();
        let err = claim_pair(&p, &link).unwrap_err();
        assert!(matches!(err, Error::SameDevice { .. }), "{err}");
    }

    #[test]
    fn a_claim_by_another_path_to_the_same_file_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "c.img");
        let link = dir.path().join("c-link.img");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let _first = Claim::take("cache", &p).unwrap();
        let err = Claim::take("cache", &link).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn a_device_node_that_is_not_a_block_device_has_its_own_identity() {
        // /dev/null is a character device: claimable (the engine decides whether it is
        // usable), and never the same device as a regular file.
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, "b.img");
        let null = Path::new("/dev/null");
        if !null.exists() {
            eprintln!("skipping: no /dev/null");
            return;
        }
        let (c, b) = claim_pair(null, &f).unwrap();
        assert_eq!(c.kind(), Kind::Char);
        assert!(!c.same_device(&b));
    }

    #[test]
    fn distinct_files_are_claimed_together() {
        let dir = tempfile::tempdir().unwrap();
        let (c, b) = claim_pair(&file(&dir, "c.img"), &file(&dir, "b.img")).unwrap();
        assert_eq!((c.role(), b.role()), ("cache", "backing"));
        assert!(!c.same_device(&b));
    }
}
