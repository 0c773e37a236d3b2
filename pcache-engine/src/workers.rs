//! Background workers: the kset flusher (1 s delay), writeback and GC.

use crate::cache::Inner;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the flusher looks for ksets that have been open for a second.
const FLUSH_TICK: Duration = Duration::from_millis(100);
/// Idle writeback and GC poll interval (they are also kicked).
const IDLE: Duration = Duration::from_millis(500);
/// Longest back-off after a writeback error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A wake-up flag for a background worker.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Kick {
    pub(crate) fn kick(&self) {
        *self.flag.lock() = true;
        self.cv.notify_all();
    }

    /// Waits for a kick or the timeout; clears the flag.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut f = self.flag.lock();
        if !*f {
            self.cv.wait_for(&mut f, timeout);
        }
        *f = false;
    }
}

/// The workers' controls: how the cache stops them, wakes them, and asks them for space
/// (the write path's only way to reach writeback and GC when the workers run), and the
/// locks that keep one writeback round and one GC round at a time.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// The cache is closing: requests are refused, the workers end.
    pub stop: AtomicBool,
    /// A writer waits for space: GC runs whatever gc_percent says.
    pub gc_wanted: AtomicBool,
    /// Asks the flusher to close every kset now (a writer waits for space).
    pub close_all_wanted: AtomicBool,
    pub kick_writeback: Kick,
    pub kick_gc: Kick,
    pub kick_flush: Kick,
    /// Serialises writeback rounds.
    pub wb_lock: Mutex<()>,
    /// Serialises GC rounds.
    pub gc_lock: Mutex<()>,
    /// [`CacheConfig::writeback_percent`](crate::CacheConfig::writeback_percent).
    pub writeback_percent: AtomicU8,
}

impl Control {
    /// Asks the workers for space: the flusher closes every kset (when `close_ksets`),
    /// GC runs whatever gc_percent says, writeback goes on.
    pub(crate) fn want_space(&self, close_ksets: bool) {
        if close_ksets {
            self.close_all_wanted.store(true, Ordering::Release);
            self.kick_flush.kick();
        }
        self.gc_wanted.store(true, Ordering::Release);
        self.kick_gc.kick();
        self.kick_writeback.kick();
    }

    /// Wakes every worker (to see that the cache stops).
    pub(crate) fn kick_all(&self) {
        for k in [&self.kick_writeback, &self.kick_gc, &self.kick_flush] {
            k.kick();
        }
    }
}

fn spawn_one(name: &str, inner: &Arc<Inner>, f: fn(&Inner)) -> Option<JoinHandle<()>> {
    let inner = Arc::clone(inner);
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || f(&inner))
    {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("cannot start the {name} thread: {e}");
            None
        }
    }
}

/// Starts the workers.
pub(crate) fn spawn(inner: &Arc<Inner>) -> Vec<JoinHandle<()>> {
    [
        spawn_one("pcache-flush", inner, flusher),
        spawn_one("pcache-writeback", inner, writeback),
        spawn_one("pcache-gc", inner, gc),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn stopping(inner: &Inner) -> bool {
    inner.ctl.stop.load(Ordering::Acquire)
}

fn flusher(inner: &Inner) {
    while !stopping(inner) {
        inner.ctl.kick_flush.wait(FLUSH_TICK);
        if stopping(inner) {
            break;
        }
        let all = inner.ctl.close_all_wanted.swap(false, Ordering::AcqRel);
        let now = Instant::now();
        for i in 0..inner.log.ksets.len() {
            let r = if all {
                let mut ks = inner.log.ksets[i].lock();
                inner.close_kset(&mut ks)
            } else {
                inner.close_if_old(i, now)
            };
            if let Err(e) = r {
                tracing::warn!("closing kset {i}: {e}");
            }
        }
    }
}

/// How long without a write makes the cache idle: writeback then runs whatever
/// `writeback_percent` says.
const WRITES_IDLE: Duration = Duration::from_millis(500);

/// The write requests seen last, and since when their count has not moved.
#[derive(Debug)]
pub(crate) struct Quiet {
    writes: u64,
    since: Instant,
}

impl Quiet {
    /// Nothing seen yet: the first look counts as a write seen at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            writes: u64::MAX,
            since: now,
        }
    }
}

impl Inner {
    /// Whether the writeback worker may wait (see
    /// [`CacheConfig::writeback_percent`](crate::CacheConfig::writeback_percent)): the
    /// dirty data is under the share, no writer waits for space, the segments in use are
    /// under gc_percent, a write came within [`WRITES_IDLE`], and the mode keeps dirty
    /// data (a cache switched to one that keeps none drains at once).
    pub(crate) fn writeback_may_wait(&self, quiet: &mut Quiet, now: Instant) -> bool {
        let pct = self.ctl.writeback_percent.load(Ordering::Relaxed);
        if pct == 0
            || self.ctl.gc_wanted.load(Ordering::Acquire)
            || !self.policy.mode().keeps_dirty()
        {
            return false;
        }
        let writes = self.health.counters.write_requests();
        if writes != quiet.writes {
            *quiet = Quiet { writes, since: now };
        } else if now.duration_since(quiet.since) >= WRITES_IDLE {
            return false;
        }
        let n = u64::from(self.segs.count());
        let used = u64::from(self.segs.used());
        let gc_pct = u64::from(self.info.lock().0.gc_percent);
        if used * 100 >= n * gc_pct {
            return false;
        }
        let dirty = self.health.counters.dirty_bytes();
        dirty * 100 < n * pcache_format::layout::SEG_SIZE * u64::from(pct)
    }
}

fn writeback(inner: &Inner) {
    let mut backoff = Duration::from_millis(10);
    let mut quiet = Quiet::new(Instant::now());
    while !stopping(inner) {
        if inner.writeback_may_wait(&mut quiet, Instant::now()) {
            inner.ctl.kick_writeback.wait(WRITES_IDLE / 4);
            continue;
        }
        match inner.writeback_once() {
            Ok(true) => backoff = Duration::from_millis(10),
            Ok(false) => inner.ctl.kick_writeback.wait(IDLE),
            Err(crate::error::EngineError::Closed) => break,
            Err(e) => {
                // Dirty data stays in the cache; dirty_tail stays put; retry later. Kicks
                // (every kset close sends one) do not cut the back-off short.
                inner.health.counters.error();
                tracing::error!("writeback: {e}; retrying in {backoff:?}");
                sleep_unless_stopping(inner, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sleeps for `d`, waking early only to stop.
fn sleep_unless_stopping(inner: &Inner, d: Duration) {
    let end = Instant::now() + d;
    while !stopping(inner) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn gc(inner: &Inner) {
    while !stopping(inner) {
        match inner.gc_once() {
            Ok(true) => {}
            Ok(false) => inner.ctl.kick_gc.wait(IDLE),
            Err(e) => {
                inner.health.counters.error();
                tracing::error!("gc: {e}");
                sleep_unless_stopping(inner, MAX_BACKOFF);
            }
        }
    }
}
