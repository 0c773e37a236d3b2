//! One writer per cache: the claim every program takes before it touches a cache or
//! backing device.
//!
//! A writer (the pcache-ublk daemon, `pcache-mkfs`, `pcache-fsck --repair`,
//! `pcache-replay --writeback`) takes an [`Claim::exclusive`] claim before its first write
//! and holds it until its last: an exclusive `flock` on the path, plus, for a block device,
//! an `O_EXCL` open kept for as long as the claim lives (the kernel's own exclusive claim:
//! it fails while the device is mounted or held by device-mapper, and while we hold it
//! neither can take it). The program then opens the device again without `O_EXCL` (which
//! the kernel allows to the holder's own opens).
//!
//! A reader (`pcache-dump`, `pcache-fsck` without `--repair`, `pcache-replay` without
//! `--writeback`) takes a [`Claim::shared`] claim: a shared `flock`, so readers never
//! exclude each other but a writer cannot start under them (and they see no torn state),
//! and a short `O_EXCL` probe of a block device to learn whether the kernel holds it.
//!
//! A refused claim names its holder where it can be found ([`Holder`]): the process from
//! `/proc/locks` and, for a pcache-ublk daemon, the device id from its run record.
//!
//! Taking a claim never writes to the device.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The run directory where pcache-ublk daemons record themselves (`<id>.json` with their
/// `pid`); `PCACHE_UBLK_RUN_DIR` moves it (tests do).
pub const DEFAULT_UBLK_RUN_DIR: &str = "/run/pcache-ublk";

/// The pcache-ublk run directory in effect.
#[must_use]
pub fn ublk_run_dir() -> PathBuf {
    std::env::var_os("PCACHE_UBLK_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_UBLK_RUN_DIR), PathBuf::from)
}

/// What a device path names: the one device-kind detector of pcache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file (emulated persistent memory, or an image).
    File,
    /// A block device (`/dev/pmemN`, `/dev/sdX`).
    Block,
    /// A character device (device-DAX, `/dev/daxN.M`).
    Char,
}

impl DeviceKind {
    /// The kind of what `meta` describes, or `None` for a directory, socket, fifo, ….
    #[must_use]
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        let ft = meta.file_type();
        if ft.is_file() {
            Some(Self::File)
        } else if ft.is_block_device() {
            Some(Self::Block)
        } else if ft.is_char_device() {
            Some(Self::Char)
        } else {
            None
        }
    }

    /// The kind of what `path` names.
    ///
    /// # Errors
    /// `stat` failed, or the path is neither a file, a block device nor a character device.
    pub fn detect(path: &Path) -> io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Self::of(&meta).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                if meta.is_dir() {
                    "a directory, not a block device, DAX device or regular file"
                } else {
                    "not a block device, DAX device or regular file"
                },
            )
        })
    }
}

/// Who holds a device, as far as can be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process holds the `flock` (from `/proc/locks`).
    Process {
        /// Its pid.
        pid: u32,
        /// Its name (`/proc/PID/comm`), if readable.
        program: Option<String>,
        /// For a pcache-ublk daemon: the ublk device id it serves (from its run record).
        ublk_dev: Option<u32>,
        /// Whether the lock is shared (a reader) rather than exclusive.
        shared: bool,
    },
    /// The kernel refused an `O_EXCL` open: device-mapper (the kernel's dm-pcache, for
    /// example), a mounted file system, or another exclusive opener.
    Kernel {
        /// The device-mapper or other holders listed in `/sys/dev/block/M:m/holders`.
        holders: Vec<String>,
        /// Where it is mounted, if it is (from `/proc/self/mountinfo`).
        mount: Option<String>,
    },
    /// The lock is taken, but `/proc/locks` did not say by whom.
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process {
                pid,
                program,
                ublk_dev,
                shared,
            } => {
                let name = program.as_deref().unwrap_or("a process");
                match ublk_dev {
                    Some(id) => write!(f, "{name} device {id} (pid {pid})")?,
                    None => write!(f, "{name} (pid {pid})")?,
                }
                if *shared {
                    f.write_str(", reading it")?;
                }
                Ok(())
            }
            Holder::Kernel { holders, mount } => {
                if !holders.is_empty() {
                    write!(f, "the kernel (device-mapper: {})", holders.join(", "))
                } else if let Some(m) = mount {
                    write!(f, "the kernel (mounted at {m})")
                } else {
                    f.write_str("the kernel (device-mapper, a mount, or another exclusive open)")
                }
            }
            Holder::Unknown => f.write_str("another process (flock)"),
        }
    }
}

