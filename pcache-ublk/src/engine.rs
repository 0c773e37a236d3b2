//! The production [`Target`]: `pcache_engine::Cache` behind the ublk queues.
//!
//! The engine is synchronous and thread-safe, so each queue thread calls it directly.
//! Every engine error becomes the negative errno [`EngineError::errno`] chooses; the
//! engine's [`Status`] becomes JSON here (the engine has no serde).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pcache_engine::backing::{open_best, Backing};
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::{
    Cache, CacheConfig, CacheMode, DirectWrite, EngineError, SeqCutoff, Status, StatusJson,
};

use crate::error::Error;
use crate::target::{Errno, ReadSink, Target, WriteSource};

/// A [`Cache`] served as a ublk target.
pub struct EngineTarget {
    cache: Arc<Cache>,
    cache_path: String,
    /// The cache of a shared cache device served, if it is one.
    cache_name: Option<String>,
    backing_path: String,
    /// A `flush` (drain) runs in the background.
    flushing: Arc<AtomicBool>,
}

/// How `add` sets the cache up: its mode (persisted), the sequential cutoffs and the
/// writeback pace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Switch the cache to this mode (`None`: keep the cache's).
    pub cache_mode: Option<CacheMode>,
    /// Sequential cutoffs (0 = off).
    pub seq_cutoff: SeqCutoff,
    /// `CacheConfig::writeback_percent` (0 = write back at once).
    pub writeback_percent: u8,
}

impl std::fmt::Debug for EngineTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTarget")
            .field("cache", &self.cache_path)
            .field("backing", &self.backing_path)
            .field("size", &self.cache.size())
            .finish()
    }
}

/// Logs an engine error on the I/O path and returns its errno.
fn errno(op: &'static str, off: u64, len: u64, e: &EngineError) -> Errno {
    let code = e.errno();
    tracing::warn!(op, off, len, errno = code, error = %e, "request failed");
    if code < 0 {
        code
    } else {
        -libc::EIO
    }
}

