//! [`TestMedia`]: memory media with only the required methods, and injected failures.

use super::injected;
use crate::media::{CacheMedia, MediaError, MemMedia};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cache media over a [`MemMedia`] that implements only the required methods of
/// [`CacheMedia`], so [`CacheMedia::fill`], [`CacheMedia::view`], [`CacheMedia::zero`]
/// and the rest take their provided (buffered) paths, as for any media outside this
/// crate; and whose stores can be made to fail:
///
/// - [`TestMedia::fail_writes`]: every store fails with [`MediaError::Io`] (`"write"`,
///   [`injected`](super::injected)) until turned off;
/// - [`TestMedia::fail_next_write_to`]: the next store that starts at one of the given
///   offsets fails with [`MediaError::ReadOnly`], once (a transient error).
///
/// Without either it behaves as the memory it wraps.
#[derive(Debug)]
pub struct TestMedia {
    inner: MemMedia,
    fail_writes: AtomicBool,
    /// Whether a one-time failure is armed, and at which offsets.
    armed: AtomicBool,
    armed_at: Mutex<Vec<u64>>,
}

impl TestMedia {
    /// `inner`, with no failure armed.
    #[must_use]
    pub fn new(inner: MemMedia) -> Self {
        Self {
            inner,
            fail_writes: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            armed_at: Mutex::new(Vec::new()),
        }
    }

    /// The memory behind.
    #[must_use]
    pub fn inner(&self) -> &MemMedia {
        &self.inner
    }

    /// Whether every store fails from now on.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Arms one failure: the next store that starts at one of `offsets` fails, with
    /// [`MediaError::ReadOnly`]; later ones succeed again.
    pub fn fail_next_write_to(&self, offsets: &[u64]) {
        *self.armed_at.lock() = offsets.to_vec();
        self.armed.store(true, Ordering::SeqCst);
    }
}

impl CacheMedia for TestMedia {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.inner.read(off, buf)
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(MediaError::Io {
                op: "write",
                source: injected(),
            });
        }
        if self.armed.load(Ordering::SeqCst)
            && self.armed_at.lock().contains(&off)
            && self.armed.swap(false, Ordering::SeqCst)
        {
            return Err(MediaError::ReadOnly);
        }
        self.inner.write(off, data)
    }

    fn flush(&self, off: u64, len: u64) {
        self.inner.flush(off, len);
    }

    fn fence(&self) {
        self.inner.fence();
    }
}
