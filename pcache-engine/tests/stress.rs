//! A concurrency stress test of the engine: six threads on four queues (threads 4 and 5
//! share queue ids 0 and 1 with threads 0 and 1, as the ublk frontend's threads do)
//! hammer *overlapping* ranges of a small logical device — three 4 MiB regions, so
//! subtrees and ksets are shared and extents are cut, split and replaced all the time —
//! with writes (512 B to 256 KiB, some FUA, through `write` and `write_with`), reads
//! (through `read` and `read_with`), flushes, discards and write-zeroes, while the
//! writeback, GC (gc_percent 5) and flush workers run. Every read is checked against a
//! model that is sound under concurrency.
//!
//! The cache is the smallest the format allows (31 segments); a monitor thread holds the
//! backing device's writes (only writeback writes to it) until the cache is full — data
//! allocation keeps one segment for the log, so at 30 segments in use the next data
//! segment waits for GC — keeps it full for 30 ms, then lets writeback and GC run for
//! 300 ms, and again. The test asserts that the cache did fill up, and that writeback and
//! GC ran, from the status counters.
//!
//! The run is [`ROUNDS`] rounds, each on a *fresh* cache in front of the same backing
//! device (the previous round's cache written back and retired): a fresh cache misses
//! everywhere, so each round begins with read-miss fills racing writes to the same
//! sectors. Each round ends with no request in flight: one more read of the whole device,
//! checked by the same rule, becomes the reference; after a clean close and reopen every
//! sector must show exactly it, and after `writeback_all` the backing device alone must
//! hold exactly it.
//!
//! # The model
//!
//! Every write stamps each of its sectors with `(write id, sector)` (and a pattern derived
//! from both), so a read tells exactly which write a sector came from, or that it holds
//! zeros, or garbage. Discards and write-zeroes are writes of zeros (`Cache::discard`
//! promises that later reads return zeros); the device starts as a write of zeros.
//!
//! One mutex guards the model and a sequence counter; every event takes the next number
//! under it: a write's *start* (taken before the engine is called) and *end* (after it
//! returned), a read's `r0` (before) and `r1` (after). The mutex orders the numbers as
//! the events happened in real time. Per sector the model keeps the history of writes
//! that covered it, each as `(id, zero, start, end)`, `end = ∞` while in flight.
//!
//! **Rule.** For a read `[r0, r1]` of a sector, let `S` be the largest `start` among the
//! writes of the sector with `end < r0` (they completed before the read began; the
//! initial zeros count, with start = end = 0). The read may show write `w` iff
//! `w.start < r1` and `w.end ≥ S`.
//!
//! Why this cannot reject a correct engine: a write the read may show must have begun
//! before the read ended (`start < r1`), and must not be hidden by a write `w'` that began
//! after `w` completed and itself completed before the read began (`w.end < w'.start`,
//! `w'.end < r0`): a correct engine then has replaced `w` by `w'` (or a newer write) for
//! good before the read looked. "Some such `w'` exists" is exactly `w.end < S`. Writes that
//! overlap each other in time may land in either order, so both stay allowed, as do all
//! writes in flight during the read. A sector is written atomically by the engine (an
//! extent never splits a sector), so each sector is checked on its own.
//!
//! Why it still catches a lost or stale write: the write that defines `S` completed before
//! the read began and is always allowed, and every write that ended before `S` is not. A
//! read-miss fill that caches data a newer write replaced (the epoch check, see
//! `docs/design.md`, "Read misses"), a lost index insert, a stale extent served after its
//! segment was reused, or a misplaced piece shows up as a forbidden id, a wrong sector
//! number or garbage.
//!
//! **Pruning.** An entry can be dropped once no read in flight or to come can show it:
//! with `low` the smallest `r0` of the reads in flight (or the next number), every entry
//! with `end < S(low)` is forbidden to every such read, since `S` only grows with `r0`;
//! the entry that defines `S(low)` is kept, so `S` of those reads is unchanged.
//!
//! At the end of a round the reference is one value per sector: writes that overlapped
//! each other in time may have landed in either order, and whichever did is what the
//! close, the reopen and the writeback must keep.
//!
//! Seeds are fixed (a xorshift generator per thread); the interleaving is not.
//! `PCACHE_STRESS_OPS` sets the operations per thread and round (default
//! [`DEFAULT_OPS`]: about 3 × 570 MiB written, 4–8 s in a debug build);
//! `PCACHE_STRESS_SEED` changes the seed.