impl EngineTarget {
    /// Wraps an open cache. The paths are only for status and logs.
    pub fn new(cache: Cache, cache_path: &Path, backing_path: &Path) -> Self {
        EngineTarget {
            cache: Arc::new(cache),
            cache_path: cache_path.display().to_string(),
            cache_name: None,
            backing_path: backing_path.display().to_string(),
            flushing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Opens the cache media and the backing device and opens (replays) the cache on
    /// them, with the engine's background workers running.
    ///
    /// # Errors
    /// [`Error::CacheMedia`] or [`Error::Device`] if a device cannot be opened,
    /// [`Error::Unusable`] if the engine refuses the cache for a reason the command line
    /// can fix (not formatted, data_crc mismatch), [`Error::Open`] for the others (too
    /// small, corrupt, …).
    pub fn open(
        cache: &Path,
        range: Option<(u64, u64)>,
        backing: &Path,
        data_crc: bool,
        queues: u32,
        tuning: Tuning,
    ) -> Result<Self, Error> {
        let media_err = |source| Error::CacheMedia {
            path: cache.to_owned(),
            source,
        };
        let device: Arc<dyn CacheMedia> =
            Arc::new(DaxMedia::open(cache, false).map_err(media_err)?);
        // One cache of a shared device: the engine sees only its range.
        let media: Arc<dyn CacheMedia> = match range {
            Some((start, len)) => {
                Arc::new(pcache_engine::media::Window::new(device, start, len).map_err(media_err)?)
            }
            None => device,
        };
        // io_uring for writeback where it measured faster (O_DIRECT on a block device
        // or a real file system), plain pwrite otherwise (docs/performance.md).
        let backing_dev = open_best(backing, false).map_err(|source| Error::Device {
            role: "backing",
            path: backing.to_owned(),
            source,
        })?;
        let cfg = CacheConfig {
            data_crc,
            queues: queues.max(1),
            gc_percent: None,
            background: true,
            cache_mode: tuning.cache_mode,
            seq_cutoff: tuning.seq_cutoff,
            writeback_percent: tuning.writeback_percent,
            ..CacheConfig::default()
        };
        Self::open_on(media, backing_dev, cfg, cache, backing)
    }

    /// Opens (replays) a cache on already-open media and backing device; `cache` and
    /// `backing` name them in messages.
    ///
    /// # Errors
    /// [`Error::Unusable`] or [`Error::Open`] if the engine refuses the cache.
    pub fn open_on(
        media: Arc<dyn CacheMedia>,
        backing_dev: Arc<dyn Backing>,
        cfg: CacheConfig,
        cache: &Path,
        backing: &Path,
    ) -> Result<Self, Error> {
        let opened = Cache::open(media, backing_dev, cfg).map_err(|e| open_error(cache, e))?;
        Ok(Self::new(opened, cache, backing))
    }

    /// Names the cache of a shared cache device this serves (shown by `status`).
    #[must_use]
    pub fn named(mut self, name: Option<String>) -> Self {
        self.cache_name = name;
        self
    }

    /// The wrapped cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// Explains why the engine refused to open a cache, with what to do about it where the
/// command line can fix it.
pub(crate) fn open_error(cache: &Path, e: EngineError) -> Error {
    let path = cache.to_owned();
    let hint = match &e {
        EngineError::NotFormatted => format!(" (format it first: pcache-mkfs {})", cache.display()),
        EngineError::DataCrcMismatch { on_media, .. } => {
            let fix = if *on_media { "pass" } else { "drop" };
            format!(" ({fix} --data-crc)")
        }
        _ => return Error::Open { path, source: e },
    };
    Error::Unusable {
        path,
        reason: e,
        hint,
    }
}

/// The engine's status as JSON ([`StatusJson`]: the schema version, every field,
/// positions as `"seg:off"` strings), for the `pcache` target.
pub fn status_json(s: &Status) -> serde_json::Value {
    let mut v = serde_json::to_value(StatusJson::new(s)).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("target".into(), "pcache".into());
    }
    v
}

/// Runs an engine call that takes one of the request's callbacks (`write_with`'s source,
/// `read_with`'s sink). `call` gets `record`, which the callback's error goes through: it
/// keeps the errno and turns it into the `io::Error` the engine wants. A failure comes back
/// with the callback's errno if the callback was what failed.
fn with_callback_errno(
    call: impl FnOnce(&mut dyn FnMut(Errno) -> std::io::Error) -> Result<(), EngineError>,
) -> Result<(), (EngineError, Option<Errno>)> {
    let mut failed = None;
    let mut record = |e: Errno| {
        failed = Some(e);
        std::io::Error::from_raw_os_error(e.saturating_neg())
    };
    let r = call(&mut record);
    r.map_err(|e| (e, failed))
}

impl Target for EngineTarget {
    fn size(&self) -> u64 {
        self.cache.size()
    }

    fn read(&self, queue: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let len = buf.len() as u64;
        self.cache
            .read(queue, off, buf)
            .map_err(|e| errno("read", off, len, &e))
    }

    fn write(&self, queue: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
        self.cache
            .write(queue, off, data, fua)
            .map_err(|e| errno("write", off, data.len() as u64, &e))
    }

    /// The payload goes straight from `src` into the cache space ([`Cache::write_with`]):
    /// in user-copy mode, one `pread` from the request into the cache media.
    fn write_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut WriteSource<'_>,
        _scratch: &mut [u8],
    ) -> Result<(), Errno> {
        // The source's own errno is what the request fails with (as when staging).
        let r = with_callback_errno(|record| {
            self.cache.write_with(queue, off, len, fua, &mut |at, dst| {
                src(at, dst).map_err(&mut *record)
            })
        });
        match r {
            Ok(()) => Ok(()),
            Err((e, Some(code))) => {
                tracing::debug!(off, len, error = %e, "write payload could not be read");
                Err(code)
            }
            Err((e, None)) => Err(errno("write", off, len as u64, &e)),
        }
    }

    /// Hits go straight from the cache media to `sink` ([`Cache::read_with`]): in
    /// user-copy mode, one `pwrite` from the media into the request.
    fn read_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        sink: &mut ReadSink<'_>,
        _scratch: &mut [u8],
    ) -> Result<(), Errno> {
        // The sink's own errno is what the request fails with (as when staging).
        let r = with_callback_errno(|record| {
            self.cache.read_with(queue, off, len, &mut |at, bytes| {
                sink(at, bytes).map_err(&mut *record)
            })
        });
        match r {
            Ok(()) => Ok(()),
            Err((e, Some(code))) if code == -libc::EFAULT => {
                // The kernel could not read the bytes handed to the sink. Those of a miss
                // are in our own buffer, so these are the cache media's (a hit): a
                // machine check on pmem, or a mapped file truncated underneath. That is a
                // media error, EIO, as a checked read reports it (docs/design.md, "Media
                // errors on read").
                tracing::warn!(off, len, error = %e, "cache media unreadable (EFAULT)");
                Err(-libc::EIO)
            }
            Err((e, Some(code))) => {
                tracing::debug!(off, len, error = %e, "read payload could not be written");
                Err(code)
            }
            Err((e, None)) => Err(errno("read", off, len as u64, &e)),
        }
    }

