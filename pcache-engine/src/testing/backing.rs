//! [`TestBacking`]: a memory backing device with injected failures, a gate, and a record.

use super::{injected, BackingEvent, CrashMedia};
use crate::backing::{Backing, BatchError, MemBacking};
use parking_lot::{Condvar, Mutex};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A check of the memory's content, run at every flush.
type FlushCheck = Box<dyn Fn(&MemBacking) + Send + Sync>;

/// A backing device over a [`MemBacking`], for tests that need it to misbehave or to be
/// watched. Built with [`TestBacking::new`] and the builder methods, it behaves as the
/// memory it wraps until told otherwise:
///
/// - [`TestBacking::fail_reads`], [`TestBacking::fail_writes`],
///   [`TestBacking::fail_flushes`]: the operation fails with an I/O error
///   ([`injected`](super::injected)) until turned off (a failing write of a batch fails
///   the batch at that write); discards and write-zeroes never fail;
/// - [`TestBacking::hold_writes`]: writes (`write_at`, and each `write_many` batch as a
///   whole) wait at a gate until it opens again; discards and write-zeroes pass;
/// - [`TestBacking::discard_fill`]: a discard leaves this byte instead of zeros (its
///   content is unspecified);
/// - [`TestBacking::recording`]: the completion of every write, discard, write-zeroes and
///   flush is an event on a [`CrashMedia`]'s timeline, recorded
///   ([`TestBacking::take_recorded`]) so that the backing device a power cut at any
///   event could leave, volatile write cache included, can be rebuilt
///   ([`BackingReplayer`](super::BackingReplayer));
/// - [`TestBacking::on_flush`]: a check of the memory's content at every flush.
pub struct TestBacking {
    mem: Arc<MemBacking>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_flushes: AtomicBool,
    held: Mutex<bool>,
    gate: Condvar,
    discard_fill: Option<u8>,
    clock: Option<Arc<CrashMedia>>,
    recorded: Mutex<Vec<BackingEvent>>,
    on_flush: Option<FlushCheck>,
}

impl fmt::Debug for TestBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBacking")
            .field("mem", &self.mem)
            .field("fail_reads", &self.fail_reads)
            .field("fail_writes", &self.fail_writes)
            .field("fail_flushes", &self.fail_flushes)
            .field("held", &*self.held.lock())
            .field("discard_fill", &self.discard_fill)
            .field("recording", &self.clock.is_some())
            .field("on_flush", &self.on_flush.is_some())
            .finish_non_exhaustive()
    }
}

impl TestBacking {
    /// `mem` (a [`MemBacking`], or one shared with the test), behaving as it does.
    #[must_use]
    pub fn new(mem: impl Into<Arc<MemBacking>>) -> Self {
        Self {
            mem: mem.into(),
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_flushes: AtomicBool::new(false),
            held: Mutex::new(false),
            gate: Condvar::new(),
            discard_fill: None,
            clock: None,
            recorded: Mutex::new(Vec::new()),
            on_flush: None,
        }
    }

    /// A discard stores `byte` over the range (through the memory's `write_at`) instead
    /// of zeroing it.
    #[must_use]
    pub fn discard_fill(mut self, byte: u8) -> Self {
        self.discard_fill = Some(byte);
        self
    }

    /// Records the completion of every write, discard, write-zeroes and flush as an event
    /// on `media`'s timeline ([`CrashMedia::tick`]).
    #[must_use]
    pub fn recording(mut self, media: Arc<CrashMedia>) -> Self {
        self.clock = Some(media);
        self
    }

    /// Calls `check` with the memory at every flush (after a flush failure is injected,
    /// if one is, and before the memory's own flush); `check` panics on what it rejects.
    #[must_use]
    pub fn on_flush(mut self, check: impl Fn(&MemBacking) + Send + Sync + 'static) -> Self {
        self.on_flush = Some(Box::new(check));
        self
    }

    /// The memory behind.
    #[must_use]
    pub fn mem(&self) -> &Arc<MemBacking> {
        &self.mem
    }

    /// Whether reads fail from now on.
    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    /// Whether writes fail from now on.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Whether flushes fail from now on.
    pub fn fail_flushes(&self, fail: bool) {
        self.fail_flushes.store(fail, Ordering::SeqCst);
    }

    /// Closes (`true`) or opens the gate that writes wait at.
    pub fn hold_writes(&self, hold: bool) {
        *self.held.lock() = hold;
        self.gate.notify_all();
    }

    /// The events recorded so far, in order (empty unless built
    /// [`TestBacking::recording`]); the record starts again empty.
    #[must_use]
    pub fn take_recorded(&self) -> Vec<BackingEvent> {
        std::mem::take(&mut *self.recorded.lock())
    }

    /// Waits while the gate is closed.
    fn pass(&self) {
        let mut held = self.held.lock();
        while *held {
            self.gate.wait(&mut held);
        }
    }

    /// Records a completed write of `data` at `off`.
    fn record(&self, off: u64, data: &[u8]) {
        if let Some(media) = &self.clock {
            let mut recorded = self.recorded.lock();
            recorded.push(BackingEvent::Write {
                at: media.tick(),
                off,
                data: data.to_vec(),
            });
        }
    }

    /// A write past the gate.
    fn write_one(&self, off: u64, data: &[u8]) -> io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.mem.write_at(off, data)?;
        self.record(off, data);
        Ok(())
    }

    fn recording_len(&self, len: u64) -> Option<usize> {
        self.clock
            .as_ref()
            .map(|_| usize::try_from(len).expect("a range in memory"))
    }
}

impl Backing for TestBacking {
    fn size(&self) -> u64 {
        self.mem.size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.mem.read_at(off, buf)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.pass();
        self.write_one(off, data)
    }

    fn write_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BatchError> {
        self.pass();
        for (i, &(off, data)) in writes.iter().enumerate() {
            self.write_one(off, data)
                .map_err(|e| BatchError::new(i, writes, e))?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if self.fail_flushes.load(Ordering::SeqCst) {
            return Err(injected());
        }
        if let Some(check) = &self.on_flush {
            check(&self.mem);
        }
        self.mem.flush()?;
        if let Some(media) = &self.clock {
            let mut recorded = self.recorded.lock();
            recorded.push(BackingEvent::Flush { at: media.tick() });
        }
        Ok(())
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        match self.discard_fill {
            Some(byte) => {
                let data = vec![byte; usize::try_from(len).expect("a range in memory")];
                self.mem.write_at(off, &data)?;
                self.record(off, &data);
            }
            None => {
                self.mem.discard(off, len)?;
                if let Some(n) = self.recording_len(len) {
                    self.record(off, &vec![0; n]);
                }
            }
        }
        Ok(())
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        self.mem.write_zeroes(off, len)?;
        if let Some(n) = self.recording_len(len) {
            self.record(off, &vec![0; n]);
        }
        Ok(())
    }
}
