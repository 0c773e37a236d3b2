//! What a running device leaves behind for `list`, `status`, `del` and `recover`.
//!
//! Two records describe a device:
//! - libublk's exported JSON (`/run/ublksrvd/NNNN.json`), whose `target_data.pcache` is
//!   [`TargetData`]: everything `recover` needs to serve the device again;
//! - our run-directory record (`/run/pcache-ublk/<id>.json`, [`RunRecord`]): the daemon's
//!   pid and its control socket (`/run/pcache-ublk/<id>.sock`).
//!
//! The run directory can be moved with `PCACHE_UBLK_RUN_DIR` (tests do).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The ublk target type name pcache-ublk registers (`target.tgt_type` in libublk's JSON).
pub const TARGET_TYPE: &str = "pcache";

/// The default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/pcache-ublk";

/// How request data moves between the kernel and the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// `UBLK_F_USER_COPY`: the daemon `pread`s/`pwrite`s the request's pages through
    /// `/dev/ublkcN`; one staging buffer per queue.
    UserCopy,
    /// The kernel copies into and out of one preallocated buffer per tag.
    Buffer,
    /// User copy, and `UBLK_F_AUTO_BUF_REG`: writes go from the request's pages to the
    /// cache device (a pmem block device) in one `WRITE_FIXED` each (`crate::zero_copy`).
    ZeroCopy,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::UserCopy => "user-copy",
            CopyMode::Buffer => "buffer",
            CopyMode::ZeroCopy => "zero-copy",
        })
    }
}

/// What a device serves; stored as `target_data.pcache` in libublk's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetData {
    /// The cache device (absolute path as given, symlinks kept).
    pub cache: Option<PathBuf>,
    /// On a shared cache device: the name of the cache served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_name: Option<String>,
    /// The backing device.
    pub backing: Option<PathBuf>,
    /// Whether data CRCs are on (must match the cache's format).
    pub data_crc: bool,
    /// Number of ublk queues.
    pub queues: u16,
    /// Queue depth.
    pub depth: u16,
    /// The copy mode in effect.
    pub copy_mode: CopyMode,
    /// Worker threads per queue for requests that may wait for the backing device (0 in
    /// records written before workers existed).
    #[serde(default)]
    pub workers: u16,
    /// Size of the exported device in bytes.
    pub size: u64,
    /// `Some(bytes)` for the RAM debug target (no cache, nothing survives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_target: Option<u64>,
    /// The sequential cutoffs `add` set (bytes, 0 = off), which `recover` sets again
    /// (the cache mode is kept in the cache itself).
    #[serde(default)]
    pub seq_cutoff_read: u64,
    /// See `seq_cutoff_read`.
    #[serde(default)]
    pub seq_cutoff_write: u64,
    /// The writeback pace `add` or `set` gave (percent; 0, also in older records: at
    /// once), which `recover` sets again.
    #[serde(default)]
    pub writeback_percent: u8,
}

impl TargetData {
    /// Wraps this as libublk target JSON.
    pub fn to_target_json(&self) -> serde_json::Value {
        serde_json::json!({ TARGET_TYPE: self })
    }

    /// Extracts our part of libublk's `target_data`.
    pub fn from_target_json(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.get(TARGET_TYPE)?.clone()).ok()
    }
}

/// The daemon's run-directory record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The ublk device id (`/dev/ublkbN`).
    pub dev_id: u32,
    /// The daemon's pid.
    pub pid: u32,
    /// The control socket.
    pub socket: PathBuf,
    /// What is served.
    pub target: TargetData,
}

