//! The engine benchmark (issue 4, "Benchmark"): 4 KiB random write, 4 KiB random read
//! (all hits), 64 KiB sequential write and a 70/30 read/write mix, for 1 and 2 threads,
//! on a tmpfs-backed [`FileMedia`] and a [`FileBacking`], side by side with a baseline
//! that only copies the same bytes into the same kind of mapping and makes them durable
//! with the calls the engine's write path makes per request (`write`, `flush` of the
//! data range, one `fence`: step D1 of `docs/design.md`). Baseline reads copy out of the
//! mapping.
//!
//! What the engine does on top of the baseline is its own cost: the index, the kset log
//! (a kset close every 128 keys, steps K1/K2), locks, and the background writeback that
//! copies dirty data to the backing file while the benchmark runs.
//!
//! ```text
//! cargo bench -p pcache-engine --bench engine -- [--quick] [--reps N] [--secs S]
//!     [--dir DIR] [--only NAME] [--threads 1,2] [--target engine|baseline] [--markdown]
//!     [--foreground] [--sparse] [--backing file,uring] [--backing-dev PATH]
//!     [--writeback-percent P]
//! ```
//!
//! Every run gets fresh files in `--dir` (default `/dev/shm`), so each starts with an empty
//! cache. The media files (engine and baseline alike) are allocated up front, so a first
//! store to a page costs a minor fault, as on a pmem device, rather than a tmpfs page
//! allocation (`--sparse` leaves them sparse); the backing file is sparse. A run ends after
//! `--secs` or once it has written 40 % of the cache, less the pre-written working set, so
//! the cache stays below gc_percent (70) and GC never runs; writeback does. Each row is the
//! best of `--reps` runs (highest IOPS), engine and baseline runs interleaved.
//!
//! Columns: IOPS; p50/p99 latency of one request; CPU µs per request: user + system time
//! of the whole process (request threads and the engine's workers) during the run, divided
//! by the requests, which is much less sensitive than IOPS to other load on a shared
//! machine; of which "bg": the part spent outside the request threads (the engine's
//! writeback, GC and flush workers), including the writeback still due for the run's
//! requests when it ends (the engine's CPU is counted until its log is clean); "wb %":
//! the share of the run's written bytes that writeback had written to the backing when
//! the run ended (100 = it kept up; what it had not is the "still due" part above);
//! IOPS ratio engine/baseline; CPU ratio baseline/engine (1 = as cheap).
//!
//! `--foreground` runs the engine without its background workers (no writeback during the
//! run), to separate the request path from writeback. `--writeback-percent P` sets
//! `CacheConfig::writeback_percent` (default 0: writeback at once).
//!
//! `--backing file,uring` (the default: both) picks the engine's backing device for the
//! workloads that write with writeback running: a [`FileBacking`] (`pwrite` per extent) or
//! a [`UringBacking`] (each kset's writes in flight together through io_uring). Each kind
//! is its own row, run in the same repetitions (the kinds' order alternates between
//! repetitions), against the same baseline. Read-only and `--foreground` rows use the
//! first kind listed. `--backing-dev PATH` uses an existing file or block device of at
//! least the device size (1 GiB) as the backing, as is (it is neither truncated nor
//! removed), instead of a fresh sparse file in `--dir`: e.g. a loop device, to measure a
//! block device's `O_DIRECT` path. For profiling, the request is an
//! out-of-line function: `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*one_request*' <bench binary> --quick --only randread --threads 1
//! --target engine`.

use pcache_engine::backing::{Backing, FileBacking, UringBacking};
use pcache_engine::format::{fresh, layout};
use pcache_engine::media::{CacheMedia, FileMedia};
use pcache_engine::{Cache, CacheConfig};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod hist;
mod report;

use hist::Hist;
use report::{best, kiops, print_table, us, Row};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

// ---------------------------------------------------------------------------------------
// A small PRNG (splitmix64): no dependency, and cheap next to the I/O it chooses.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: uniform enough for picking blocks.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

// ---------------------------------------------------------------------------------------
// Workloads and targets.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    RandWrite4k,
    RandRead4k,
    SeqWrite64k,
    Mixed7030,
}

