//! The cache: its shared state ([`Inner`]), the public handle ([`Cache`]) and the
//! background workers.
//!
//! Locks, all short and never global on the I/O path (each names what it guards):
//! - a data head per queue (`heads`): where the queue's next write data goes;
//! - an open kset per queue (`ksets`): keys of the 4 MiB regions routed to it;
//! - a subtree per 4 MiB region (`index`);
//! - a generation lock per segment, held by readers while they copy;
//! - the allocation map, taken once per 16 MiB segment;
//! - `key_head`, taken to close a kset (every 128 keys, on FUA/FLUSH, or after 1 s).
//!
//! Lock order: data head → kset → key_head → (allocation map); kset → subtree;
//! segment generation locks are leaves. Writeback and GC take none of the I/O locks
//! except `durable_head` and the tails.

use crate::backing::Backing;
use crate::error::{EngineError, Result};
use crate::index::Index;
use crate::load::{self, LoadOptions};
use crate::log::Log;
use crate::media::CacheMedia;
use crate::meta::DualState;
use crate::policy::{Policy, SeqCutoff};
use crate::reader::LogReader;
use crate::replay::Replay;
use crate::segments::Segments;
use crate::status::{Health, Status};
use crate::workers::Control;
use parking_lot::Mutex;
use pcache_format::layout::{KSET_HEADER_SIZE, SEG_DATA_SIZE};
use pcache_format::record::{CacheInfo, Superblock, GC_PERCENT_MAX};
use pcache_format::CacheMode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// How to open a cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// The data_crc setting the cache must have (it is refused otherwise); also what a
    /// cache formatted by this open gets.
    pub data_crc: bool,
    /// Queues that submit in parallel: one open kset and one data head each (the
    /// kernel uses one per CPU). At least 1.
    pub queues: u32,
    /// Change gc_percent (0..=90) and persist it; `None` keeps the cache's.
    pub gc_percent: Option<u8>,
    /// Run the writeback, GC and kset-flush workers in background threads. Without
    /// them, nothing is written back unless [`Cache::writeback_all`] is called, and a
    /// full cache reclaims space in the writing thread.
    pub background: bool,
    /// Open without writing anything to the cache (reads only; misses are not cached).
    pub read_only: bool,
    /// Salvage a damaged cache (with `read_only` only): skip the keys that fail their
    /// checks and go on past a damaged kset, instead of refusing the cache; what was
    /// skipped is in [`Cache::salvage_report`].
    pub salvage: bool,
    /// Change the cache mode and persist it; `None` keeps the cache's.
    pub cache_mode: Option<CacheMode>,
    /// Sequential cutoffs (not persisted; 0 = off).
    pub seq_cutoff: SeqCutoff,
    /// Threads that replay a data_crc cache at open: the replaying thread plus helpers
    /// that check the data CRCs of the ksets ahead of it. 0 (the default): one per CPU,
    /// at most [`REPLAY_THREADS_MAX`]. 1 thread took 0.79–0.88 s to open a full 16 GiB
    /// cache, 2 took 0.55 s (`cargo bench -p pcache-engine --bench replay -- --data-crc`,
    /// docs/performance.md). Without data CRCs replay is one thread.
    pub replay_threads: usize,
    /// Dirty data the writeback worker lets build up while writes keep coming, in percent
    /// of the cache's segments (bcache's `writeback_percent`, dm-writecache's
    /// watermarks): a block rewritten meanwhile is written back once, not once per write.
    /// Writeback runs anyway when a writer waits for space, when the segments in use
    /// reach gc_percent, once no write has come for half a second, and in a mode that
    /// keeps no dirty data (not persisted;
    /// 0..=[`WRITEBACK_PERCENT_MAX`]). 0, the default: at once, as the kernel does.
    pub writeback_percent: u8,
}

/// The largest [`CacheConfig::writeback_percent`]: some room is always left for the
/// writes that come while writeback catches up.
pub const WRITEBACK_PERCENT_MAX: u8 = 80;

