//! The backing device after a power cut: a disk with a volatile write cache.
//!
//! A [`TestBacking`](super::TestBacking) built `recording` puts every completed write
//! (discards and write-zeroes as writes of their content) and every completed flush on a
//! [`CrashMedia`](super::CrashMedia)'s timeline ([`BackingEvent`]). After a power cut
//! right after event *k*, every write completed before the last flush completed by *k*
//! is durable; a write completed after it is in the disk's volatile cache, and each of
//! its 512-byte sectors may or may not have reached the medium ([`BackingReplayer`]
//! builds the images: none of them, a seeded choice, or all). A sector that several such
//! writes touched holds its durable content or the content of any one of them.

use super::SplitMix;
use crate::backing::{check, Backing};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

/// The unit a disk writes atomically.
pub const BACKING_SECTOR: usize = 512;

/// One event of a recording [`TestBacking`](super::TestBacking), numbered on the
/// [`CrashMedia`](super::CrashMedia)'s timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingEvent {
    /// A write completed (a discard or write-zeroes: the write of its content).
    Write {
        /// Its event number.
        at: usize,
        /// Offset.
        off: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// A flush completed: every write completed before it is durable.
    Flush {
        /// Its event number.
        at: usize,
    },
}

impl BackingEvent {
    /// Its event number.
    #[must_use]
    pub fn at(&self) -> usize {
        match self {
            Self::Write { at, .. } | Self::Flush { at } => *at,
        }
    }
}

/// Which of the writes in the volatile cache reached the medium in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// None of them: the backing holds what was flushed.
    None,
    /// Per sector, the durable content or that of one of the writes (seeded choice).
    Some(u64),
    /// All of them, in order: the backing holds what was written.
    All,
}

/// Builds backing images for increasing crash points (event numbers).
#[derive(Debug)]
pub struct BackingReplayer {
    base: Arc<Vec<u8>>,
    events: Vec<BackingEvent>,
    /// Events before this index are at or before the current crash point.
    seen: usize,
    /// Writes before this index are durable (applied to `base`).
    applied: usize,
    at: usize,
}

impl BackingReplayer {
    /// The device holding `initial` (durable) at event 0, then `events` (in event order).
    #[must_use]
    pub fn new(initial: Vec<u8>, events: Vec<BackingEvent>) -> Self {
        Self {
            base: Arc::new(initial),
            events,
            seen: 0,
            applied: 0,
            at: 0,
        }
    }

    /// How many completed writes are not durable at crash point `at` (in the volatile
    /// cache). Crash points must not decrease.
    ///
    /// # Panics
    /// If `at` is smaller than at the previous call.
    pub fn volatile_writes(&mut self, at: usize) -> usize {
        self.advance(at);
        self.volatile().count()
    }

    /// The backing device after a power cut right after event `at`: what was flushed,
    /// and `survivors` of what was not. Crash points must not decrease.
    ///
    /// # Panics
    /// If `at` is smaller than at the previous call.
    pub fn image(&mut self, at: usize, survivors: Survivors) -> BackingImage {
        self.advance(at);
        let mut over: HashMap<u64, Box<[u8; BACKING_SECTOR]>> = HashMap::new();
        let base = &self.base;
        let put = |over: &mut HashMap<u64, Box<[u8; BACKING_SECTOR]>>, off: u64, d: &[u8]| {
            for_sectors(off, d, |s, at, bytes| {
                let sector = over
                    .entry(s)
                    .or_insert_with(|| Box::new(sector_of(base, s)));
                sector[at..at + bytes.len()].copy_from_slice(bytes);
            });
        };
        match survivors {
            Survivors::None => {}
            Survivors::All => {
                for (off, data) in self.volatile() {
                    put(&mut over, off, data);
                }
            }
            Survivors::Some(seed) => {
                // Per sector, the writes that touched it, in order.
                let mut versions: BTreeMap<u64, Vec<(u64, &[u8])>> = BTreeMap::new();
                for (off, data) in self.volatile() {
                    for_sectors(off, data, |s, _, _| {
                        versions.entry(s).or_default().push((off, data));
                    });
                }
                let mut rng = SplitMix(seed);
                for (s, v) in versions {
                    // 0: the durable content; i: that of the i-th write.
                    let pick = rng.below(v.len() as u64 + 1) as usize;
                    if let Some(&(off, data)) = pick.checked_sub(1).and_then(|i| v.get(i)) {
                        let lo = s * BACKING_SECTOR as u64;
                        let from = lo.max(off);
                        let to = (lo + BACKING_SECTOR as u64).min(off + data.len() as u64);
                        // Inside the write: from ≥ off, to ≤ its end.
                        #[allow(clippy::cast_possible_truncation)]
                        let bytes = &data[(from - off) as usize..(to - off) as usize];
                        put(&mut over, from, bytes);
                    }
                }
            }
        }
        BackingImage {
            base: Arc::clone(&self.base),
            over: Mutex::new(over),
        }
    }