impl Workload {
    const ALL: [Self; 4] = [
        Self::RandWrite4k,
        Self::RandRead4k,
        Self::SeqWrite64k,
        Self::Mixed7030,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::RandWrite4k => "randwrite-4k",
            Self::RandRead4k => "randread-4k-hit",
            Self::SeqWrite64k => "seqwrite-64k",
            Self::Mixed7030 => "mixed-70r30w-4k",
        }
    }

    fn block(self) -> u64 {
        match self {
            Self::SeqWrite64k => 64 * KIB,
            _ => 4 * KIB,
        }
    }

    /// Whether the working set is written before the timed part (so reads hit).
    fn prefill(self) -> bool {
        matches!(self, Self::RandRead4k | Self::Mixed7030)
    }

    /// Percentage of requests that read.
    fn read_pct(self) -> u64 {
        match self {
            Self::RandRead4k => 100,
            Self::Mixed7030 => 70,
            _ => 0,
        }
    }

    /// Whether it writes (so writeback runs during the run).
    fn writes(self) -> bool {
        self.read_pct() < 100
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Engine,
    Baseline,
}

/// The engine's backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackingKind {
    /// [`FileBacking`]: one `pwrite` per extent.
    File,
    /// [`UringBacking`]: a kset's writes through io_uring, in flight together.
    Uring,
}

impl BackingKind {
    fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Uring => "uring",
        }
    }

    fn open(self, path: &Path) -> Arc<dyn Backing> {
        match self {
            Self::File => Arc::new(FileBacking::open(path, false).expect("backing")),
            Self::Uring => Arc::new(UringBacking::open(path, false).expect("io_uring backing")),
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    reps: u32,
    secs: f64,
    dir: PathBuf,
    only: Option<String>,
    threads: Vec<usize>,
    targets: Vec<Target>,
    markdown: bool,
    /// Run the engine without its background workers (no writeback during the run).
    foreground: bool,
    /// Leave the media files sparse (first touch of a page allocates it).
    sparse: bool,
    /// The engine's backing kinds, each its own row for the writing workloads.
    backings: Vec<BackingKind>,
    /// An existing backing file or block device, used as is.
    backing_dev: Option<PathBuf>,
    /// `CacheConfig::writeback_percent`.
    writeback_percent: u8,
    /// Cache media size.
    cache: u64,
    /// Logical device (backing file) size.
    dev: u64,
    /// Working set of the random workloads (and what is pre-written for reads).
    ws: u64,
}

impl Opts {
    fn parse() -> Self {
        let mut o = Self {
            quick: false,
            reps: 5,
            secs: 1.5,
            dir: PathBuf::from("/dev/shm"),
            only: None,
            threads: vec![1, 2],
            targets: vec![Target::Engine, Target::Baseline],
            markdown: false,
            foreground: false,
            sparse: false,
            backings: vec![BackingKind::File, BackingKind::Uring],
            backing_dev: None,
            writeback_percent: 0,
            cache: 4 * GIB,
            dev: GIB,
            ws: 256 * MIB,
        };
        let mut reps = None;
        let mut secs = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut val = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--reps" => reps = Some(val("--reps").parse().expect("--reps N")),
                "--secs" => secs = Some(val("--secs").parse().expect("--secs S")),
                "--dir" => o.dir = PathBuf::from(val("--dir")),
                "--only" => o.only = Some(val("--only")),
                "--threads" => {
                    o.threads = val("--threads")
                        .split(',')
                        .map(|t| t.parse().expect("--threads 1,2"))
                        .collect();
                }
                "--target" => {
                    o.targets = match val("--target").as_str() {
                        "engine" => vec![Target::Engine],
                        "baseline" => vec![Target::Baseline],
                        t => panic!("unknown target {t}"),
                    };
                }
                "--markdown" => o.markdown = true,
                "--foreground" => o.foreground = true,
                "--sparse" => o.sparse = true,
                "--backing-dev" => o.backing_dev = Some(PathBuf::from(val("--backing-dev"))),
                "--writeback-percent" => {
                    o.writeback_percent = val("--writeback-percent")
                        .parse()
                        .expect("--writeback-percent P");
                }
                "--backing" => {
                    o.backings = val("--backing")
                        .split(',')
                        .map(|b| match b {
                            "file" => BackingKind::File,
                            "uring" => BackingKind::Uring,
                            b => panic!("unknown backing {b} (file, uring)"),
                        })
                        .collect();
                }
                "-h" | "--help" => {
                    println!(
                        "engine [--quick] [--reps N] [--secs S] [--dir DIR] [--only NAME] \
                         [--threads 1,2] [--target engine|baseline] [--markdown] [--foreground] [--sparse] \
                         [--backing file,uring] [--backing-dev PATH] [--writeback-percent P]"
                    );
                    std::process::exit(0);
                }
                // `cargo bench` passes --bench; libtest-style filters are ignored too.
                _ => {}
            }
        }
        if o.quick {
            o.reps = 1;
            o.secs = 0.3;
            o.cache = GIB;
            o.ws = 64 * MIB;
        }
        o.reps = reps.unwrap_or(o.reps).max(1);
        o.secs = secs.unwrap_or(o.secs);
        o
    }

    /// Bytes a run may write: 40 % of the cache, less what was pre-written, so the cache
    /// stays below the default gc_percent (70) and GC never starts.
    fn write_budget(&self, w: Workload) -> u64 {
        let pre = if w.prefill() { self.ws } else { 0 };
        (self.cache * 2 / 5).saturating_sub(pre)
    }
}