fn check_writeback_percent(pct: u8) -> Result<()> {
    if pct > WRITEBACK_PERCENT_MAX {
        return Err(EngineError::InvalidArgument(format!(
            "writeback_percent {pct} is over {WRITEBACK_PERCENT_MAX}"
        )));
    }
    Ok(())
}

/// The most replay threads [`CacheConfig::replay_threads`] picks by itself: past a few,
/// the replaying thread (which applies every key in log order) is the bottleneck.
pub const REPLAY_THREADS_MAX: usize = 4;

impl CacheConfig {
    /// The replay threads in effect (see [`CacheConfig::replay_threads`]).
    #[must_use]
    pub fn replay_threads(&self) -> usize {
        match self.replay_threads {
            0 => {
                // Asked once: on Linux it reads the cgroup's CPU quota from files.
                static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
                let cpus = *CPUS.get_or_init(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                });
                cpus.min(REPLAY_THREADS_MAX)
            }
            n => n,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            data_crc: false,
            queues: 1,
            gc_percent: None,
            background: true,
            read_only: false,
            salvage: false,
            cache_mode: None,
            seq_cutoff: SeqCutoff::default(),
            replay_threads: 0,
            writeback_percent: 0,
        }
    }
}

/// Everything the I/O paths and the workers share: the devices and settings (fixed at
/// open), and the owners of the mutable state — the space and segments ([`Segments`]),
/// the index ([`Index`]), the log and its tails ([`Log`]), the workers' controls
/// ([`Control`]) and the cache's health ([`Health`]). Each owner guards its own state;
/// see the lock order above.
pub(crate) struct Inner {
    pub media: Arc<dyn CacheMedia>,
    pub backing: Arc<dyn Backing>,
    pub sb: Superblock,
    pub data_crc: bool,
    pub read_only: bool,
    pub background: bool,
    /// Bytes of the logical device (the backing device's size).
    pub size: u64,
    /// cache_info as last persisted, and where its copies are.
    pub info: Mutex<(CacheInfo, DualState)>,
    pub segs: Segments,
    pub index: Index,
    pub log: Log,
    pub ctl: Control,
    pub health: Health,
    /// The mode and the sequential cutoff.
    pub policy: Policy,
    /// The writes that reached the backing device themselves, and how many of them are
    /// known durable there: the next FLUSH flushes the rest (WT2).
    pub backing_writes: crate::through::BackingWrites,
    /// What the replay at open found.
    pub replay_stats: crate::replay::ReplayStats,
    /// What a salvage replay skipped and repaired.
    pub salvage_report: crate::salvage::SalvageReport,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("media", &self.media.describe())
            .field("backing", &self.backing.describe())
            .field("n_segs", &self.segs.count())
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.ctl.stop.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        if self.read_only {
            return Err(EngineError::ReadOnly);
        }
        self.health.check()
    }

    /// Checks a request: sector-aligned and inside the device.
    pub(crate) fn check_request(&self, off: u64, len: u64) -> Result<()> {
        let bad = |what| EngineError::BadRequest { what, off, len };
        if !off.is_multiple_of(512) || !len.is_multiple_of(512) {
            return Err(bad("not a multiple of 512 bytes"));
        }
        match off.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(bad("beyond the end of the device")),
        }
    }

    pub(crate) fn queue(&self, q: u32) -> usize {
        q as usize % self.log.heads.len()
    }
}

