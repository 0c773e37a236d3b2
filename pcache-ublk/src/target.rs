//! The seam between the ublk frontend and whatever serves the blocks.
//!
//! [`Target`] is the small block-target interface the queue threads call. The production
//! implementation wraps `pcache_engine::Cache` (see `crate::engine`); [`MemTarget`] is an
//! in-memory model used by the unit tests and by `add --ram-target` (a debug target for
//! exercising the ublk plumbing without a cache).
//!
//! Errors on the I/O path are negative errno values, ready to be handed to the kernel as a
//! request result; the control plane ([`Target::set_gc_percent`], [`Target::close`])
//! returns the engine's [`EngineError`], source chain and all.

use std::sync::RwLock;

use pcache_engine::{CacheMode, DirectWrite, EngineError};

/// A negative errno value (`-libc::EIO`, …).
pub type Errno = i32;

/// Where the payload of [`Target::write_with`] comes from: `src(at, dst)` fills all of
/// `dst` with the payload's bytes from byte `at` on (user-copy mode `pread`s them from the
/// request on `/dev/ublkcN`), or fails with a negative errno.
pub type WriteSource<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), Errno> + 'a;

/// Where the payload of [`Target::read_with`] goes: `sink(at, bytes)` takes the
/// payload's bytes from byte `at` on (user-copy mode `pwrite`s them into the request on
/// `/dev/ublkcN`), or fails with a negative errno.
pub type ReadSink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), Errno> + 'a;

/// A block target served through ublk. All offsets and lengths are in bytes.
///
/// Implementations must be callable concurrently from every queue thread and must never
/// panic: a failure is reported as a negative errno, which completes the request with an
/// error.
pub trait Target: Send + Sync {
    /// Size of the exported device in bytes (the backing device's size).
    fn size(&self) -> u64;

    /// Reads `buf.len()` bytes at `off`, on behalf of ublk queue `queue`.
    fn read(&self, queue: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno>;

    /// Writes `data` at `off`. With `fua`, the data must be durable when this returns.
    fn write(&self, queue: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno>;

    /// Writes `len` bytes at `off` whose payload `src` produces, as [`Target::write`] does
    /// with a buffer. A failure of `src` fails the write with `src`'s errno.
    ///
    /// The provided method stages the whole payload in `scratch` (which must hold `len`
    /// bytes, else `-EINVAL`) and calls [`Target::write`]. A target that can have `src`
    /// fill the bytes where they are stored overrides it, so the data moves once.
    fn write_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut WriteSource<'_>,
        scratch: &mut [u8],
    ) -> Result<(), Errno> {
        let buf = scratch.get_mut(..len).ok_or(-libc::EINVAL)?;
        src(0, buf)?;
        self.write(queue, off, buf, fua)
    }

    /// Reads `len` bytes at `off` and hands them to `sink`, in pieces that cover
    /// `[0, len)` exactly once (in any order). A failure of `sink` fails the read with
    /// `sink`'s errno.
    ///
    /// The provided method reads the whole payload into `scratch` (which must hold `len`
    /// bytes, else `-EINVAL`) with [`Target::read`] and hands it over as one piece. A
    /// target that can hand over the bytes where they are stored overrides it, so the
    /// data moves once.
    fn read_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        sink: &mut ReadSink<'_>,
        scratch: &mut [u8],
    ) -> Result<(), Errno> {
        let buf = scratch.get_mut(..len).ok_or(-libc::EINVAL)?;
        self.read(queue, off, buf)?;
        sink(0, buf)
    }

    /// Whether a read of `len` bytes at `off` may wait for a slow device (for the engine:
    /// whether it misses the cache). Such reads run off the queue thread, so they do not
    /// hold up the queue's other requests. A hint: the provided method says no.
    fn read_may_wait(&self, _off: u64, _len: usize) -> bool {
        false
    }

    /// The descriptor of the cache device that staged writes ([`Target::stage_direct`])
    /// go to, for the queue rings to register; `None` (the provided method): no zero
    /// copy.
    fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Stages a write of `len` bytes at `off` whose data the caller writes into the
    /// cache device itself, each piece with `RWF_DSYNC` (`pcache_engine::Cache::
    /// stage_direct`); `None` (the provided method) when it cannot be: the caller then
    /// serves the request as usual.
    fn stage_direct(&self, queue: u32, off: u64, len: usize) -> Option<DirectWrite> {
        let _ = (queue, off, len);
        None
    }