/// One run's result.
#[derive(Clone)]
struct Run {
    ops: u64,
    secs: f64,
    /// CPU time of the whole process (request threads and the engine's workers) while the
    /// requests ran.
    cpu_secs: f64,
    /// CPU time of the request threads alone (the rest is the engine's workers).
    req_cpu_secs: f64,
    hist: Hist,
    /// The engine's writeback during the run: bytes written back over bytes written by
    /// the run's requests (1 = writeback kept up).
    wb: Option<f64>,
    /// The same once the log is clean: below 1 where writeback left out what later writes
    /// replaced.
    wb_total: Option<f64>,
}

impl Run {
    fn iops(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ops = self.ops as f64;
        ops / self.secs
    }

    /// CPU time per request, in µs.
    fn cpu_us(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ops = self.ops.max(1) as f64;
        self.cpu_secs * 1e6 / ops
    }

    /// CPU time per request spent outside the request threads (background workers), µs.
    fn bg_cpu_us(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ops = self.ops.max(1) as f64;
        (self.cpu_secs - self.req_cpu_secs).max(0.0) * 1e6 / ops
    }
}

/// User + system CPU time of this process so far (every thread, finished ones included).
fn process_cpu() -> f64 {
    cpu_time(libc::RUSAGE_SELF)
}

/// User + system CPU time of the calling thread so far.
fn thread_cpu() -> f64 {
    cpu_time(libc::RUSAGE_THREAD)
}

fn cpu_time(who: libc::c_int) -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` through the pointer, which points at
    // enough zeroed memory for it; `who` is RUSAGE_SELF or RUSAGE_THREAD, both valid.
    let rc = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (it was zeroed anyway,
    // and all-zero is a valid `rusage`).
    let ru = unsafe { ru.assume_init() };
    #[allow(clippy::cast_precision_loss)]
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------
// Files.

/// Temporary files removed on drop.
struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A media file: allocated up front unless `--sparse`, so a first store to a page costs
/// a minor fault that maps it (as on a real pmem/DAX device), not a tmpfs page allocation.
fn media_file(o: &Opts, path: &Path) -> File {
    let f = sparse_file(path, o.cache);
    if !o.sparse {
        let len = libc::off_t::try_from(o.cache).expect("cache size");
        // SAFETY: posix_fallocate only allocates blocks of our own open file.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
        assert_eq!(rc, 0, "posix_fallocate {}: error {rc}", path.display());
    }
    f
}

fn sparse_file(path: &Path, len: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("size {}: {e}", path.display()));
    f
}

fn temp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("pcache-bench-{}-{what}", std::process::id()))
}

// ---------------------------------------------------------------------------------------
// The timed loop.

/// Per-thread state handed to a request.
struct Ctx {
    /// Thread (and queue) number.
    t: usize,
    rng: Rng,
    /// Bytes this thread has streamed (sequential writes).
    seq: u64,
    /// The baseline's append position in this thread's region.
    head: u64,
}

/// One request, out of line so a profiler can isolate it
/// (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*one_request*'`).
#[inline(never)]
fn one_request<F: Fn(&mut Ctx, &mut [u8]) -> u64>(op: &F, ctx: &mut Ctx, buf: &mut [u8]) -> u64 {
    op(ctx, buf)
}