/// An open cache: a persistent-memory write-back cache in front of a backing device,
/// byte-compatible with Linux dm-pcache.
///
/// All methods take `&self` and may be called from many threads at once. Offsets and
/// lengths are in bytes and must be multiples of 512.
#[derive(Debug)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Cache {
    /// Opens the cache on `media` in front of `backing`: validates the metadata, formats
    /// the cache if the superblock has none behind it (as the kernel does), replays the
    /// log, and persists cache_info with INIT_DONE.
    ///
    /// # Errors
    /// [`EngineError::NotFormatted`] (no superblock: run `pcache-mkfs`),
    /// [`EngineError::TooSmall`], [`EngineError::TooFewSegments`] (read-write only),
    /// [`EngineError::DataCrcMismatch`],
    /// [`EngineError::Corrupt`] and friends for damaged metadata, media errors.
    pub fn open(
        media: Arc<dyn CacheMedia>,
        backing: Arc<dyn Backing>,
        cfg: CacheConfig,
    ) -> Result<Self> {
        check_writeback_percent(cfg.writeback_percent)?;
        if let Some(pct) = cfg.gc_percent {
            if pct > GC_PERCENT_MAX {
                return Err(EngineError::InvalidArgument(format!(
                    "gc_percent {pct} is over {GC_PERCENT_MAX}"
                )));
            }
        }
        let read_only = cfg.read_only || media.is_read_only();
        if cfg.salvage && !read_only {
            return Err(EngineError::InvalidArgument(
                "salvage opens a cache read-only".into(),
            ));
        }
        let loaded = load::load(
            &*media,
            LoadOptions {
                data_crc: cfg.data_crc,
                gc_percent: cfg.gc_percent,
                read_only,
            },
        )?;
        let queues = cfg.queues.max(1) as usize;
        let size = backing.size();
        let mut info = loaded.info;
        let held = CacheMode::from_value(info.cache_mode);
        if held.is_none() && cfg.cache_mode.is_none() {
            tracing::warn!(
                value = info.cache_mode,
                "cache_info holds a cache mode pcache does not know: running it as writeback"
            );
        }
        let mode = cfg.cache_mode.or(held).unwrap_or_default();
        let segs = Segments::new(loaded.chain, loaded.gens, info.data_crc);
        let index = Index::new(size);
        if loaded.formatted {
            tracing::info!("formatted a new cache of {} segments", loaded.sb.seg_num);
        }
        let replayed = Replay {
            log: LogReader {
                media: &*media,
                segs: &segs,
                backing_size: size,
                data_crc: info.data_crc,
            },
            index: &index,
            salvage: cfg.salvage,
            threads: cfg.replay_threads(),
        }
        .run(loaded.key_tail.0, loaded.dirty_tail.0)?;
        let head = replayed.head;
        if SEG_DATA_SIZE - head.off < KSET_HEADER_SIZE {
            // Neither we nor the kernel write such a log: the next kset close could not
            // even place a LAST kset in the segment.
            return Err(EngineError::Inconsistent(format!(
                "the log ends at {head}, less than a kset header before the end of its segment"
            )));
        }
        let inner = Inner {
            sb: loaded.sb,
            data_crc: info.data_crc,
            read_only,
            salvage_report: replayed.report,
            background: cfg.background && !read_only,
            size,
            segs,
            index,
            log: Log::new(
                queues,
                head,
                loaded.key_tail,
                loaded.dirty_tail,
                replayed.stats.dirty_ksets,
            ),
            info: Mutex::new((info, loaded.info_state)),
            ctl: Control::default(),
            health: Health::default(),
            policy: Policy::new(mode, queues, cfg.seq_cutoff),
            backing_writes: crate::through::BackingWrites::default(),
            replay_stats: replayed.stats,
            media,
            backing,
        };
        inner.health.counters.set_dirty(replayed.stats.dirty_bytes);
        inner
            .ctl
            .writeback_percent
            .store(cfg.writeback_percent, Ordering::Relaxed);
        if !read_only {
            // A1: the activation ends by persisting cache_info with INIT_DONE (and a new
            // gc_percent), in the slot that does not hold the latest copy.
            info.init_done = true;
            if let Some(pct) = cfg.gc_percent {
                info.gc_percent = pct;
            }
            info.cache_mode = mode.value();
            let mut guard = inner.info.lock();
            guard.0 = info;
            let (ref i, ref mut st) = *guard;
            load::persist_info(&*inner.media, st, i)?;
        }
        let inner = Arc::new(inner);
        let workers = if inner.background {
            crate::workers::spawn(&inner)
        } else {
            Vec::new()
        };
        Ok(Self {
            inner,
            workers: Mutex::new(workers),
        })
    }

    /// The latest initialised cache_info on `media`, if any: a tool's way to learn a
    /// cache's data_crc setting before opening it.
    ///
    /// # Errors
    /// No or a damaged superblock; media errors.
    pub fn peek_info(media: &dyn CacheMedia) -> Result<Option<CacheInfo>> {
        load::cache_info(media)
    }

    /// What a salvage replay ([`CacheConfig::salvage`]) skipped and repaired (empty
    /// otherwise).
    #[must_use]
    pub fn salvage_report(&self) -> crate::salvage::SalvageReport {
        self.inner.salvage_report.clone()
    }

    /// The dirty extents of the index, `(logical offset, length)` in offset order: what a
    /// writeback would write to the backing device.
    #[must_use]
    pub fn dirty_extents(&self) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for (base, tree) in self.inner.index.all() {
            for (rel, e) in tree.read().iter() {
                if !e.is_clean() {
                    out.push((base + u64::from(rel), e.len()));
                }
            }
        }
        out
    }

    /// Size of the logical device in bytes (the backing device's size).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// Reads `buf.len()` bytes at `off`: hits from the cache, misses from the backing
    /// device (and cached as clean data where space allows).
    ///
    /// # Errors
    /// A bad request, media or backing errors, a data CRC mismatch on a hit.
    pub fn read(&self, queue: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        if self.inner.ctl.stop.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        let len = buf.len();
        self.inner
            .read(queue, off, len, &mut crate::io::Dest::Buf(buf))
    }

    /// Whether every byte of `[off, off + len)` is in the cache, so that a read of it is
    /// served from the cache media alone (barring a stale extent or a data CRC error) and
    /// will not wait for the backing device. A frontend can use it to run reads that miss
    /// where waiting does not hold up other requests. False for a bad range.
    #[must_use]
    pub fn is_cached(&self, off: u64, len: u64) -> bool {
        self.inner.is_cached(off, len)
    }

    /// Reads `len` bytes at `off` like [`Cache::read`], but hands them to `sink` instead
    /// of copying them into a buffer: `sink(at, bytes)` takes the request's bytes from
    /// byte `at` of the request on. Hits are handed over straight from the cache media
    /// (a run of extents stored one after another is one piece), misses from a buffer
    /// the backing device was read into; the pieces cover `[0, len)` exactly once, in no
    /// particular order. The data is copied once, e.g. by a `pwrite` of `bytes`.
    ///
    /// `bytes` may be the cache media's own memory: `sink` must not keep it, and a
    /// poisoned line in it is only caught where the kernel copies it (see
    /// [`CacheMedia::view`](crate::media::CacheMedia::view)) or where the sink copies it
    /// with [`copy_checked`](crate::media::copy_checked). A sink that cannot read the bytes
    /// it was lent fails with `EFAULT` (as `write(2)` does): for clean data, the engine
    /// then hands the piece over again from the backing device, which holds the same
    /// bytes; for dirty data the read fails.
    ///
    /// # Errors
    /// As [`Cache::read`]; [`EngineError::ReadSink`] if `sink` fails (pieces handed over
    /// before stay handed over).
    pub fn read_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        sink: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        if self.inner.ctl.stop.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        self.inner
            .read(queue, off, len, &mut crate::io::Dest::Sink(sink))
    }

    /// Writes `data` at `off`. Returns once the data is durable in the cache; its key is
    /// durable after the next FLUSH — or before returning, with `fua`. Waits (does not
    /// fail) while the cache is full.
    ///
    /// # Errors
    /// A bad request, a read-only or failed cache, media errors.
    pub fn write(&self, queue: u32, off: u64, data: &[u8], fua: bool) -> Result<()> {
        self.write_with(queue, off, data.len(), fua, &mut crate::io::copy_from(data))
    }

    /// Writes `len` bytes at `off` like [`Cache::write`], but the bytes come from `src`,
    /// which writes them straight into the cache space: `src(at, dst)` must fill all of
    /// `dst` (whose previous content is unspecified) with the request's bytes from byte
    /// `at` of the request on. A write is cut into pieces (at 4 MiB boundaries and segment
    /// ends); `src` is called once per piece, in order, and the pieces cover `[0, len)`
    /// exactly once. The data is copied once, e.g. by a `pread` into `dst`.
    ///
    /// # Errors
    /// As [`Cache::write`]; [`EngineError::WriteSource`] if `src` fails. The piece being
    /// filled then takes no effect (its space is released, no key points at it); pieces
    /// of earlier 4 MiB regions may already be written, as with any failed write.
    pub fn write_with(
        &self,
        queue: u32,
        off: u64,
        len: usize,
        fua: bool,
        src: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.write(queue, off, len, fua, src)
    }

    /// Makes every completed write durable: closes every open kset.
    ///
    /// # Errors
    /// Media errors.
    pub fn flush(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        self.inner.check_writable()?;
        self.inner.close_all()?;
        self.inner.flush_backing_writes()
    }

    /// Discards `[off, off + len)`: later reads return zeros, and no earlier data of the
    /// range can come back, even after a crash. The discard is passed to the backing
    /// device too.
    ///
    /// # Errors
    /// As [`Cache::write`], and backing errors.
    pub fn discard(&self, off: u64, len: u64) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.check_request(off, len)?;
        // The backing discard goes first (its content is unspecified afterwards); where
        // the cache holds something, durable zero keys after it are then written back
        // over it, in log order. The discard itself is durable after the next FLUSH.
        self.inner.zero_backing(off, len, true)
    }

    /// Makes `[off, off + len)` read as zeros.
    ///
    /// # Errors
    /// As [`Cache::write`].
    pub fn write_zeroes(&self, off: u64, len: u64) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.zero_backing(off, len, false)
    }

    /// What `dmsetup status` shows for the kernel target, and the counters.
    #[must_use]
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Changes gc_percent (0..=90) and persists it in cache_info, like the kernel's
    /// `gc_percent` message.
    ///
    /// # Errors
    /// A value over 90; media errors.
    pub fn set_gc_percent(&self, pct: u8) -> Result<()> {
        if pct > GC_PERCENT_MAX {
            return Err(EngineError::InvalidArgument(format!(
                "gc_percent {pct} is over {GC_PERCENT_MAX}"
            )));
        }
        self.inner.check_writable()?;
        let mut guard = self.inner.info.lock();
        let mut info = guard.0;
        info.gc_percent = pct;
        load::persist_info(&*self.inner.media, &mut guard.1, &info)?;
        guard.0 = info;
        drop(guard);
        self.inner.ctl.kick_gc.kick();
        Ok(())
    }

    /// Switches the cache mode and persists it in cache_info. Switching to a mode that
    /// keeps no dirty data (writethrough, writearound, passthrough) drains the cache:
    /// writeback goes on as always, [`Status::draining`] says so until no dirty data is
    /// left, and writes follow the new mode at once (a write over data not yet written
    /// back is still logged, so writeback keeps log order).
    ///
    /// # Errors
    /// A read-only or failed cache; media errors.
    pub fn set_cache_mode(&self, mode: CacheMode) -> Result<()> {
        self.inner.check_writable()?;
        let mut guard = self.inner.info.lock();
        let mut info = guard.0;
        info.cache_mode = mode.value();
        load::persist_info(&*self.inner.media, &mut guard.1, &info)?;
        guard.0 = info;
        drop(guard);
        self.inner.policy.set_mode(mode);
        // Dirty data in the open ksets drains too.
        self.inner.ctl.kick_flush.kick();
        self.inner.ctl.kick_writeback.kick();
        Ok(())
    }

    /// Changes the sequential cutoffs (not persisted; 0 = off).
    pub fn set_seq_cutoff(&self, cutoff: SeqCutoff) {
        self.inner.policy.set_cutoff(cutoff);
    }

    /// Changes [`CacheConfig::writeback_percent`] (not persisted).
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`] over [`WRITEBACK_PERCENT_MAX`].
    pub fn set_writeback_percent(&self, pct: u8) -> Result<()> {
        check_writeback_percent(pct)?;
        self.inner
            .ctl
            .writeback_percent
            .store(pct, Ordering::Relaxed);
        self.inner.ctl.kick_writeback.kick();
        Ok(())
    }

    /// [`CacheConfig::writeback_percent`] now.
    #[must_use]
    pub fn writeback_percent(&self) -> u8 {
        self.inner.ctl.writeback_percent.load(Ordering::Relaxed)
    }

    /// Writes back every dirty kset now, in log order, and runs GC where it is due;
    /// returns when the log is clean up to the last closed kset.
    ///
    /// # Errors
    /// Backing errors, data CRC mismatches, media errors.
    pub fn writeback_all(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.close_all()?;
        // The writes that reached the backing device themselves are on it durably too.
        self.inner.flush_backing_writes()?;
        while self.inner.writeback_once()? {}
        while self.inner.gc_once()? {}
        Ok(())
    }

    /// Writes back everything that is dirty when called (the open ksets are closed
    /// first) while requests go on, in rounds; `progress(dirty_bytes)` is called after
    /// each. Returns once all of it is on the backing device (what later writes made dirty
    /// may remain). With background workers, they write back alongside.
    ///
    /// # Errors
    /// A read-only or failed cache; backing errors, data CRC mismatches, media errors.
    pub fn drain(&self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.close_all()?;
        // The writes that reached the backing device themselves are on it durably too.
        self.inner.flush_backing_writes()?;
        let target = self.inner.log.closed.load(Ordering::Acquire);
        while self.inner.log.written.load(Ordering::Acquire) < target {
            if !self.inner.writeback_once()? {
                // Clean up to the durable end of the log: everything closed is written.
                break;
            }
            progress(self.status().dirty_bytes);
        }
        progress(self.status().dirty_bytes);
        Ok(())
    }

    /// Writes back one round of ksets from dirty_tail (up to 32 of them, with one backing
    /// flush), or follows one LAST kset; false when the log is clean. For offline writeback with progress (`pcache-replay --writeback`);
    /// safe to interrupt between calls.
    ///
    /// # Errors
    /// Backing errors, data CRC mismatches, media errors.
    pub fn writeback_step(&self) -> Result<bool> {
        self.inner.check_writable()?;
        self.inner.writeback_once()
    }

    /// Closes the cache: stops the workers and closes every kset. Idempotent; later
    /// requests fail with [`EngineError::Closed`].
    ///
    /// # Errors
    /// Media errors while closing ksets.
    pub fn close(&self) -> Result<()> {
        let first = self.stop_workers();
        // A writeback round in flight elsewhere (a drain) ends before close returns;
        // later ones see the cache stopped.
        drop(self.inner.ctl.wb_lock.lock());
        if first && !self.inner.read_only {
            // WT2: a close makes what reached the backing device durable, as a FLUSH
            // does, so a cache closed cleanly leaves nothing in its volatile cache.
            self.inner.flush_backing_writes()?;
            self.inner.close_all()?;
        }
        Ok(())
    }

    /// Simulates a crash of the process: stops the workers and abandons every open
    /// kset, persisting nothing more. What the media holds is what a power cut would
    /// leave if every store had reached it (tests use `CrashMedia` for the rest).
    #[doc(hidden)]
    pub fn crash(self) {
        // Drop then sees the cache stopped and closes nothing.
        self.stop_workers();
    }

    /// Stops new requests and the workers, and waits for the workers to end. True for
    /// the call that stopped the cache.
    fn stop_workers(&self) -> bool {
        let first = !self.inner.ctl.stop.swap(true, Ordering::AcqRel);
        self.inner.ctl.kick_all();
        for w in self.workers.lock().drain(..) {
            let _ = w.join();
        }
        first
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!("closing the cache: {e}");
        }
    }
}
