//! Background workers: the kset flusher (1 s delay), writeback and GC.

use crate::cache::Inner;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the flusher looks for ksets that have been open for a second.
const FLUSH_TICK: Duration = Duration::from_millis(100);
/// Idle writeback and GC poll interval (they are also kicked).
const IDLE: Duration = Duration::from_millis(500);
/// Longest back-off after a writeback error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    inner.stop.load(Ordering::Acquire)
}

fn flusher(inner: &Inner) {
    while !stopping(inner) {
        inner.kick_flush.wait(FLUSH_TICK);
        if stopping(inner) {
            break;
        }
        let all = inner.close_all_wanted.swap(false, Ordering::AcqRel);
        let now = Instant::now();
        for i in 0..inner.ksets.len() {
            let r = if all {
                let mut ks = inner.ksets[i].lock();
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

fn writeback(inner: &Inner) {
    let mut backoff = Duration::from_millis(10);
    while !stopping(inner) {
        match inner.writeback_once() {
            Ok(true) => backoff = Duration::from_millis(10),
            Ok(false) => inner.kick_writeback.wait(IDLE),
            Err(e) => {
                // Dirty data stays in the cache; dirty_tail stays put; retry later. Kicks
                // (every kset close sends one) do not cut the back-off short.
                inner.counters.error();
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
            Ok(false) => inner.kick_gc.wait(IDLE),
            Err(e) => {
                inner.counters.error();
                tracing::error!("gc: {e}");
                sleep_unless_stopping(inner, MAX_BACKOFF);
            }
        }
    }
}