/// Runs `threads` workers calling `op(ctx, buf) -> bytes written` until `secs` pass or
/// `budget` bytes were written (split evenly among the threads).
fn timed<F>(threads: usize, secs: f64, budget: u64, block: u64, op: F) -> Run
where
    F: Fn(&mut Ctx, &mut [u8]) -> u64 + Sync,
{
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let per_thread = budget / threads as u64;
    let (start, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier, op) = (&stop, &barrier, &op);
                s.spawn(move || {
                    let mut ctx = Ctx {
                        t,
                        rng: Rng(0x5eed_0000 + t as u64),
                        seq: 0,
                        head: 0,
                    };
                    let mut buf = vec![0u8; usize::try_from(block).expect("block")];
                    for (i, b) in buf.iter_mut().enumerate() {
                        // Any pattern will do; truncation intended.
                        #[allow(clippy::cast_possible_truncation)]
                        let v = (i as u8).wrapping_mul(151).wrapping_add(t as u8);
                        *b = v;
                    }
                    let mut hist = Hist::new();
                    let mut ops = 0u64;
                    let mut written = 0u64;
                    barrier.wait();
                    let cpu0 = thread_cpu();
                    while written < per_thread
                        && !(ops.is_multiple_of(32) && stop.load(Ordering::Relaxed))
                    {
                        let a = Instant::now();
                        written += one_request(op, &mut ctx, &mut buf);
                        let b = Instant::now();
                        hist.record(u64::try_from((b - a).as_nanos()).unwrap_or(u64::MAX));
                        ops += 1;
                    }
                    (ops, hist, Instant::now(), thread_cpu() - cpu0)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let cpu0 = process_cpu();
        let deadline = start + Duration::from_secs_f64(secs);
        while Instant::now() < deadline
            && !handles
                .iter()
                .all(std::thread::ScopedJoinHandle::is_finished)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        let res: Vec<(u64, Hist, Instant, f64)> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect();
        (start, (res, process_cpu() - cpu0))
    });
    let (results, cpu_secs) = results;
    let mut hist = Hist::new();
    let mut ops = 0;
    let mut end = start;
    let mut req_cpu_secs = 0.0;
    for (o, h, e, c) in &results {
        ops += o;
        hist.merge(h);
        end = end.max(*e);
        req_cpu_secs += c;
    }
    Run {
        ops,
        secs: (end - start).as_secs_f64().max(1e-9),
        cpu_secs,
        req_cpu_secs,
        hist,
        wb: None,
        wb_total: None,
    }
}

/// Logical offset of the next request of thread `t` (of `threads`).
fn pick_offset(o: &Opts, w: Workload, threads: usize, ctx: &mut Ctx) -> u64 {
    let block = w.block();
    match w {
        Workload::SeqWrite64k => {
            // Each thread streams through its own slice of the device.
            let slice = o.dev / threads as u64 / block * block;
            let off = ctx.t as u64 * slice + ctx.seq % slice;
            ctx.seq += block;
            off
        }
        _ => ctx.rng.below(o.ws / block) * block,
    }
}

// ---------------------------------------------------------------------------------------
// Engine runs.

