//! A crash-simulating test double: every store, flush and fence is recorded, and
//! [`CrashMedia::crash_image`] builds what a power cut right after event *k* could leave
//! on persistent memory. The events are the fences, and whatever else is put on the same
//! timeline with [`CrashMedia::tick`] (a [`TestBacking`](super::TestBacking) built
//! `recording` ticks at every backing write completion and flush), so that a power cut
//! can be placed between any two of them.
//!
//! The model is the pmem one the engine is written against: a store is guaranteed
//! durable once a flush of its cache line *and then* a fence **in the thread that
//! flushed it** have happened (SFENCE orders only its own CPU's CLWBs; a thread standing
//! for a CPU is the strict reading, since migrating a thread serializes). A store that
//! is not yet guaranteed may or may not have reached the media, in any order, at 8-byte
//! granularity (the unit the CPU writes atomically); `crash_image` with a seed includes
//! a random subset of those words, without a seed none of them.

use crate::media::flush::CACHE_LINE;
use crate::media::{check_range, CacheMedia, MediaError, MemMedia};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::ThreadId;

/// One recorded store, cut at cache-line boundaries.
#[derive(Debug)]
struct Piece {
    off: u64,
    data: Vec<u8>,
    /// The event (a fence) after which the piece is guaranteed durable.
    durable_at: Option<usize>,
    /// How many events had happened when the store happened.
    written_after: usize,
}

#[derive(Debug, Default)]
struct Log {
    pieces: Vec<Piece>,
    /// Pieces not flushed yet, by cache line.
    unflushed: HashMap<u64, Vec<usize>>,
    /// Pieces flushed but not fenced yet, by the thread that flushed them: a fence only
    /// orders the flushes of its own thread (SFENCE orders the CLWBs of its CPU).
    flushed: HashMap<ThreadId, Vec<usize>>,
    /// Events so far: fences and ticks.
    events: usize,
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

    /// Events so far (fences and ticks): the crash points are `0..=events()`.
    #[must_use]
    pub fn events(&self) -> usize {
        self.log.lock().events
    }

    /// Puts an event of some other device on this media's timeline (a crash point that
    /// makes nothing durable here) and returns its number. Called with the other device's
    /// own record locked, it orders that record with the fences.
    pub fn tick(&self) -> usize {
        let mut log = self.log.lock();
        log.events += 1;
        log.events
    }