use pcache_engine::backing::MemBacking;
use pcache_engine::testing::{self, TestBacking};
use pcache_engine::{Cache, CacheConfig};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECTOR: usize = 512;
/// A 4 MiB region (one subtree of the index, one kset routing).
const REGION: u64 = 4 << 20;
const REGIONS: u64 = 3;
const DEV: u64 = REGIONS * REGION;
const SECTORS: usize = (DEV / SECTOR as u64) as usize;
const REGION_SECTORS: usize = (REGION / SECTOR as u64) as usize;
/// The smallest cache the format allows: 31 segments of 16 MiB.
const CACHE_BYTES: u64 = 512 << 20;
const QUEUES: u32 = 4;
/// Threads 4 and 5 share queue ids 0 and 1 with threads 0 and 1.
const THREADS: u32 = 6;
/// Operations per thread and round.
const DEFAULT_OPS: usize = 1500;
/// Rounds, each on a fresh cache.
const ROUNDS: u32 = 3;
const GC_PERCENT: u8 = 5;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Largest write: 256 KiB.
const MAX_WRITE: usize = 512;
/// Largest read: 512 KiB (it may span two regions).
const MAX_READ: usize = 1024;
/// Largest discard or write-zeroes: 1 MiB.
const MAX_ZERO: usize = 2048;

/// Xorshift64* with a splitmix64 seeding.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// A length in sectors, 1..=max, mostly large (about half over an eighth of max).
    fn len(&mut self, max: usize) -> usize {
        let max = max as u64;
        let l = match self.below(4) {
            0 => 1 + self.below(8),
            1 => 1 + self.below(max / 8),
            _ => max / 8 + self.below(max - max / 8 + 1),
        };
        l.clamp(1, max) as usize
    }

    /// A range of [`Rng::len`] sectors: often 4 KiB aligned, sometimes across a region
    /// boundary.
    fn span(&mut self, max: usize) -> (usize, usize) {
        let n = self.len(max);
        let first = if self.chance(6) {
            let boundary = REGION_SECTORS * (1 + self.below(REGIONS - 1) as usize);
            boundary - 1 - self.below(n as u64) as usize
        } else {
            let s = self.below((SECTORS - n + 1) as u64) as usize;
            if self.chance(2) {
                s & !7
            } else {
                s
            }
        };
        (first, n.min(SECTORS - first))
    }
}

/// The 512 bytes write `id` puts in `sector`.
fn stamp(id: u64, sector: usize, out: &mut [u8]) {
    let sector = sector as u64;
    out[..8].copy_from_slice(&id.to_le_bytes());
    out[8..16].copy_from_slice(&sector.to_le_bytes());
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ sector.rotate_left(40);
    for w in out[16..SECTOR].chunks_exact_mut(8) {
        x = x
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// What a sector read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Zeros,
    Write(u64),
    /// Neither zeros nor any write's stamp for this sector; the first 16 bytes.
    Garbage(u64, u64),
}

fn seen(sector: usize, data: &[u8]) -> Seen {
    if data.iter().all(|&b| b == 0) {
        return Seen::Zeros;
    }
    let id = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut want = [0u8; SECTOR];
    stamp(id, sector, &mut want);
    if want[..] == data[..] {
        Seen::Write(id)
    } else {
        Seen::Garbage(id, u64::from_le_bytes(data[8..16].try_into().unwrap()))
    }
}

const IN_FLIGHT: u64 = u64::MAX;

/// One write of one sector, as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    /// A discard or write-zeroes (or the initial content).
    zero: bool,
    start: u64,
    end: u64,
}

impl Entry {
    fn shows(&self, s: Seen) -> bool {
        match s {
            Seen::Zeros => self.zero,
            Seen::Write(id) => !self.zero && self.id == id,
            Seen::Garbage(..) => false,
        }
    }
}

/// The largest start of a write that ended before `r0`.
fn horizon(h: &[Entry], r0: u64) -> u64 {
    h.iter()
        .filter(|e| e.end < r0)
        .map(|e| e.start)
        .max()
        .expect("the initial zeros are never pruned without a successor")
}

struct Model {
    seq: u64,
    sectors: Vec<Vec<Entry>>,
    /// `r0` of the reads in flight.
    reads: BTreeSet<u64>,
}