    /// Logs a staged write whose every piece completed: the write is then done, as
    /// [`Target::write`] with `fua` would have done it.
    fn commit_direct(&self, w: DirectWrite, fua: bool) -> Result<(), Errno> {
        let _ = (w, fua);
        Err(-libc::EINVAL)
    }

    /// Makes every completed write durable (the device advertises a volatile write cache).
    fn flush(&self) -> Result<(), Errno>;

    /// Discards `len` bytes at `off` (advisory: later reads may return old data or zeroes).
    fn discard(&self, off: u64, len: u64) -> Result<(), Errno>;

    /// Zeroes `len` bytes at `off` (later reads must return zeroes).
    fn write_zeroes(&self, off: u64, len: u64) -> Result<(), Errno>;

    /// The target's status and counters, as one JSON object (control plane, not I/O path).
    fn status(&self) -> serde_json::Value;

    /// Sets gc_percent (control plane).
    fn set_gc_percent(&self, pct: u8) -> Result<(), EngineError>;

    /// Switches the cache mode (control plane); a target without a cache refuses.
    fn set_cache_mode(&self, mode: CacheMode) -> Result<(), EngineError> {
        Err(EngineError::InvalidArgument(format!(
            "this target has no cache mode ({mode} asked)"
        )))
    }

    /// Changes the sequential cutoffs, read and/or write, in bytes (0 = off).
    fn set_seq_cutoff(&self, read: Option<u64>, write: Option<u64>) -> Result<(), EngineError> {
        let _ = (read, write);
        Err(EngineError::InvalidArgument(
            "this target has no sequential cutoff".into(),
        ))
    }

    /// Changes how much dirty data writeback lets build up while writes come, in percent
    /// of the cache (0 = write back at once).
    fn set_writeback_percent(&self, pct: u8) -> Result<(), EngineError> {
        let _ = pct;
        Err(EngineError::InvalidArgument(
            "this target has no writeback".into(),
        ))
    }

    /// Starts writing back everything that is dirty now, in the background, while I/O
    /// goes on (`pcache-ublk flush`); the status shows `flushing` until it is done.
    fn start_flush(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Stops the target: persists what must survive and stops background work. Called once,
    /// after the last request has completed.
    fn close(&self) -> Result<(), EngineError>;
}

/// The methods of a [`Target`] besides the data path, doing nothing: flush, discard and
/// write-zeroes succeed, status is null, tunables are accepted, close succeeds. For the
/// small fake targets of the tests.
#[cfg(test)]
macro_rules! no_op_control {
    () => {
        fn flush(&self) -> Result<(), $crate::target::Errno> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> Result<(), $crate::target::Errno> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> Result<(), $crate::target::Errno> {
            Ok(())
        }
        fn status(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn set_gc_percent(&self, _: u8) -> Result<(), pcache_engine::EngineError> {
            Ok(())
        }
        fn close(&self) -> Result<(), pcache_engine::EngineError> {
            Ok(())
        }
    };
}
#[cfg(test)]
pub(crate) use no_op_control;

/// Counters kept by [`MemTarget`], so tests can check what reached the target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemCounters {
    /// Read calls.
    pub reads: u64,
    /// Write calls.
    pub writes: u64,
    /// Write calls with FUA set.
    pub fua_writes: u64,
    /// Flush calls.
    pub flushes: u64,
    /// Discard calls.
    pub discards: u64,
    /// Write-zeroes calls.
    pub write_zeroes: u64,
    /// Whether `close` was called.
    pub closed: bool,
    /// Last value given to `set_gc_percent`.
    pub gc_percent: u8,
}

/// An in-memory [`Target`]: a byte vector plus counters. Discard zeroes (a valid choice for
/// an advisory discard), so the model stays simple.
#[derive(Default)]
pub struct MemTarget {
    inner: RwLock<MemInner>,
}

#[derive(Default)]
struct MemInner {
    data: Vec<u8>,
    counters: MemCounters,
    fail_with: Option<Errno>,
}

impl std::fmt::Debug for MemTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTarget")
            .field("size", &self.size())
            .finish()
    }
}

impl MemTarget {
    /// A zero-filled target of `size` bytes.
    pub fn new(size: u64) -> Self {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        MemTarget {
            inner: RwLock::new(MemInner {
                data: vec![0; len],
                counters: MemCounters {
                    gc_percent: 70,
                    ..MemCounters::default()
                },
                fail_with: None,
            }),
        }
    }

    /// Makes every later I/O call fail with `errno` (or succeed again with `None`).
    pub fn fail_with(&self, errno: Option<Errno>) {
        self.write_lock().fail_with = errno;
    }

