//! The cache's policy: its mode ([`CacheMode`]) and the sequential cutoff, which sends a
//! long sequential stream around the cache (bcache's `sequential_cutoff`, Open CAS's
//! seq-cutoff).
//!
//! Streams are followed per queue and per direction: a request that starts where the
//! queue's previous one of the same direction ended continues its stream. A frontend
//! hands one stream's requests to one queue (ublk queues are per CPU, and a sequential
//! reader or writer mostly stays on one), so per-queue detection needs no shared state on
//! the I/O path; a stream split across queues is seen as several shorter ones, which can
//! only cache more of it, never serve older data.

use parking_lot::Mutex;
use pcache_format::CacheMode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// One direction's stream on one queue.
#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    /// Where the last request ended.
    end: u64,
    /// Bytes of the run that ends there.
    run: u64,
}

/// A queue's read and write streams.
#[derive(Debug, Default)]
struct Streams {
    read: Stream,
    write: Stream,
}

/// The mode and the cutoff (see the module documentation).
#[derive(Debug)]
pub(crate) struct Policy {
    mode: AtomicU8,
    /// Sequential cutoff for reads, bytes; 0 = off.
    cutoff_read: AtomicU64,
    /// Sequential cutoff for writes, bytes; 0 = off.
    cutoff_write: AtomicU64,
    streams: Box<[Mutex<Streams>]>,
}

impl Policy {
    pub(crate) fn new(mode: CacheMode, queues: usize, cutoff: SeqCutoff) -> Self {
        Self {
            mode: AtomicU8::new(mode.value()),
            cutoff_read: AtomicU64::new(cutoff.read),
            cutoff_write: AtomicU64::new(cutoff.write),
            streams: (0..queues.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// The mode in force.
    pub(crate) fn mode(&self) -> CacheMode {
        CacheMode::from_value(self.mode.load(Ordering::Acquire)).unwrap_or_default()
    }

    pub(crate) fn set_mode(&self, mode: CacheMode) {
        self.mode.store(mode.value(), Ordering::Release);
    }

    /// The sequential cutoffs.
    pub(crate) fn cutoff(&self) -> SeqCutoff {
        SeqCutoff {
            read: self.cutoff_read.load(Ordering::Relaxed),
            write: self.cutoff_write.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_cutoff(&self, c: SeqCutoff) {
        self.cutoff_read.store(c.read, Ordering::Relaxed);
        self.cutoff_write.store(c.write, Ordering::Relaxed);
    }

    /// Follows a request of `len` bytes at `off` on queue `q`; true when it continues a
    /// stream longer than the cutoff, so it goes around the cache. The request that
    /// crosses the cutoff is the first to go around: a stream caches at most its first
    /// `cutoff` bytes.
    pub(crate) fn bypass(&self, q: usize, off: u64, len: u64, write: bool) -> bool {
        let cutoff = if write {
            self.cutoff_write.load(Ordering::Relaxed)
        } else {
            self.cutoff_read.load(Ordering::Relaxed)
        };
        if cutoff == 0 {
            return false;
        }
        let Some(s) = self.streams.get(q % self.streams.len()) else {
            return false;
        };
        let mut s = s.lock();
        let st = if write { &mut s.write } else { &mut s.read };
        st.run = if off == st.end && st.run > 0 {
            st.run.saturating_add(len)
        } else {
            len
        };
        st.end = off.saturating_add(len);
        st.run > cutoff
    }
}

/// Sequential cutoffs in bytes (0 = off): a stream longer than this goes around the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeqCutoff {
    /// For reads: misses are not cached.
    pub read: u64,
    /// For writes: written to the backing device as in writearound.
    pub write: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_caches_at_most_its_first_cutoff_bytes() {
        let p = Policy::new(
            CacheMode::Writeback,
            2,
            SeqCutoff {
                read: 4 << 20,
                write: 0,
            },
        );
        let mb = 1u64 << 20;
        let cached: u64 = (0..64)
            .filter(|&i| !p.bypass(0, i * mb, mb, false))
            .map(|_| mb)
            .sum();
        assert_eq!(cached, 4 * mb);
        // A jump starts a new stream; writes are not cut off (0).
        assert!(!p.bypass(0, 0, mb, false));
        assert!((0..64).all(|i| !p.bypass(0, i * mb, mb, true)));
        // Another queue has its own stream.
        assert!(!p.bypass(1, 64 * mb, mb, false));
    }

    #[test]
    fn random_io_is_never_cut_off() {
        let p = Policy::new(
            CacheMode::Writeback,
            1,
            SeqCutoff {
                read: 8192,
                write: 8192,
            },
        );
        for i in 0..1000u64 {
            let off = (i * 7919 % 1000) * 65536;
            assert!(!p.bypass(0, off, 4096, i % 2 == 0));
        }
    }
}