    /// The image after a power cut right after event `at_fence` (0: before the first).
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
                    if rng.next_u64() & 1 == 1 {
                        let _ = image.write(p.off + 8 * i as u64, word);
                    }
                }
            }
        }
        image
    }

    /// A builder of crash images for increasing crash points, far cheaper than
    /// [`CrashMedia::crash_image`] when many points are checked: the durable lines are
    /// kept and advanced incrementally, and an image is an overlay over them.
    #[must_use]
    pub fn replayer(&self) -> CrashReplayer {
        let log = self.log.lock();
        let mut by_fence: Vec<(usize, usize)> = log
            .pieces
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.durable_at.map(|f| (f, i)))
            .collect();
        by_fence.sort_unstable();
        CrashReplayer {
            len: self.live.len(),
            pieces: log
                .pieces
                .iter()
                .map(|p| Piece {
                    off: p.off,
                    data: p.data.clone(),
                    durable_at: p.durable_at,
                    written_after: p.written_after,
                })
                .collect(),
            by_fence,
            next: 0,
            issued: 0,
            pending: BTreeSet::new(),
            at: 0,
            durable: Arc::new(HashMap::new()),
        }
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
            let written_after = log.events;
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
            let mine = log.flushed.entry(std::thread::current().id()).or_default();
            for l in lines {
                if let Some(ids) = log.unflushed.remove(&l) {
                    mine.extend(ids);
                }
            }
        } else {
            let mine = log.flushed.entry(std::thread::current().id()).or_default();
            for l in first..last {
                if let Some(ids) = log.unflushed.remove(&l) {
                    mine.extend(ids);
                }
            }
        }
    }

    fn fence(&self) {
        let mut log = self.log.lock();
        log.events += 1;
        let now = log.events;
        let flushed = log
            .flushed
            .remove(&std::thread::current().id())
            .unwrap_or_default();
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

type Lines = HashMap<u64, [u8; CACHE_LINE]>;

fn apply(lines: &mut Lines, off: u64, data: &[u8]) {
    let line = CACHE_LINE as u64;
    let l = off / line;
    let at = (off % line) as usize;
    let entry = lines.entry(l).or_insert([0; CACHE_LINE]);
    entry[at..at + data.len()].copy_from_slice(data);
}

/// Builds crash images for increasing crash points (see [`CrashMedia::replayer`]).
#[derive(Debug)]
pub struct CrashReplayer {
    len: u64,
    pieces: Vec<Piece>,
    /// (fence at which durable, piece index), sorted.
    by_fence: Vec<(usize, usize)>,
    next: usize,
    /// Pieces issued by the current crash point (a cursor in issue order).
    issued: usize,
    /// Issued pieces not yet durable at the current crash point.
    pending: BTreeSet<usize>,
    at: usize,
    durable: Arc<Lines>,
}

impl CrashReplayer {
    /// The image a power cut just before event `at_fence + 1` could leave: every store
    /// durable by event `at_fence`, plus — with `torn` — a seeded random
    /// subset of the 8-byte words of every store issued but not yet durable (without,
    /// none of them). Crash points must not decrease between calls.
    ///
    /// # Panics
    /// If `at_fence` is smaller than at the previous call.
    pub fn image(&mut self, at_fence: usize, torn: Option<u64>) -> CrashImage {
        match torn {
            Some(seed) => {
                let mut rng = SplitMix(seed);
                self.build(at_fence, &mut |_| rng.next_u64() & 1 == 1)
            }
            None => self.build(at_fence, &mut |_| false),
        }
    }

    /// How many 8-byte words were issued but are not durable at crash point `at_fence`
    /// (the words a torn image may or may not include). Crash points must not decrease.
    ///
    /// # Panics
    /// As [`CrashReplayer::image`].
    pub fn pending_words(&mut self, at_fence: usize) -> usize {
        self.advance(at_fence);
        self.pending
            .iter()
            .map(|&i| self.pieces[i].data.len().div_ceil(8))
            .sum()
    }

    /// The image at crash point `at_fence` that includes exactly the pending words whose
    /// bit is set in `mask` (word `i` in issue order is bit `i`): with
    /// [`CrashReplayer::pending_words`] ≤ 64, every subset can be checked.
    ///
    /// # Panics
    /// As [`CrashReplayer::image`].
    pub fn image_subset(&mut self, at_fence: usize, mask: u64) -> CrashImage {
        self.build(at_fence, &mut |i| i < 64 && mask >> i & 1 == 1)
    }

    /// Moves the durable lines and the pending set to crash point `at_fence`.
    fn advance(&mut self, at_fence: usize) {
        assert!(at_fence >= self.at, "crash points must not decrease");
        self.at = at_fence;
        while self
            .pieces
            .get(self.issued)
            .is_some_and(|p| p.written_after <= at_fence)
        {
            self.pending.insert(self.issued);
            self.issued += 1;
        }
        let durable = Arc::make_mut(&mut self.durable);
        while let Some(&(f, i)) = self.by_fence.get(self.next) {
            if f > at_fence {
                break;
            }
            let p = &self.pieces[i];
            apply(durable, p.off, &p.data);
            self.pending.remove(&i);
            self.next += 1;
        }
    }

    /// The image at `at_fence` with each pending word (numbered in issue order) included
    /// when `pick(word)` says so.
    fn build(&mut self, at_fence: usize, pick: &mut dyn FnMut(usize) -> bool) -> CrashImage {
        self.advance(at_fence);
        let mut extra = Lines::new();
        let mut n = 0usize;
        for p in self.pending.iter().map(|&i| &self.pieces[i]) {
            for (i, word) in p.data.chunks(8).enumerate() {
                let take = pick(n);
                n += 1;
                if take {
                    let off = p.off + 8 * i as u64;
                    let line = off / CACHE_LINE as u64;
                    let durable = &self.durable;
                    extra
                        .entry(line)
                        .or_insert_with(|| durable.get(&line).copied().unwrap_or([0; CACHE_LINE]));
                    apply(&mut extra, off, word);
                }
            }
        }
        CrashImage {
            len: self.len,
            base: Arc::clone(&self.durable),
            over: Mutex::new(extra),
        }
    }
}

/// A crash image: durable lines shared with the [`CrashReplayer`], and a private
/// overlay holding the torn stores and whatever is written to the image afterwards.
#[derive(Debug)]
pub struct CrashImage {
    len: u64,
    base: Arc<Lines>,
    over: Mutex<Lines>,
}

impl CacheMedia for CrashImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        check_range(off, buf.len(), self.len)?;
        let over = self.over.lock();
        let line = CACHE_LINE as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let abs = off + done as u64;
            let l = abs / line;
            let at = (abs % line) as usize;
            let n = (CACHE_LINE - at).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match over.get(&l).or_else(|| self.base.get(&l)) {
                Some(src) => dst.copy_from_slice(&src[at..at + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        check_range(off, data.len(), self.len)?;
        let mut over = self.over.lock();
        let line = CACHE_LINE as u64;
        let mut done = 0usize;
        while done < data.len() {
            let abs = off + done as u64;
            let l = abs / line;
            let at = (abs % line) as usize;
            let n = (CACHE_LINE - at).min(data.len() - done);
            over.entry(l)
                .or_insert_with(|| self.base.get(&l).copied().unwrap_or([0; CACHE_LINE]));
            apply(&mut over, abs, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn flush(&self, _off: u64, _len: u64) {}

    fn fence(&self) {}

    fn describe(&self) -> String {
        format!("crash image ({} bytes)", self.len)
    }
}

/// A small deterministic generator (SplitMix64): for torn images here, and for the
/// workloads of tests.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A [`CrashMedia`] seen as a block device, for a
/// [`BlockMedia`](crate::media::BlockMedia) under the power-cut proof: a durable write
/// (`RWF_DSYNC`) is stores, a flush of its range and a fence (a cut point after it); a
/// plain write only stores; a sync flushes everything and fences.
#[derive(Debug)]
pub struct CrashBlockDevice(pub Arc<CrashMedia>);

impl crate::media::BlockDevice for CrashBlockDevice {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read(off, buf).map_err(std::io::Error::other)
    }

    fn write_at(&self, off: u64, data: &[u8], durable: bool) -> std::io::Result<()> {
        self.0.write(off, data).map_err(std::io::Error::other)?;
        if durable {
            self.0.flush(off, data.len() as u64);
            self.0.fence();
        }
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.0.flush(0, self.0.len());
        self.0.fence();
        Ok(())
    }
}
