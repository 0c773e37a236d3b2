//! Acknowledged writes that no FLUSH has covered yet, across a daemon crash.
//!
//! The device advertises a volatile write cache: a write completes before it is durable,
//! and a FLUSH makes every write completed before it durable. When the daemon dies (a
//! crash, `SIGKILL`), its open ksets die with it, so writes it acknowledged since the last
//! FLUSH may be lost; the device itself survives (ublk user recovery) and a new daemon
//! attaches to it. Without more, the next FLUSH would then succeed, and whoever issued it
//! would believe those lost writes durable: the loss would be silent.
//!
//! So the daemon keeps one byte in the run directory (`<id>.unflushed`, on tmpfs: it
//! outlives the process, not the host): 1 from before the first non-FUA write (or discard)
//! after a FLUSH is acknowledged, 0 once a FLUSH completes with no write acknowledged
//! since it started. A daemon that recovers the device and finds 1 fails the first FLUSH
//! with `EIO` (a reissued one included), as a disk reports a lost write cache, so `fsync`
//! reports the loss. It is conservative: writes the engine had made durable on its own
//! (a kset closed by its timer) are reported too.
//!
//! The byte is written with `pwrite` only when it changes (at most twice per FLUSH
//! interval); the I/O path otherwise pays one atomic add and one atomic load.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

use pcache_engine::{DirectWrite, EngineError};

use crate::target::{Errno, ReadSink, Target, WriteSource};

/// The marker file of device `id` in `dir`.
#[must_use]
pub fn marker_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.unflushed"))
}

/// The unflushed-writes marker of one device.
#[derive(Debug)]
pub struct Unflushed {
    file: File,
    path: PathBuf,
    /// Volatile writes acknowledged so far.
    writes: AtomicU64,
    /// Whether the file says 1, as far as the fast path needs to know.
    marked: AtomicBool,
    /// What the file says (written under this lock).
    file_marked: Mutex<bool>,
    /// The previous daemon died with unflushed writes: fail the next FLUSH.
    fail_next_flush: AtomicBool,
}

impl Unflushed {
    /// Opens (or creates) the marker of device `id` in `dir`. When `recovering`, a marker
    /// left at 1 by a daemon that died arms the failure of the next FLUSH (and stays 1
    /// until then); otherwise it starts at 0.
    ///
    /// # Errors
    /// The file cannot be created, read or written.
    pub fn open(dir: &Path, id: u32, recovering: bool) -> io::Result<Self> {
        let path = marker_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut b = [0u8];
        let left = recovering && file.read_at(&mut b, 0)? == 1 && b[0] == 1;
        file.write_all_at(&[u8::from(left)], 0)?;
        if left {
            tracing::warn!(
                path = %path.display(),
                "the previous daemon died with acknowledged writes no FLUSH had covered: \
                 they may be lost, and the next FLUSH fails with EIO to say so"
            );
        }
        Ok(Self {
            file,
            path,
            writes: AtomicU64::new(0),
            marked: AtomicBool::new(left),
            file_marked: Mutex::new(left),
            fail_next_flush: AtomicBool::new(left),
        })
    }

    /// Records a volatile write (or discard) that succeeded, before it is acknowledged.
    ///
    /// # Errors
    /// `-EIO` if the marker cannot be written (the write must then not be acknowledged).
    pub fn volatile_write_done(&self) -> Result<(), Errno> {
        self.writes.fetch_add(1, SeqCst);
        if self.marked.load(SeqCst) {
            return Ok(());
        }
        let mut f = self.lock();
        if !*f {
            self.write_byte(1)?;
            *f = true;
        }
        self.marked.store(true, SeqCst);
        Ok(())
    }

    /// Runs a FLUSH (`flush`): clears the marker when no volatile write was acknowledged
    /// while it ran; fails it with `-EIO` when it is the first after recovering from a
    /// daemon that died with unflushed writes.
    ///
    /// # Errors
    /// `flush`'s error, or `-EIO` as above.
    pub fn flush(&self, flush: impl FnOnce() -> Result<(), Errno>) -> Result<(), Errno> {
        let start = self.writes.load(SeqCst);
        // A write acknowledged from here on sees `false` and marks the file itself, or is
        // counted below and keeps the marker.
        self.marked.store(false, SeqCst);
        let res = flush();
        let mut f = self.lock();
        if res.is_ok() && self.writes.load(SeqCst) == start {
            if *f {
                self.write_byte(0)?;
                *f = false;
            }
        } else {
            self.marked.store(true, SeqCst);
        }
        drop(f);
        res?;
        if self.fail_next_flush.swap(false, SeqCst) {
            tracing::error!(
                "failing this FLUSH with EIO: writes acknowledged before the daemon died may \
                 have been lost"
            );
            return Err(-libc::EIO);
        }
        Ok(())
    }

    /// Removes the marker (a clean stop: everything acknowledged is durable).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the marker");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // The guarded value is a plain bool: a panic elsewhere cannot leave it torn.
        self.file_marked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_byte(&self, b: u8) -> Result<(), Errno> {
        self.file.write_all_at(&[b], 0).map_err(|e| {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the unflushed marker");
            -libc::EIO
        })
    }
}

/// A target whose volatile writes and FLUSHes go through an [`Unflushed`] marker.
pub struct Guarded {
    inner: Arc<dyn Target>,
    marker: Arc<Unflushed>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Target>, marker: Arc<Unflushed>) -> Self {
        Self { inner, marker }
    }
}