impl Model {
    fn new() -> Self {
        let init = Entry {
            id: 0,
            zero: true,
            start: 0,
            end: 0,
        };
        Self {
            seq: 0,
            sectors: vec![vec![init]; SECTORS],
            reads: BTreeSet::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn begin_write(&mut self, id: u64, zero: bool, first: usize, n: usize) {
        let start = self.tick();
        for h in &mut self.sectors[first..first + n] {
            h.push(Entry {
                id,
                zero,
                start,
                end: IN_FLIGHT,
            });
        }
    }

    fn end_write(&mut self, id: u64, first: usize, n: usize) {
        let end = self.tick();
        let low = self.reads.first().copied().unwrap_or(self.seq + 1);
        for h in &mut self.sectors[first..first + n] {
            let e = h
                .iter_mut()
                .rev()
                .find(|e| e.id == id)
                .expect("the write is in the history");
            e.end = end;
            let s = horizon(h, low);
            h.retain(|e| e.end >= s);
        }
    }

    fn begin_read(&mut self) -> u64 {
        let r0 = self.tick();
        self.reads.insert(r0);
        r0
    }

    /// Ends the read begun at `r0` and checks what it saw of sectors `first..`.
    fn end_read(&mut self, r0: u64, first: usize, data: &[u8]) -> Result<Vec<Seen>, String> {
        self.reads.remove(&r0);
        let r1 = self.tick();
        let mut out = Vec::with_capacity(data.len() / SECTOR);
        for (i, d) in data.chunks_exact(SECTOR).enumerate() {
            let sector = first + i;
            let got = seen(sector, d);
            let h = &self.sectors[sector];
            let s = horizon(h, r0);
            if !h.iter().any(|e| e.start < r1 && e.end >= s && e.shows(got)) {
                return Err(format!(
                    "sector {sector} (byte {:#x}, region {}) read {got:?} in a read \
                     [{r0}, {r1}] of sectors {first}..{}; horizon {s}; history \
                     (id, zero, start, end): {:?}",
                    sector * SECTOR,
                    sector / REGION_SECTORS,
                    first + data.len() / SECTOR,
                    h.iter()
                        .map(|e| (e.id, e.zero, e.start, e.end))
                        .collect::<Vec<_>>()
                ));
            }
            out.push(got);
        }
        Ok(out)
    }
}

struct Shared {
    cache: Cache,
    model: Mutex<Model>,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    /// The most segments in use seen by the monitor.
    max_used: AtomicU32,
    /// Times the cache filled up (data allocation had to wait) while writeback was held.
    fills: AtomicU32,
}

impl Shared {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, msg: String) {
        let mut f = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads `n` sectors from `first` through `read` or `read_with` and checks them.
fn checked_read(
    sh: &Shared,
    q: u32,
    first: usize,
    n: usize,
    with: bool,
) -> Result<Vec<Seen>, String> {
    let off = (first * SECTOR) as u64;
    let mut buf = vec![0u8; n * SECTOR];
    let r0 = sh.model().begin_read();
    let r = if with {
        let mut covered = vec![false; n * SECTOR];
        let mut twice = None;
        let r = sh.cache.read_with(q, off, n * SECTOR, &mut |at, bytes| {
            let at = usize::try_from(at).unwrap();
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            for (i, c) in covered[at..at + bytes.len()].iter_mut().enumerate() {
                if *c {
                    twice.get_or_insert(at + i);
                }
                *c = true;
            }
            Ok(())
        });
        if let Some(b) = twice {
            sh.model().reads.remove(&r0);
            return Err(format!("read_with at {off:#x}: byte {b} handed over twice"));
        }
        if r.is_ok() && !covered.iter().all(|&c| c) {
            sh.model().reads.remove(&r0);
            return Err(format!("read_with at {off:#x}: bytes left out"));
        }
        r
    } else {
        sh.cache.read(q, off, &mut buf)
    };
    if let Err(e) = r {
        sh.model().reads.remove(&r0);
        return Err(format!("read of {n} sectors at {off:#x}: {e}"));
    }
    let what = if with { "read_with" } else { "read" };
    sh.model()
        .end_read(r0, first, &buf)
        .map_err(|e| format!("{what} on queue {q}: {e}"))
}

/// One thread's run: `ops` random operations on queue `t % QUEUES`.
fn worker(sh: &Shared, r: u32, t: u32, seed: u64, ops: usize) -> Result<(), String> {
    let q = t % QUEUES;
    let mut rng = Rng::new(
        seed ^ u64::from(t).wrapping_mul(0xd1b5_4a32_d192_ed03)
            ^ u64::from(r).wrapping_mul(0x8cb9_2ba7_2f3d_8dd7),
    );
    let mut buf = Vec::new();
    for i in 0..ops {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        // Unique across rounds, threads and the ops of a thread.
        let id = u64::from(r) << 48 | (u64::from(t) + 1) << 32 | i as u64;
        match rng.below(100) {
            // Writes: through `write` and `write_with`, some FUA.
            0..=54 => {
                let (first, n) = rng.span(MAX_WRITE);
                let fua = rng.chance(8);
                let off = (first * SECTOR) as u64;
                let through_with = rng.chance(3);
                if !through_with {
                    buf.resize(n * SECTOR, 0);
                    for (k, s) in buf.chunks_exact_mut(SECTOR).enumerate() {
                        stamp(id, first + k, s);
                    }
                }
                sh.model().begin_write(id, false, first, n);
                let r = if through_with {
                    sh.cache
                        .write_with(q, off, n * SECTOR, fua, &mut |at, dst| {
                            // Stamps straight into the cache space, sector by sector (a piece
                            // need not start or end on a sector, so cut the stamp to fit).
                            let at = usize::try_from(at).unwrap();
                            let mut done = 0;
                            let mut sector = [0u8; SECTOR];
                            while done < dst.len() {
                                let b = at + done;
                                let (k, within) = (b / SECTOR, b % SECTOR);
                                stamp(id, first + k, &mut sector);
                                let m = (SECTOR - within).min(dst.len() - done);
                                dst[done..done + m].copy_from_slice(&sector[within..within + m]);
                                done += m;
                            }
                            Ok(())
                        })
                } else {
                    sh.cache.write(q, off, &buf, fua)
                };
                r.map_err(|e| format!("write of {n} sectors at {off:#x}: {e}"))?;
                sh.model().end_write(id, first, n);
            }
            55..=67 => {
                let (first, n) = rng.span(MAX_READ);
                checked_read(sh, q, first, n, false)?;
            }
            68..=80 => {
                let (first, n) = rng.span(MAX_READ);
                checked_read(sh, q, first, n, true)?;
            }
            81..=85 => sh.cache.flush().map_err(|e| format!("flush: {e}"))?,
            86..=92 => {
                let discard = rng.chance(2);
                let (first, n) = rng.span(MAX_ZERO);
                let (off, len) = ((first * SECTOR) as u64, (n * SECTOR) as u64);
                sh.model().begin_write(id, true, first, n);
                let r = if discard {
                    sh.cache.discard(off, len)
                } else {
                    sh.cache.write_zeroes(off, len)
                };
                r.map_err(|e| format!("discard/zeroes of {n} sectors at {off:#x}: {e}"))?;
                sh.model().end_write(id, first, n);
            }
            // Small reads of the hottest spot: the start of region 1.
            _ => {
                let n = rng.len(64);
                let first = REGION_SECTORS - n / 2;
                checked_read(sh, q, first, n, rng.chance(2))?;
            }
        }
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads the whole device from `cache` into `out`.
fn read_all(cache: &Cache) -> Vec<u8> {
    let mut out = vec![0u8; DEV as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        cache.read(0, (i << 20) as u64, chunk).unwrap();
    }
    out
}

fn compare(what: &str, data: &[u8], want: &[Seen]) {
    let mut bad = Vec::new();
    for (s, d) in data.chunks_exact(SECTOR).enumerate() {
        let got = seen(s, d);
        if got != want[s] {
            bad.push((s, got, want[s]));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} sectors differ from the last reads, first (sector, got, want): {:?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// Totals over the rounds, for the checks that the workers and the waits did happen.
#[derive(Debug, Default)]
struct Totals {
    written: u64,
    written_back: u64,
    gc_runs: u64,
    hits: u64,
    misses: u64,
    fills: u32,
}

/// One round: a fresh cache in front of `mem` (which holds what the previous rounds left),
/// the threads, the checks, close and reopen, writeback. Returns the model.
fn round(
    r: u32,
    mem: &Arc<MemBacking>,
    model: Model,
    ops: usize,
    seed: u64,
    tot: &mut Totals,
) -> Model {
    let began = Instant::now();
    let media = Arc::new(testing::formatted(CACHE_BYTES));
    // Writes (only writeback writes to the backing device; discards are passed through)
    // can be held at the gate, so that the cache fills up and writers wait for space.
    let gated = Arc::new(TestBacking::new(Arc::clone(mem)));
    let cfg = CacheConfig {
        queues: QUEUES,
        gc_percent: Some(GC_PERCENT),
        background: true,
        ..CacheConfig::default()
    };
    let sh = Arc::new(Shared {
        cache: Cache::open(media.clone(), gated.clone(), cfg).unwrap(),
        model: Mutex::new(model),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
        max_used: AtomicU32::new(0),
        fills: AtomicU32::new(0),
    });
    let n_segs = sh.cache.status().kernel.n_segs;

    let done = Arc::new(AtomicBool::new(false));
    // The monitor: holds writeback until the cache is full (data allocation keeps one
    // segment for the log, so at n_segs - 1 used the next data segment waits for GC),
    // keeps it full for a moment, lets writeback run for a while, and again.
    let monitor = {
        let (sh, done, gated) = (Arc::clone(&sh), Arc::clone(&done), Arc::clone(&gated));
        std::thread::spawn(move || {
            let sample = || {
                let used = sh.cache.status().kernel.segs_used;
                sh.max_used.fetch_max(used, Ordering::Relaxed);
                used
            };
            let pause = |d: Duration| {
                let end = Instant::now() + d;
                while !done.load(Ordering::Relaxed) && Instant::now() < end {
                    sample();
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            while !done.load(Ordering::Relaxed) {
                gated.hold_writes(true);
                let held = Instant::now();
                while !done.load(Ordering::Relaxed)
                    && sample() < n_segs - 1
                    && held.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if sample() >= n_segs - 1 {
                    sh.fills.fetch_add(1, Ordering::Relaxed);
                    pause(Duration::from_millis(30));
                }
                gated.hold_writes(false);
                pause(Duration::from_millis(300));
            }
            gated.hold_writes(false);
        })
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let sh = Arc::clone(&sh);
            std::thread::spawn(move || {
                if let Err(e) = worker(&sh, r, t, seed, ops) {
                    sh.fail(format!("round {r}, thread {t}: {e}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    if let Some(f) = sh.failure.lock().unwrap().take() {
        panic!("{f}");
    }
    let ran = began.elapsed();

    // Nothing in flight: the whole device, checked by the same rule, is the reference.
    let want = {
        let r0 = sh.model().begin_read();
        let data = read_all(&sh.cache);
        sh.model()
            .end_read(r0, 0, &data)
            .unwrap_or_else(|e| panic!("round {r}, final read: {e}"))
    };

    let st = sh.cache.status();
    let max_used = sh.max_used.load(Ordering::Relaxed);
    let fills = sh.fills.load(Ordering::Relaxed);
    eprintln!(
        "stress round {r}: {THREADS} threads × {ops} ops in {ran:?}; written {} MiB, written \
         back {} MiB, {} GC runs, hits {} MiB, misses {} MiB, at most {max_used} of {n_segs} \
         segments used, full {fills} times",
        st.written >> 20,
        st.written_back >> 20,
        st.gc_runs,
        st.hits >> 20,
        st.misses >> 20,
    );
    assert_eq!(st.errors, 0, "{st:?}");
    assert!(st.failed.is_none(), "{st:?}");
    tot.written += st.written;
    tot.written_back += st.written_back;
    tot.gc_runs += st.gc_runs;
    tot.hits += st.hits;
    tot.misses += st.misses;
    tot.fills += fills;

    // A clean close and reopen: everything as the last reads showed.
    let sh = Arc::try_unwrap(sh).unwrap_or_else(|_| panic!("a thread still holds the cache"));
    sh.cache.close().unwrap();
    let model = sh.model.into_inner().unwrap();
    let cfg = CacheConfig {
        background: false,
        ..cfg
    };
    let cache = Cache::open(media, gated, cfg).unwrap();
    compare(
        &format!("round {r}, after reopening"),
        &read_all(&cache),
        &want,
    );

    // Written back: the backing device alone holds it.
    cache.writeback_all().unwrap();
    assert!(cache.status().is_clean(), "{:?}", cache.status());
    compare(
        &format!("round {r}, on the backing device"),
        &mem.to_vec(0, DEV as usize),
        &want,
    );
    cache.close().unwrap();
    model
}

/// [`ROUNDS`] rounds, each on a fresh cache in front of the same backing device: a fresh
/// cache misses everywhere, so its first seconds race read-miss fills against writes.
#[test]
fn stress_overlapping_queues() {
    let ops: usize = env_or("PCACHE_STRESS_OPS", DEFAULT_OPS);
    let seed: u64 = env_or("PCACHE_STRESS_SEED", SEED);
    let began = Instant::now();
    let mem = Arc::new(MemBacking::new(DEV));
    let mut model = Model::new();
    let mut tot = Totals::default();
    for r in 0..ROUNDS {
        model = round(r, &mem, model, ops, seed, &mut tot);
    }
    eprintln!("stress: {ROUNDS} rounds in {:?}: {tot:?}", began.elapsed());
    assert!(tot.written_back > 0, "writeback never ran: {tot:?}");
    assert!(tot.gc_runs > 0, "GC never ran: {tot:?}");
    assert!(tot.hits > 0 && tot.misses > 0, "{tot:?}");
    assert!(tot.fills > 0, "the cache never filled up: {tot:?}");
}
