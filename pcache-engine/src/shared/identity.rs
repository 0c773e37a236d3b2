//! What identifies a backing device, so that a cache is never served over the wrong disk:
//! its size and, where the device has one, a stable identity read from sysfs.

use crate::claim::{major_minor, DeviceKind};
use pcache_format::shared::{BackingRecord, BACKING_ID_MAX, BACKING_PATH_MAX};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A backing device that is not the one a cache was created for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "backing {path} is not the device cache {cache:?} was created for: {}{}",
    differences.join("; "),
    created_with.as_ref().map(|p| format!(" (it was created with {p})")).unwrap_or_default()
)]
pub struct BackingMismatch {
    /// The cache.
    pub cache: String,
    /// The backing path given.
    pub path: String,
    /// What differs, one phrase each.
    pub differences: Vec<String>,
    /// The path recorded at creation, where it is not the one given.
    pub created_with: Option<String>,
}

/// The stable identity of the block device whose sysfs directory is `sys`
/// (`/sys/dev/block/M:m`), if it has one: a device-mapper or md uuid, a WWID, or a
/// serial number; a partition adds its number to its disk's.
#[must_use]
pub fn stable_id(sys: &Path) -> Option<String> {
    let read = |rel: &str| {
        std::fs::read_to_string(sys.join(rel))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    if let Some(n) = read("partition") {
        // A partition: its disk is the parent directory of the resolved link.
        let disk = std::fs::canonicalize(sys).ok()?.parent()?.to_path_buf();
        return stable_id(&disk).map(|id| format!("{id}:part{n}"));
    }
    for (rel, kind) in [
        ("dm/uuid", "dm-uuid"),
        ("md/uuid", "md-uuid"),
        ("wwid", "wwid"),
        ("device/wwid", "wwid"),
        ("serial", "serial"),
        ("device/serial", "serial"),
        ("loop/backing_file", "loop-file"),
    ] {
        if let Some(v) = read(rel) {
            let mut id = format!("{kind}:{v}");
            truncate(&mut id, BACKING_ID_MAX);
            return Some(id);
        }
    }
    None
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
}

/// What identifies the backing device at `path` now: its size, its stable identity (a
/// block device's, from sysfs; none for a file) and its canonical path.
///
/// # Errors
/// The path cannot be opened or sized.
pub fn identify(path: &Path) -> io::Result<BackingRecord> {
    let meta = std::fs::metadata(path)?;
    let size =
        crate::backing::FileBacking::open(path, true).map(|b| crate::backing::Backing::size(&b))?;
    let id = match DeviceKind::of(&meta) {
        Some(DeviceKind::Block) => {
            let (major, minor) = major_minor(meta.rdev());
            stable_id(&PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))).unwrap_or_default()
        }
        _ => String::new(),
    };
    let mut shown = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned();
    truncate(&mut shown, BACKING_PATH_MAX);
    Ok(BackingRecord {
        size,
        id,
        path: shown,
    })
}

impl BackingMismatch {
    /// Compares the backing device found with what the cache recorded: the size must be
    /// the same, and so must the stable identity where one was recorded, or else the
    /// (canonical) path.
    ///
    /// # Errors
    /// What differs.
    pub fn check(
        cache: &str,
        recorded: &BackingRecord,
        found: &BackingRecord,
        given: &Path,
    ) -> Result<(), Self> {
        let mut differences = Vec::new();
        if recorded.size != found.size {
            differences.push(format!(
                "its size is {} bytes, the cache was created for {} bytes",
                found.size, recorded.size
            ));
        }
        if recorded.id.is_empty() {
            // No stable identity was recorded (a file, or a disk without a serial
            // number): the path it was created with is what identifies it.
            if !recorded.path.is_empty() && recorded.path != found.path {
                differences.push(format!(
                    "it is {}, the cache was created for {} (which has no stable identity: its path identifies it)",
                    found.path, recorded.path
                ));
            }
        } else if recorded.id != found.id {
            differences.push(if found.id.is_empty() {
                format!(
                    "it has no stable identity, the cache was created for {}",
                    recorded.id
                )
            } else {
                format!(
                    "it is {}, the cache was created for {}",
                    found.id, recorded.id
                )
            });
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(Self {
            cache: cache.to_owned(),
            path: given.display().to_string(),
            differences,
            created_with: (!recorded.id.is_empty()
                && !recorded.path.is_empty()
                && recorded.path != found.path)
                .then(|| recorded.path.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: u64, id: &str, path: &str) -> BackingRecord {
        BackingRecord {
            size,
            id: id.into(),
            path: path.into(),
        }
    }

    #[test]
    fn sysfs_identities_in_order_of_preference() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(stable_id(d), None);
        std::fs::write(d.join("serial"), "QM00001\n").unwrap();
        assert_eq!(stable_id(d).as_deref(), Some("serial:QM00001"));
        std::fs::create_dir(d.join("dm")).unwrap();
        std::fs::write(d.join("dm/uuid"), "LVM-abc\n").unwrap();
        assert_eq!(stable_id(d).as_deref(), Some("dm-uuid:LVM-abc"));
        // A partition takes its disk's identity and its number.
        let part = d.join("vdb1");
        std::fs::create_dir(&part).unwrap();
        std::fs::write(part.join("partition"), "1\n").unwrap();
        assert_eq!(stable_id(&part).as_deref(), Some("dm-uuid:LVM-abc:part1"));
        // Empty files are no identity.
        let e = d.join("empty");
        std::fs::create_dir(&e).unwrap();
        std::fs::write(e.join("serial"), "\n").unwrap();
        assert_eq!(stable_id(&e), None);
    }

    #[test]
    fn mismatches_say_what_differs() {
        let p = Path::new("/dev/vdc");
        let a = rec(1 << 30, "serial:A", "/dev/vdb");
        assert!(BackingMismatch::check("db", &a, &a, p).is_ok());
        let e =
            BackingMismatch::check("db", &a, &rec(2 << 30, "serial:A", "/dev/vdc"), p).unwrap_err();
        assert_eq!(e.differences.len(), 1, "{e}");
        assert!(
            e.to_string().contains("its size is 2147483648 bytes"),
            "{e}"
        );
        let e =
            BackingMismatch::check("db", &a, &rec(1 << 30, "serial:B", "/dev/vdc"), p).unwrap_err();
        assert!(e
            .to_string()
            .contains("it is serial:B, the cache was created for serial:A"));
        assert!(e.to_string().contains("created with /dev/vdb"), "{e}");
        // Without a recorded identity, the path identifies it.
        let f = rec(1 << 30, "", "/srv/a.img");
        assert!(BackingMismatch::check("db", &f, &f, p).is_ok());
        let e = BackingMismatch::check("db", &f, &rec(1 << 30, "", "/srv/b.img"), p).unwrap_err();
        assert!(
            e.to_string()
                .contains("it is /srv/b.img, the cache was created for /srv/a.img"),
            "{e}"
        );
    }

    #[test]
    fn a_file_is_identified_by_size_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.img");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let r = identify(&p).unwrap();
        assert_eq!(r.size, 1 << 20);
        assert!(r.id.is_empty());
        assert!(r.path.ends_with("b.img"));
        assert!(identify(&dir.path().join("missing")).is_err());
    }
}