    fn read_may_wait(&self, off: u64, len: usize) -> bool {
        !self.cache.is_cached(off, len as u64)
    }

    fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        self.cache.direct().and_then(|d| d.fd)
    }

    /// A failure to stage is not reported here: the write goes the usual way, which
    /// reports it.
    fn stage_direct(&self, queue: u32, off: u64, len: usize) -> Option<DirectWrite> {
        self.cache.stage_direct(queue, off, len).ok().flatten()
    }

    fn commit_direct(&self, w: DirectWrite, fua: bool) -> Result<(), Errno> {
        let (off, len) = (w.off(), w.len() as u64);
        self.cache
            .commit_direct(w, fua)
            .map_err(|e| errno("write", off, len, &e))
    }

    fn flush(&self) -> Result<(), Errno> {
        self.cache.flush().map_err(|e| errno("flush", 0, 0, &e))
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), Errno> {
        self.cache
            .discard(off, len)
            .map_err(|e| errno("discard", off, len, &e))
    }

    fn write_zeroes(&self, off: u64, len: u64) -> Result<(), Errno> {
        self.cache
            .write_zeroes(off, len)
            .map_err(|e| errno("write_zeroes", off, len, &e))
    }

    fn status(&self) -> serde_json::Value {
        let mut v = status_json(&self.cache.status());
        if let Some(obj) = v.as_object_mut() {
            obj.insert("cache".into(), self.cache_path.clone().into());
            if let Some(n) = &self.cache_name {
                obj.insert("cache_name".into(), n.clone().into());
            }
            obj.insert("backing".into(), self.backing_path.clone().into());
            obj.insert("size".into(), self.cache.size().into());
            obj.insert(
                "flushing".into(),
                self.flushing.load(Ordering::Acquire).into(),
            );
        }
        v
    }

    fn set_gc_percent(&self, pct: u8) -> Result<(), EngineError> {
        self.cache.set_gc_percent(pct)
    }

    fn set_cache_mode(&self, mode: CacheMode) -> Result<(), EngineError> {
        self.cache.set_cache_mode(mode)
    }

    fn set_seq_cutoff(&self, read: Option<u64>, write: Option<u64>) -> Result<(), EngineError> {
        let now = self.cache.status().seq_cutoff;
        self.cache.set_seq_cutoff(SeqCutoff {
            read: read.unwrap_or(now.read),
            write: write.unwrap_or(now.write),
        });
        Ok(())
    }

    fn set_writeback_percent(&self, pct: u8) -> Result<(), EngineError> {
        self.cache.set_writeback_percent(pct)
    }

    fn start_flush(&self) -> Result<(), EngineError> {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return Ok(()); // one is running: it covers what is dirty now too
        }
        let cache = Arc::clone(&self.cache);
        let flushing = Arc::clone(&self.flushing);
        let spawned = std::thread::Builder::new()
            .name("pcache-flush".into())
            .spawn(move || {
                match cache.drain(&mut |_| {}) {
                    Ok(()) => tracing::info!("flush: what was dirty is written back"),
                    Err(e) => tracing::error!(error = %e, "flush failed"),
                }
                flushing.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.flushing.store(false, Ordering::Release);
            return Err(EngineError::InvalidArgument(format!(
                "cannot start the flush thread: {e}"
            )));
        }
        Ok(())
    }

    fn close(&self) -> Result<(), EngineError> {
        self.cache.close()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