fn run_engine(o: &Opts, w: Workload, threads: usize, kind: BackingKind) -> (Run, String) {
    let media_path = temp_path(&o.dir, "media");
    let (backing_path, _files) = match &o.backing_dev {
        Some(dev) => (dev.clone(), Files(vec![media_path.clone()])),
        None => {
            let p = temp_path(&o.dir, "backing");
            (p.clone(), Files(vec![media_path.clone(), p]))
        }
    };
    {
        let f = media_file(o, &media_path);
        let seg_num = layout::seg_num_for_device(o.cache).expect("cache size");
        f.write_all_at(&fresh::superblock(seg_num), layout::SB_OFF)
            .expect("write superblock");
    }
    if o.backing_dev.is_none() {
        drop(sparse_file(&backing_path, o.dev));
    }
    let media: Arc<dyn CacheMedia> = Arc::new(FileMedia::open(&media_path, false).expect("media"));
    let backing = kind.open(&backing_path);
    assert!(
        backing.size() >= o.dev,
        "the backing device has {} bytes, fewer than {}",
        backing.size(),
        o.dev
    );
    let desc = format!(
        "media: {}; backing: {}",
        media.describe(),
        backing.describe()
    );
    let cache = Cache::open(
        media,
        backing,
        CacheConfig {
            data_crc: false,
            queues: u32::try_from(threads).expect("threads"),
            gc_percent: None,
            background: !o.foreground,
            read_only: false,
            writeback_percent: o.writeback_percent,
            ..CacheConfig::default()
        },
    )
    .expect("open cache");
    if w.prefill() {
        let data = vec![0xa5u8; 4 * KIB as usize];
        let mut off = 0;
        while off < o.ws {
            cache.write(0, off, &data, false).expect("prefill");
            off += data.len() as u64;
        }
        cache.flush().expect("flush");
        // Let writeback catch up, so the timed part does not compete with it.
        if o.foreground {
            cache.writeback_all().expect("writeback");
        }
        let t = Instant::now();
        while !cache.status().is_clean() && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let st0 = cache.status();
    let run = timed(threads, o.secs, o.write_budget(w), w.block(), |ctx, buf| {
        let q = u32::try_from(ctx.t).expect("queue");
        let off = pick_offset(o, w, threads, ctx);
        if w.read_pct() > 0 && ctx.rng.below(100) < w.read_pct() {
            cache.read(q, off, buf).expect("read");
            0
        } else {
            cache.write(q, off, buf, false).expect("write");
            buf.len() as u64
        }
    });
    let mut run = run;
    let st1 = cache.status();
    if st1.written > st0.written {
        #[allow(clippy::cast_precision_loss)]
        let frac =
            (st1.written_back - st0.written_back) as f64 / (st1.written - st0.written) as f64;
        run.wb = Some(frac.min(1.0));
    }
    // Writeback may lag behind the requests: what it still has to do for them is part of
    // their cost, so the CPU time until the log is clean is added (to the workers' share).
    if !o.foreground {
        let cpu0 = process_cpu();
        cache.flush().expect("flush");
        let t = Instant::now();
        while !cache.status().is_clean() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(2));
        }
        run.cpu_secs += process_cpu() - cpu0;
    }
    let st = cache.status();
    if st.written > st0.written {
        #[allow(clippy::cast_precision_loss)]
        let frac = (st.written_back - st0.written_back) as f64 / (st.written - st0.written) as f64;
        run.wb_total = Some(frac);
    }
    if w.read_pct() == 100 && st.misses > 0 {
        eprintln!("warning: {} bytes of {} missed", st.misses, w.name());
    }
    cache.close().expect("close");
    (run, desc)
}

// ---------------------------------------------------------------------------------------
// Baseline runs: the same bytes into the same kind of mapping, durable with the same
// per-request calls as the engine's write path (write, flush of the range, fence: D1).

fn run_baseline(o: &Opts, w: Workload, threads: usize) -> (Run, String) {
    let media_path = temp_path(&o.dir, "baseline");
    let _files = Files(vec![media_path.clone()]);
    drop(media_file(o, &media_path));
    let media: Arc<dyn CacheMedia> = Arc::new(FileMedia::open(&media_path, false).expect("media"));
    let desc = media.describe();
    // Reads come from the working set at the start of the mapping; writes go, like the
    // engine's data heads, to fresh space after it, each thread appending to its own
    // region.
    let log_start = o.ws;
    let region = (o.cache - log_start) / threads as u64 / MIB * MIB;
    if w.prefill() {
        let data = vec![0xa5u8; MIB as usize];
        let mut off = 0;
        while off < o.ws {
            media.write(off, &data).expect("prefill");
            off += data.len() as u64;
        }
        media.flush(0, o.ws);
        media.fence();
    }
    let run = timed(threads, o.secs, o.write_budget(w), w.block(), |ctx, buf| {
        let len = buf.len() as u64;
        // The same choice of request as the engine run (same PRNG draws).
        let off = pick_offset(o, w, threads, ctx);
        if w.read_pct() > 0 && ctx.rng.below(100) < w.read_pct() {
            media.read(off, buf).expect("read");
            0
        } else {
            if ctx.head + len > region {
                ctx.head = 0;
            }
            let at = log_start + ctx.t as u64 * region + ctx.head;
            ctx.head += len;
            media.write(at, buf).expect("write");
            media.flush(at, len);
            media.fence();
            len
        }
    });
    (run, desc)
}