    /// A copy of the counters.
    pub fn counters(&self) -> MemCounters {
        self.read_lock().counters.clone()
    }

    /// A copy of `len` bytes at `off` (test helper; panics on a bad range).
    pub fn snapshot(&self, off: u64, len: usize) -> Vec<u8> {
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        self.read_lock().data[start..start + len].to_vec()
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, MemInner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, MemInner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn range(data_len: usize, off: u64, len: u64) -> Result<std::ops::Range<usize>, Errno> {
        let start = usize::try_from(off).map_err(|_| -libc::EIO)?;
        let len = usize::try_from(len).map_err(|_| -libc::EIO)?;
        let end = start.checked_add(len).ok_or(-libc::EIO)?;
        if end > data_len {
            return Err(-libc::EIO);
        }
        Ok(start..end)
    }
}

impl Target for MemTarget {
    fn size(&self) -> u64 {
        self.read_lock().data.len() as u64
    }

    fn read(&self, _queue: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mut g = self.write_lock();
        g.counters.reads += 1;
        if let Some(e) = g.fail_with {
            return Err(e);
        }
        let r = Self::range(g.data.len(), off, buf.len() as u64)?;
        buf.copy_from_slice(&g.data[r]);
        Ok(())
    }

    fn write(&self, _queue: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
        let mut g = self.write_lock();
        g.counters.writes += 1;
        if fua {
            g.counters.fua_writes += 1;
        }
        if let Some(e) = g.fail_with {
            return Err(e);
        }
        let r = Self::range(g.data.len(), off, data.len() as u64)?;
        g.data[r].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> Result<(), Errno> {
        let mut g = self.write_lock();
        g.counters.flushes += 1;
        g.fail_with.map_or(Ok(()), Err)
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), Errno> {
        let mut g = self.write_lock();
        g.counters.discards += 1;
        if let Some(e) = g.fail_with {
            return Err(e);
        }
        let r = Self::range(g.data.len(), off, len)?;
        g.data[r].fill(0);
        Ok(())
    }

    fn write_zeroes(&self, off: u64, len: u64) -> Result<(), Errno> {
        let mut g = self.write_lock();
        g.counters.write_zeroes += 1;
        if let Some(e) = g.fail_with {
            return Err(e);
        }
        let r = Self::range(g.data.len(), off, len)?;
        g.data[r].fill(0);
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        let g = self.read_lock();
        let c = &g.counters;
        serde_json::json!({
            "target": "ram",
            "size": g.data.len(),
            "gc_percent": c.gc_percent,
            "reads": c.reads,
            "writes": c.writes,
            "fua_writes": c.fua_writes,
            "flushes": c.flushes,
            "discards": c.discards,
            "write_zeroes": c.write_zeroes,
        })
    }

    fn set_gc_percent(&self, pct: u8) -> Result<(), EngineError> {
        if pct > 90 {
            return Err(EngineError::InvalidArgument(format!(
                "gc_percent {pct} out of range 0..=90"
            )));
        }
        self.write_lock().counters.gc_percent = pct;
        Ok(())
    }

    fn close(&self) -> Result<(), EngineError> {
        self.write_lock().counters.closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_target_round_trips_and_counts() {
        let t = MemTarget::new(8192);
        t.write(0, 512, &[7; 1024], true).unwrap();
        let mut buf = [0; 1024];
        t.read(1, 512, &mut buf).unwrap();
        assert_eq!(buf, [7; 1024]);
        t.write_zeroes(1024, 512).unwrap();
        assert_eq!(t.snapshot(1024, 512), vec![0; 512]);
        assert_eq!(t.snapshot(512, 512), vec![7; 512]);
        let c = t.counters();
        assert_eq!(
            (c.reads, c.writes, c.fua_writes, c.write_zeroes),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn mem_target_rejects_out_of_range_with_eio() {
        let t = MemTarget::new(4096);
        assert_eq!(t.write(0, 4096, &[1], false), Err(-libc::EIO));
        assert_eq!(t.discard(u64::MAX, 2), Err(-libc::EIO));
    }

    #[test]
    fn mem_target_injected_failure_is_returned() {
        let t = MemTarget::new(4096);
        t.fail_with(Some(-libc::ENOSPC));
        assert_eq!(t.write(0, 0, &[1], false), Err(-libc::ENOSPC));
        assert_eq!(t.flush(), Err(-libc::ENOSPC));
        t.fail_with(None);
        assert_eq!(t.flush(), Ok(()));
    }
}