/// The run directory in effect.
pub fn run_dir() -> PathBuf {
    std::env::var_os("PCACHE_UBLK_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from)
}

/// `<run dir>/<id>.json`.
pub fn record_path(dir: &Path, dev_id: u32) -> PathBuf {
    dir.join(format!("{dev_id}.json"))
}

/// `<run dir>/<id>.sock`.
pub fn socket_path(dir: &Path, dev_id: u32) -> PathBuf {
    dir.join(format!("{dev_id}.sock"))
}

/// Writes `rec` atomically (temporary file + rename).
///
/// # Errors
/// [`Error::RunDir`] on any I/O failure.
pub fn write_record(dir: &Path, rec: &RunRecord) -> Result<(), Error> {
    let path = record_path(dir, rec.dev_id);
    let err = |source| Error::RunDir {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{}.json.tmp", rec.dev_id));
    let text = serde_json::to_string_pretty(rec).map_err(|e| err(e.into()))?;
    std::fs::write(&tmp, text + "\n").map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Reads the record of device `dev_id`, if there is one.
///
/// # Errors
/// [`Error::RunDir`] if it exists but cannot be read or parsed.
pub fn read_record(dir: &Path, dev_id: u32) -> Result<Option<RunRecord>, Error> {
    let path = record_path(dir, dev_id);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::RunDir {
                path,
                source: e.into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::RunDir { path, source }),
    }
}

/// Ids of every device with a record, in ascending order.
pub fn recorded_ids(dir: &Path) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Removes the record and the socket of `dev_id` (missing files are fine).
pub fn remove_record(dir: &Path, dev_id: u32) {
    for p in [record_path(dir, dev_id), socket_path(dir, dev_id)] {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove run file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TargetData {
        TargetData {
            cache: Some("/dev/pmem0".into()),
            cache_name: None,
            backing: Some("/dev/vda".into()),
            data_crc: true,
            queues: 2,
            depth: 128,
            copy_mode: CopyMode::UserCopy,
            workers: 4,
            size: 2 << 30,
            ram_target: None,
            seq_cutoff_read: 0,
            seq_cutoff_write: 0,
            writeback_percent: 0,
        }
    }

    /// A record written before the sequential cutoffs existed reads as cutoffs off; the
    /// cutoffs round-trip.
    #[test]
    fn the_cutoffs_are_recorded_for_recover() {
        let mut t = sample();
        t.seq_cutoff_read = 4 << 20;
        let back = TargetData::from_target_json(&t.to_target_json()).unwrap();
        assert_eq!((back.seq_cutoff_read, back.seq_cutoff_write), (4 << 20, 0));
        let mut v = sample().to_target_json();
        if let Some(o) = v.get_mut(TARGET_TYPE).and_then(|o| o.as_object_mut()) {
            o.remove("seq_cutoff_read");
            o.remove("seq_cutoff_write");
        }
        let old = TargetData::from_target_json(&v).unwrap();
        assert_eq!((old.seq_cutoff_read, old.seq_cutoff_write), (0, 0));
    }

    /// A record written before `workers` existed still reads, as 0 workers.
    #[test]
    fn records_without_workers_read_as_none() {
        let mut v = sample().to_target_json();
        v["pcache"].as_object_mut().unwrap().remove("workers");
        let t = TargetData::from_target_json(&v).unwrap();
        assert_eq!(t.workers, 0);
        assert_eq!(t.queues, 2);
    }

    #[test]
    fn target_json_round_trips_under_the_pcache_key() {
        let t = sample();
        let v = t.to_target_json();
        assert_eq!(v["pcache"]["cache"], "/dev/pmem0");
        assert_eq!(v["pcache"]["copy_mode"], "user-copy");
        assert_eq!(TargetData::from_target_json(&v), Some(t));
        assert_eq!(
            TargetData::from_target_json(&serde_json::json!({"loop": {}})),
            None
        );
    }

    #[test]
    fn records_are_written_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = RunRecord {
            dev_id: 3,
            pid: 42,
            socket: socket_path(dir.path(), 3),
            target: sample(),
        };
        write_record(dir.path(), &rec).unwrap();
        write_record(
            dir.path(),
            &RunRecord {
                dev_id: 1,
                ..rec.clone()
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("junk.txt"), "x").unwrap();
        assert_eq!(recorded_ids(dir.path()), vec![1, 3]);
        assert_eq!(read_record(dir.path(), 3).unwrap(), Some(rec));
        remove_record(dir.path(), 3);
        assert_eq!(read_record(dir.path(), 3).unwrap(), None);
        assert_eq!(recorded_ids(dir.path()), vec![1]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(record_path(dir.path(), 0), "{not json").unwrap();
        assert!(matches!(
            read_record(dir.path(), 0),
            Err(Error::RunDir { .. })
        ));
    }
}
