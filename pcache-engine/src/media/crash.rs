//! A crash-simulating test double: every store, flush and fence is recorded, and
//! [`CrashMedia::crash_image`] builds what a power cut right after fence *k* could leave
//! on persistent memory.
//!
//! The model is the pmem one the engine is written against: a store is guaranteed
//! durable once a flush of its cache line *and then* a fence have happened. A store that
//! is not yet guaranteed may or may not have reached the media, in any order, at 8-byte
//! granularity (the unit the CPU writes atomically); `crash_image` with a seed includes
//! a random subset of those words, without a seed none of them.

use super::flush::CACHE_LINE;
use super::mem::MemMedia;
use super::{CacheMedia, MediaError};
use parking_lot::Mutex;
use std::collections::HashMap;

/// One recorded store, cut at cache-line boundaries.
#[derive(Debug)]
struct Piece {
    off: u64,
    data: Vec<u8>,
    /// The fence after which the piece is guaranteed durable.
    durable_at: Option<usize>,
    /// How many fences had completed when the store happened.
    written_after: usize,
}

#[derive(Debug, Default)]
struct Log {
    pieces: Vec<Piece>,
    /// Pieces not flushed yet, by cache line.
    unflushed: HashMap<u64, Vec<usize>>,
    /// Pieces flushed but not fenced yet.
    flushed: Vec<usize>,
    fences: usize,
}

/// Media that remembers the order of stores, flushes and fences.
#[derive(Debug)]
pub struct CrashMedia {
    live: MemMedia,
    log: Mutex<Log>,
}

impl CrashMedia {
    /// `len` bytes of zeros (the state at fence 0).
    #[must_use]
    pub fn new(len: u64) -> Self {
        Self {
            live: MemMedia::new(len),
            log: Mutex::new(Log::default()),
        }
    }

    /// Fences so far: the crash points are `0..=fences()`.
    #[must_use]
    pub fn fences(&self) -> usize {
        self.log.lock().fences
    }

    /// The image after a power cut right after fence `at_fence` (0: before the first).
    /// With `torn`, each 8-byte word of each store that was not yet guaranteed durable
    /// (but had been issued) is included at random (seeded); without, none is.
    #[must_use]
    pub fn crash_image(&self, at_fence: usize, torn: Option<u64>) -> MemMedia {
        let log = self.log.lock();
        let image = MemMedia::new(self.live.len());
        let mut rng = torn.map(SplitMix);
        for p in &log.pieces {
            if p.written_after > at_fence {
                // Issued after the crash: a store's position in the log is its issue
                // order, and every later piece is later still.
                break;
            }
            if p.durable_at.is_some_and(|f| f <= at_fence) {
                // Bounds were checked when the store was recorded.
                let _ = image.write(p.off, &p.data);
            } else if let Some(rng) = rng.as_mut() {
                for (i, word) in p.data.chunks(8).enumerate() {
                    if rng.next() & 1 == 1 {
                        let _ = image.write(p.off + 8 * i as u64, word);
                    }
                }
            }
        }
        image
    }

    /// The live image (what the running engine sees).
    #[must_use]
    pub fn live(&self) -> &MemMedia {
        &self.live
    }
}

impl CacheMedia for CrashMedia {
    fn len(&self) -> u64 {
        self.live.len()
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.live.read(off, buf)
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        let mut log = self.log.lock();
        self.live.write(off, data)?;
        let line = CACHE_LINE as u64;
        let mut at = 0usize;
        while at < data.len() {
            let abs = off + at as u64;
            let room = (line - abs % line) as usize;
            let n = room.min(data.len() - at);
            let id = log.pieces.len();
            let written_after = log.fences;
            log.pieces.push(Piece {
                off: abs,
                data: data[at..at + n].to_vec(),
                durable_at: None,
                written_after,
            });
            log.unflushed.entry(abs / line).or_default().push(id);
            at += n;
        }
        Ok(())
    }

    fn flush(&self, off: u64, len: u64) {
        let mut log = self.log.lock();
        let line = CACHE_LINE as u64;
        let first = off / line;
        let last = off.saturating_add(len).div_ceil(line);
        let log = &mut *log;
        if last - first > log.unflushed.len() as u64 {
            let lines: Vec<u64> = log
                .unflushed
                .keys()
                .copied()
                .filter(|l| (first..last).contains(l))
                .collect();
            for l in lines {
                if let Some(ids) = log.unflushed.remove(&l) {
                    log.flushed.extend(ids);
                }
            }
        } else {
            for l in first..last {
                if let Some(ids) = log.unflushed.remove(&l) {
                    log.flushed.extend(ids);
                }
            }
        }
    }

    fn fence(&self) {
        let mut log = self.log.lock();
        log.fences += 1;
        let now = log.fences;
        let flushed = std::mem::take(&mut log.flushed);
        for id in flushed {
            if let Some(p) = log.pieces.get_mut(id) {
                p.durable_at = Some(now);
            }
        }
    }

    fn describe(&self) -> String {
        format!("crash-recording memory ({} bytes)", self.len())
    }
}

/// A small deterministic generator for torn images.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