/// Why a claim was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The path is missing, of the wrong type, or cannot be opened.
    #[error("{role} {path}")]
    Device {
        /// `cache` or `backing`.
        role: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Someone else holds the device.
    #[error("{role} {path} is in use by {holder}")]
    Busy {
        /// `cache` or `backing`.
        role: &'static str,
        /// The path as given.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// Another program holds one cache of a shared device.
    #[error("cache {what} of {path} is in use by {holder}")]
    RangeBusy {
        /// The shared device.
        path: PathBuf,
        /// The cache (its name, or "the cache table").
        what: String,
        /// Who holds it.
        holder: Holder,
    },
    /// The cache and the backing device are the same file or device.
    #[error("cache {cache} and backing {backing} are the same device")]
    SameDevice {
        /// The cache path.
        cache: PathBuf,
        /// The backing path.
        backing: PathBuf,
    },
}

impl ClaimError {
    /// The holder, for [`ClaimError::Busy`].
    #[must_use]
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            ClaimError::Busy { holder, .. } | ClaimError::RangeBusy { holder, .. } => Some(holder),
            _ => None,
        }
    }
}

/// What makes two paths the same device: (kind, st_dev, st_ino) for files, (kind, 0,
/// st_rdev) for device nodes.
type Identity = (u8, u64, u64);

fn identity_of(meta: &std::fs::Metadata) -> Identity {
    match DeviceKind::of(meta) {
        Some(DeviceKind::Block) => (1, 0, meta.rdev()),
        Some(DeviceKind::Char) => (2, 0, meta.rdev()),
        _ => (0, meta.dev(), meta.ino()),
    }
}

/// An exclusive or shared claim on a cache or backing device, released on drop.
#[derive(Debug)]
pub struct Claim {
    role: &'static str,
    path: PathBuf,
    kind: DeviceKind,
    identity: Identity,
    exclusive: bool,
    /// The file holding the `flock`.
    _lock: File,
    /// An exclusive claim's `O_EXCL` open of a block device.
    _excl: Option<File>,
}

impl Claim {
    /// Takes the writer's claim on `path`: an exclusive `flock` and, for a block device,
    /// an `O_EXCL` open held until drop.
    ///
    /// # Errors
    /// [`ClaimError::Device`] if the path is missing or of the wrong type,
    /// [`ClaimError::Busy`] if someone holds it (a reader too).
    pub fn exclusive(role: &'static str, path: &Path) -> Result<Self, ClaimError> {
        Self::take(role, path, true)
    }

    /// Takes a reader's claim on `path`: a shared `flock` held until drop, after checking
    /// that the kernel does not hold a block device.
    ///
    /// # Errors
    /// As [`Claim::exclusive`]; [`ClaimError::Busy`] only for a writer.
    pub fn shared(role: &'static str, path: &Path) -> Result<Self, ClaimError> {
        Self::take(role, path, false)
    }

    fn take(role: &'static str, path: &Path, exclusive: bool) -> Result<Self, ClaimError> {
        let dev_err = |source: io::Error| ClaimError::Device {
            role,
            path: path.to_owned(),
            source,
        };
        let busy = |holder| ClaimError::Busy {
            role,
            path: path.to_owned(),
            holder,
        };
        let meta = std::fs::metadata(path).map_err(dev_err)?;
        let kind = DeviceKind::detect(path).map_err(dev_err)?;
        // The flock first: a pcache holder is named more precisely by it than by O_EXCL.
        let file = OpenOptions::new().read(true).open(path).map_err(dev_err)?;
        let locked = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(busy(lock_holder(&meta))),
            Err(TryLockError::Error(e)) => return Err(dev_err(e)),
        }
        let mut excl = None;
        if kind == DeviceKind::Block {
            // An O_EXCL open of a block device is an exclusive claim in the kernel; it fails
            // with EBUSY while the device is mounted or held by device-mapper. Plain opens
            // (the program's own) still succeed while we hold it. A reader only probes.
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(path)
            {
                Ok(f) => {
                    if exclusive {
                        excl = Some(f);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(busy(kernel_holder(meta.rdev())));
                }
                Err(e) => return Err(dev_err(e)),
            }
        }
        Ok(Claim {
            role,
            path: path.to_owned(),
            kind,
            identity: identity_of(&meta),
            exclusive,
            _lock: file,
            _excl: excl,
        })
    }