    /// The writes in the volatile cache at the current crash point, in completion order.
    fn volatile(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.events[self.applied..self.seen]
            .iter()
            .filter_map(|e| match e {
                BackingEvent::Write { off, data, .. } => Some((*off, &data[..])),
                BackingEvent::Flush { .. } => None,
            })
    }

    /// Moves to crash point `at`: the writes before its last flush become durable.
    fn advance(&mut self, at: usize) {
        assert!(at >= self.at, "crash points must not decrease");
        self.at = at;
        while self.events.get(self.seen).is_some_and(|e| e.at() <= at) {
            self.seen += 1;
        }
        let Some(last_flush) = self.events[..self.seen]
            .iter()
            .rposition(|e| matches!(e, BackingEvent::Flush { .. }))
        else {
            return;
        };
        if last_flush < self.applied {
            return;
        }
        let base = Arc::make_mut(&mut self.base);
        for e in &self.events[self.applied..last_flush] {
            if let BackingEvent::Write { off, data, .. } = e {
                // Recorded writes were inside the device.
                #[allow(clippy::cast_possible_truncation)]
                let off = *off as usize;
                base[off..off + data.len()].copy_from_slice(data);
            }
        }
        self.applied = last_flush + 1;
    }
}

/// Calls `f(sector, offset in it, bytes)` for each sector `data` at `off` touches.
fn for_sectors(off: u64, data: &[u8], mut f: impl FnMut(u64, usize, &[u8])) {
    let mut done = 0usize;
    while done < data.len() {
        let abs = off + done as u64;
        let s = abs / BACKING_SECTOR as u64;
        // Below one sector.
        #[allow(clippy::cast_possible_truncation)]
        let at = (abs % BACKING_SECTOR as u64) as usize;
        let n = (BACKING_SECTOR - at).min(data.len() - done);
        f(s, at, &data[done..done + n]);
        done += n;
    }
}

fn sector_of(base: &[u8], s: u64) -> [u8; BACKING_SECTOR] {
    let mut out = [0; BACKING_SECTOR];
    // Sectors of writes inside the device.
    #[allow(clippy::cast_possible_truncation)]
    let lo = (s as usize * BACKING_SECTOR).min(base.len());
    let hi = (lo + BACKING_SECTOR).min(base.len());
    out[..hi - lo].copy_from_slice(&base[lo..hi]);
    out
}

/// A backing device as a power cut left it ([`BackingReplayer::image`]): durable content
/// shared with the replayer, and a private overlay of sectors (the surviving volatile
/// writes and whatever is written to the image afterwards).
#[derive(Debug)]
pub struct BackingImage {
    base: Arc<Vec<u8>>,
    over: Mutex<HashMap<u64, Box<[u8; BACKING_SECTOR]>>>,
}

impl BackingImage {
    /// A copy of `len` bytes at `off`, as read.
    ///
    /// # Panics
    /// If the range is outside the device.
    #[must_use]
    pub fn to_vec(&self, off: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.read_at(off, &mut buf)
            .expect("a range inside the device");
        buf
    }
}

impl Backing for BackingImage {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        check(off, buf.len() as u64, self.size())?;
        let over = self.over.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let abs = off + done as u64;
            let s = abs / BACKING_SECTOR as u64;
            // Inside the device (checked above).
            #[allow(clippy::cast_possible_truncation)]
            let (at, abs) = ((abs % BACKING_SECTOR as u64) as usize, abs as usize);
            let n = (BACKING_SECTOR - at).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match over.get(&s) {
                Some(sector) => dst.copy_from_slice(&sector[at..at + n]),
                None => dst.copy_from_slice(&self.base[abs..abs + n]),
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        check(off, data.len() as u64, self.size())?;
        let mut over = self.over.lock();
        for_sectors(off, data, |s, at, bytes| {
            let sector = over
                .entry(s)
                .or_insert_with(|| Box::new(sector_of(&self.base, s)));
            sector[at..at + bytes.len()].copy_from_slice(bytes);
        });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.write_at(off, &vec![0; len])
    }

    fn describe(&self) -> String {
        format!("backing after a power cut ({} bytes)", self.size())
    }
}