fn main() {
    let o = Opts::parse();
    let started = Instant::now();
    println!(
        "pcache engine benchmark{}: {} run(s) of up to {:.1} s each, best kept; cache {} MiB, \
         device {} MiB, random working set {} MiB; dir {}",
        if o.quick { " (quick)" } else { "" },
        o.reps,
        o.secs,
        o.cache / MIB,
        o.dev / MIB,
        o.ws / MIB,
        o.dir.display()
    );
    let mut rows = Vec::new();
    let mut engine_descs: Vec<(BackingKind, String)> = Vec::new();
    let mut baseline_desc = None;
    for w in Workload::ALL {
        if o.only.as_deref().is_some_and(|n| !w.name().contains(n)) {
            continue;
        }
        // The backing matters where writeback runs during the run.
        let kinds = if w.writes() && !o.foreground {
            o.backings.clone()
        } else {
            o.backings[..1].to_vec()
        };
        for &threads in &o.threads {
            let mut engines: Vec<Option<Run>> = vec![None; kinds.len()];
            let mut baseline = None;
            for rep in 0..o.reps {
                for &target in &o.targets {
                    let runs: Vec<(Option<usize>, Run, String)> = match target {
                        Target::Engine => {
                            // Alternate the kinds' order, so neither always runs first.
                            let mut order: Vec<usize> = (0..kinds.len()).collect();
                            if rep % 2 == 1 {
                                order.reverse();
                            }
                            order
                                .into_iter()
                                .map(|k| {
                                    let (run, desc) = run_engine(&o, w, threads, kinds[k]);
                                    (Some(k), run, desc)
                                })
                                .collect()
                        }
                        Target::Baseline => {
                            let (run, desc) = run_baseline(&o, w, threads);
                            vec![(None, run, desc)]
                        }
                    };
                    for (k, run, desc) in runs {
                        eprintln!(
                            "  {:<16} thr {threads} rep {rep} {:<14}: {:>9} IOPS, p50 {} µs, p99 {} µs, \
                             CPU {:.2} µs/op (workers {:.2}){}{} ({} ops in {:.2} s)",
                            w.name(),
                            k.map_or_else(|| "baseline".to_string(), |k| format!("engine/{}", kinds[k].name())),
                            kiops(&run),
                            us(run.hist.quantile(0.5)),
                            us(run.hist.quantile(0.99)),
                            run.cpu_us(),
                            run.bg_cpu_us(),
                            run.wb.map_or_else(String::new, |f| format!(", written back {:.0} %", f * 100.0)),
                            run.wb_total.map_or_else(String::new, |f| format!(" ({:.0} % once clean)", f * 100.0)),
                            run.ops,
                            run.secs
                        );
                        match k {
                            Some(k) => {
                                if !engine_descs.iter().any(|(b, _)| *b == kinds[k]) {
                                    engine_descs.push((kinds[k], desc));
                                }
                                engines[k] = best(engines[k].take(), run);
                            }
                            None => {
                                baseline_desc.get_or_insert(desc);
                                baseline = best(baseline.take(), run);
                            }
                        }
                    }
                }
            }
            for (k, engine) in engines.into_iter().enumerate() {
                rows.push(Row {
                    w,
                    threads,
                    backing: kinds[k].name(),
                    engine,
                    baseline: baseline.clone(),
                });
            }
        }
    }
    for (kind, d) in &engine_descs {
        println!("engine ({}) {d}", kind.name());
    }
    if let Some(d) = baseline_desc {
        println!("baseline media: {d}");
    }
    print!("{}", print_table(&rows, o.markdown));
    println!("({:.1} s)", started.elapsed().as_secs_f64());
}