    /// The path as given.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the path names.
    #[must_use]
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// `cache` or `backing`.
    #[must_use]
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Whether this is a writer's claim.
    #[must_use]
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Whether two claims name the same file or device.
    #[must_use]
    pub fn same_device(&self, other: &Claim) -> bool {
        self.identity == other.identity
    }
}

/// Takes the same kind of claim on the cache and the backing device, refusing the same
/// device twice.
///
/// # Errors
/// As [`Claim::exclusive`], or [`ClaimError::SameDevice`].
pub fn claim_pair(
    cache: &Path,
    backing: &Path,
    exclusive: bool,
) -> Result<(Claim, Claim), ClaimError> {
    let cache_claim = Claim::take("cache", cache, exclusive)?;
    // Check identity before locking the backing path: a second flock on the same inode
    // from this process would fail as "busy", which is the wrong message.
    if let Ok(meta) = std::fs::metadata(backing) {
        if identity_of(&meta) == cache_claim.identity {
            return Err(ClaimError::SameDevice {
                cache: cache.to_owned(),
                backing: backing.to_owned(),
            });
        }
    }
    let backing_claim = Claim::take("backing", backing, exclusive)?;
    Ok((cache_claim, backing_claim))
}

/// glibc's `dev_t` encoding (`gnu_dev_major`, `gnu_dev_minor`).
#[must_use]
pub fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

/// The holder of the flock on the file `meta` describes, from `/proc/locks`.
fn lock_holder(meta: &std::fs::Metadata) -> Holder {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Holder::Unknown;
    };
    let (major, minor) = major_minor(meta.dev());
    let Some((pid, shared)) = find_lock(&text, major, minor, meta.ino()) else {
        return Holder::Unknown;
    };
    let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let ublk_dev = if program.as_deref() == Some("pcache-ublk") {
        ublk_dev_of(&ublk_run_dir(), pid)
    } else {
        None
    };
    Holder::Process {
        pid,
        program,
        ublk_dev,
        shared,
    }
}

/// Finds a granted FLOCK on `major:minor:ino` in the text of `/proc/locks`: the holder's
/// pid and whether the lock is shared.
fn find_lock(text: &str, major: u64, minor: u64, ino: u64) -> Option<(u32, bool)> {
    text.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:05:678 0 EOF"; waiters have "->" after the
        // number.
        let mut f = line.split_whitespace().skip(1);
        if f.next()? != "FLOCK" {
            return None;
        }
        let _advisory = f.next()?;
        let shared = match f.next()? {
            "READ" => true,
            "WRITE" => false,
            _ => return None,
        };
        let pid: u32 = f.next()?.parse().ok()?;
        let mut id = f.next()?.split(':');
        let (ma, mi, i) = (id.next()?, id.next()?, id.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        same.then_some((pid, shared))
    })
}

/// The ublk device id a pcache-ublk daemon with this pid recorded in `dir`.
fn ublk_dev_of(dir: &Path, pid: u32) -> Option<u32> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let id: u32 = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
        (rec.get("pid")?.as_u64()? == u64::from(pid)).then_some(id)
    })
}

/// Who holds a block device exclusively in the kernel: its `holders` in sysfs, or its
/// mount point.
fn kernel_holder(rdev: u64) -> Holder {
    let (major, minor) = major_minor(rdev);
    let mut holders: Vec<String> =
        std::fs::read_dir(format!("/sys/dev/block/{major}:{minor}/holders"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
    holders.sort();
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| find_mount(&t, major, minor));
    Holder::Kernel { holders, mount }
}

/// The mount point of `major:minor` in the text of `/proc/self/mountinfo`.
fn find_mount(text: &str, major: u64, minor: u64) -> Option<String> {
    let want = format!("{major}:{minor}");
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_id, _parent, dev, _root, point) =
            (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        (dev == want).then(|| point.to_owned())
    })
}

mod range;
pub use range::{range_writer, RangeClaim};

#[cfg(test)]
mod tests;