impl Target for Guarded {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&self, queue: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.inner.read(queue, off, buf)
    }

    fn write(&self, queue: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
        self.inner.write(queue, off, data, fua)?;
        if fua {
            Ok(())
        } else {
            self.marker.volatile_write_done()
        }
    }

    fn write_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut WriteSource<'_>,
        scratch: &mut [u8],
    ) -> Result<(), Errno> {
        self.inner.write_with(queue, off, len, fua, src, scratch)?;
        if fua {
            Ok(())
        } else {
            self.marker.volatile_write_done()
        }
    }

    fn read_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        sink: &mut ReadSink<'_>,
        scratch: &mut [u8],
    ) -> Result<(), Errno> {
        self.inner.read_with(queue, off, len, sink, scratch)
    }

    fn read_may_wait(&self, off: u64, len: usize) -> bool {
        self.inner.read_may_wait(off, len)
    }

    fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.direct_fd()
    }

    fn stage_direct(&self, queue: u32, off: u64, len: usize) -> Option<DirectWrite> {
        self.inner.stage_direct(queue, off, len)
    }

    fn commit_direct(&self, w: DirectWrite, fua: bool) -> Result<(), Errno> {
        self.inner.commit_direct(w, fua)?;
        if fua {
            Ok(())
        } else {
            self.marker.volatile_write_done()
        }
    }

    fn flush(&self) -> Result<(), Errno> {
        self.marker.flush(|| self.inner.flush())
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), Errno> {
        self.inner.discard(off, len)?;
        self.marker.volatile_write_done()
    }

    fn write_zeroes(&self, off: u64, len: u64) -> Result<(), Errno> {
        self.inner.write_zeroes(off, len)?;
        self.marker.volatile_write_done()
    }

    fn status(&self) -> serde_json::Value {
        self.inner.status()
    }

    fn set_gc_percent(&self, pct: u8) -> Result<(), EngineError> {
        self.inner.set_gc_percent(pct)
    }

    fn set_cache_mode(&self, mode: pcache_engine::CacheMode) -> Result<(), EngineError> {
        self.inner.set_cache_mode(mode)
    }

    fn set_seq_cutoff(&self, read: Option<u64>, write: Option<u64>) -> Result<(), EngineError> {
        self.inner.set_seq_cutoff(read, write)
    }

    fn start_flush(&self) -> Result<(), EngineError> {
        self.inner.start_flush()
    }

    fn close(&self) -> Result<(), EngineError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte(dir: &Path) -> u8 {
        std::fs::read(marker_path(dir, 7)).unwrap()[0]
    }

    #[test]
    fn the_marker_follows_writes_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let m = Unflushed::open(dir.path(), 7, false).unwrap();
        assert_eq!(byte(dir.path()), 0);
        m.volatile_write_done().unwrap();
        assert_eq!(
            byte(dir.path()),
            1,
            "marked before the write is acknowledged"
        );
        m.flush(|| Ok(())).unwrap();
        assert_eq!(byte(dir.path()), 0);
        // A write acknowledged while the FLUSH runs is not covered by it.
        m.flush(|| m.volatile_write_done()).unwrap();
        assert_eq!(byte(dir.path()), 1);
        // A failed FLUSH covers nothing.
        m.flush(|| Ok(())).unwrap();
        m.volatile_write_done().unwrap();
        assert_eq!(m.flush(|| Err(-libc::EIO)), Err(-libc::EIO));
        assert_eq!(byte(dir.path()), 1);
        m.flush(|| Ok(())).unwrap();
        assert_eq!(byte(dir.path()), 0);
        m.remove();
        assert!(!marker_path(dir.path(), 7).exists());
    }

    #[test]
    fn recovering_from_a_daemon_that_died_unflushed_fails_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = Unflushed::open(dir.path(), 7, false).unwrap();
            m.volatile_write_done().unwrap();
            // The daemon dies here: no FLUSH, no remove.
        }
        let m = Unflushed::open(dir.path(), 7, true).unwrap();
        assert_eq!(byte(dir.path()), 1, "kept until the loss is reported");
        assert_eq!(m.flush(|| Ok(())), Err(-libc::EIO));
        assert_eq!(byte(dir.path()), 0);
        m.flush(|| Ok(())).unwrap();
        // A clean marker, or a new device (not recovering), fails nothing.
        let m = Unflushed::open(dir.path(), 7, true).unwrap();
        m.flush(|| Ok(())).unwrap();
        std::fs::write(marker_path(dir.path(), 7), [1]).unwrap();
        let m = Unflushed::open(dir.path(), 7, false).unwrap();
        m.flush(|| Ok(())).unwrap();
        assert_eq!(byte(dir.path()), 0);
    }

    #[test]
    fn concurrent_writes_and_flushes_leave_a_consistent_marker() {
        // Writers race a flusher (the interleavings are the SeqCst argument of `flush`);
        // once quiet, the marker says exactly whether a write came after the last FLUSH.
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Unflushed::open(dir.path(), 7, false).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        m.volatile_write_done().unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            m.flush(|| Ok(())).unwrap();
        }
        stop.store(true, SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        m.flush(|| Ok(())).unwrap();
        assert_eq!(byte(dir.path()), 0);
        m.volatile_write_done().unwrap();
        assert_eq!(byte(dir.path()), 1);
    }
}
