//! Status: what `dmsetup status` shows for the kernel target, plus counters.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::policy::SeqCutoff;
use crate::replay::ReplayStats;
use parking_lot::Mutex;
use pcache_format::layout::CachePos;
use pcache_format::CacheMode;
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The cache's health: whether a persistence step failed (the cache then refuses
/// writes), and the counters.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set when a persistence step failed. The flag is what the I/O paths test; the
    /// message is for errors and status.
    pub failed_flag: AtomicBool,
    pub failed: Mutex<Option<String>>,
    pub counters: Counters,
}

impl Health {
    /// Latches a failure of a persistence step; later writes are refused.
    pub(crate) fn fail(&self, e: &EngineError) {
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!("cache failed: {e}");
            *f = Some(e.to_string());
        }
        self.failed_flag.store(true, Ordering::Release);
        self.counters.error();
    }

    /// Whether a persistence step failed earlier.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed_flag.load(Ordering::Acquire)
    }

    /// Refuses when a persistence step failed earlier.
    pub(crate) fn check(&self) -> Result<()> {
        if !self.has_failed() {
            return Ok(());
        }
        let why = self.failed.lock().clone().unwrap_or_default();
        Err(EngineError::Failed(why))
    }
}

/// Counters, updated with relaxed atomics (monotonic except `dirty_bytes`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    reads: AtomicU64,
    read_misses: AtomicU64,
    writes: AtomicU64,
    bypassed_reads: AtomicU64,
    bypassed_writes: AtomicU64,
    written_through: AtomicU64,
    space_waits: AtomicU64,
    direct_writes: AtomicU64,
    direct_aborts: AtomicU64,
    written: AtomicU64,
    dirty: AtomicU64,
    written_back: AtomicU64,
    gc_runs: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// A read request; `hit` when the cache served all of it. (A hit costs one atomic
    /// add; the hits are the reads that did not miss.)
    pub(crate) fn read(&self, hit: bool) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !hit {
            self.read_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// A write request.
    pub(crate) fn write_request(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    /// Bytes a sequential stream sent around the cache.
    pub(crate) fn bypassed(&self, bytes: u64, write: bool) {
        let c = if write {
            &self.bypassed_writes
        } else {
            &self.bypassed_reads
        };
        c.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Bytes a write put on the backing device itself (writethrough, writearound).
    pub(crate) fn through(&self, bytes: u64) {
        self.written_through.fetch_add(bytes, Ordering::Relaxed);
    }
    /// A write whose data the caller moved itself was logged (`committed`), or given
    /// up after it was staged.
    pub(crate) fn direct(&self, committed: bool) {
        let c = if committed {
            &self.direct_writes
        } else {
            &self.direct_aborts
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// A request waited for space.
    pub(crate) fn space_wait(&self) {
        self.space_waits.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn hit(&self, bytes: u64) {
        if bytes > 0 {
            self.hits.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    pub(crate) fn miss(&self, bytes: u64) {
        if bytes > 0 {
            self.misses.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    pub(crate) fn write(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn dirty(&self, bytes: u64) {
        self.dirty.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Dirty bytes of the log (from dirty_tail on).
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.dirty.load(Ordering::Relaxed)
    }
    /// Write requests so far.
    pub(crate) fn write_requests(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    pub(crate) fn set_dirty(&self, bytes: u64) {
        self.dirty.store(bytes, Ordering::Relaxed);
    }
    pub(crate) fn written_back(&self, written: u64, was_dirty: u64) {
        self.written_back.fetch_add(written, Ordering::Relaxed);
        let _ = self
            .dirty
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(was_dirty))
            });
    }
    pub(crate) fn gc_run(&self) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The version of every JSON document pcache prints (`"schema": 1`): `pcache-ublk status
/// --json`, `pcache-dump --json`, `pcache-fsck --json` and `pcache-replay --json`. It
/// changes when a field changes meaning or goes away, not when one is added.
pub const JSON_SCHEMA: u32 = 1;

/// Serialises a cache position the one way pcache's JSON writes positions: `"seg:off"`
/// (cache segment id, offset in its data area), as `dmsetup status` prints them.
///
/// # Errors
/// Those of the serializer.
pub fn serialize_pos<S: serde::Serializer>(
    p: &CachePos,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(p)
}

fn mode_name<S: serde::Serializer>(m: &CacheMode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// The kernel's status fields (`dmsetup status`, upstream-format.md F.9): one type for a
/// live cache ([`Status::kernel`]) and for an image as the kernel would load it
/// (`pcache_engine::report::Scan::status`). Displayed as the kernel prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelStatus {
    /// Superblock flags.
    pub sb_flags: u32,
    /// Segments on the device (superblock).
    pub seg_num: u32,
    /// Segments in the cache (the kernel sets it to `seg_num`).
    pub n_segs: u32,
    /// Segments in use, data and log.
    pub segs_used: u32,
    /// GC starts when `segs_used ≥ n_segs × gc_percent / 100`.
    pub gc_percent: u8,
    /// cache_info flags as persisted.
    pub cache_info_flags: u32,
    /// Where the next kset goes.
    #[serde(serialize_with = "serialize_pos")]
    pub key_head: CachePos,
    /// The first kset not yet written back.
    #[serde(serialize_with = "serialize_pos")]
    pub dirty_tail: CachePos,
    /// The first kset not yet reclaimed.
    #[serde(serialize_with = "serialize_pos")]
    pub key_tail: CachePos,
}

impl KernelStatus {
    /// The cache mode recorded in the cache_info flags (bits 2..5); `None` for a value
    /// pcache does not know.
    #[must_use]
    pub fn cache_mode(&self) -> Option<CacheMode> {
        // Masked to 4 bits.
        #[allow(clippy::cast_possible_truncation)]
        CacheMode::from_value(((self.cache_info_flags >> 2) & 0xF) as u8)
    }

    /// Whether everything logged has been written back.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.dirty_tail == self.key_head
    }
}

impl fmt::Display for KernelStatus {
    /// The kernel's INFO fields, `%x %u %u %u %u %x %u:%u %u:%u %u:%u`:
    /// `sb_flags seg_num n_segs segs_used gc_percent cache_info_flags key_head dirty_tail
    /// key_tail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:x} {} {} {} {} {:x} {} {} {}",
            self.sb_flags,
            self.seg_num,
            self.n_segs,
            self.segs_used,
            self.gc_percent,
            self.cache_info_flags,
            self.key_head,
            self.dirty_tail,
            self.key_tail
        )
    }
}

/// The state of an open cache: the kernel's status fields and pcache's counters. Its JSON
/// is flat: the kernel's fields, then the counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The kernel's fields.
    #[serde(flatten)]
    pub kernel: KernelStatus,
    /// Whether keys carry data CRCs.
    pub data_crc: bool,
    /// The cache mode in force.
    #[serde(serialize_with = "mode_name")]
    pub cache_mode: CacheMode,
    /// Dirty data is being written back because the mode keeps none: the mode's
    /// guarantee (the backing device holds every write) holds once it is done.
    pub draining: bool,
    /// The sequential cutoffs.
    pub seq_cutoff: SeqCutoff,
    /// Dirty data writeback lets build up while writes come, in percent of the cache
    /// (`CacheConfig::writeback_percent`; 0: writeback at once).
    pub writeback_percent: u8,
    /// Read requests.
    pub reads: u64,
    /// Read requests the cache served whole.
    pub read_hits: u64,
    /// Read requests that read the backing device.
    pub read_misses: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes of reads the sequential cutoff kept out of the cache.
    pub bypassed_reads: u64,
    /// Bytes of writes the sequential cutoff sent around the cache.
    pub bypassed_writes: u64,
    /// Bytes writes put on the backing device themselves (writethrough, writearound,
    /// passthrough, cutoff).
    pub written_through: u64,
    /// Requests that waited for cache space.
    pub space_waits: u64,
    /// Write requests whose data the frontend wrote into the cache itself (zero copy:
    /// `Cache::stage_direct`, then `commit_direct`).
    pub direct_writes: u64,
    /// Staged writes given up (a piece failed; the frontend then wrote them by copy).
    pub direct_aborts: u64,
    /// Bytes the cache holds (what the index covers).
    pub cached_bytes: u64,
    /// Of those, bytes the backing device holds too (`cached_bytes` less the dirty
    /// bytes; the dirty count includes logged bytes later overwritten, so this is a lower
    /// bound while dirty data is left).
    pub clean_bytes: u64,
    /// Bytes read from the cache.
    pub hits: u64,
    /// Bytes read from the backing device.
    pub misses: u64,
    /// Bytes written by requests.
    pub written: u64,
    /// Bytes of logged dirty keys not yet written back.
    pub dirty_bytes: u64,
    /// Bytes written back to the backing device.
    pub written_back: u64,
    /// GC steps that reclaimed a kset.
    pub gc_runs: u64,
    /// Errors (I/O, data CRC, failed persistence steps).
    pub errors: u64,
    /// Why the cache stopped accepting writes (it latched failed), if it did.
    pub failed: Option<String>,
    /// What the replay at open found.
    pub replay: ReplayStats,
}

impl Status {
    /// The kernel's `dmsetup status` INFO fields.
    #[must_use]
    pub fn dmsetup_line(&self) -> String {
        self.kernel.to_string()
    }

    /// Whether everything logged has been written back.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.kernel.is_clean()
    }
}

/// A status as pcache's JSON documents carry it (`pcache-ublk status --json`,
/// `pcache-replay --json`): the schema version, the status's fields, whether the cache is
/// clean, and the `dmsetup status` line.
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    /// [`JSON_SCHEMA`].
    pub schema: u32,
    /// The status.
    #[serde(flatten)]
    pub status: &'a Status,
    /// Everything logged is written back.
    pub clean: bool,
    /// The `dmsetup status` line.
    pub dmsetup: String,
}

impl<'a> StatusJson<'a> {
    /// The document of `status`.
    #[must_use]
    pub fn new(status: &'a Status) -> Self {
        Self {
            schema: JSON_SCHEMA,
            status,
            clean: status.is_clean(),
            dmsetup: status.dmsetup_line(),
        }
    }
}

impl Inner {
    pub(crate) fn status(&self) -> Status {
        let info = self.info.lock().0;
        let c = &self.health.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mode = self.policy.mode();
        let dirty = get(&c.dirty);
        let (reads, read_misses) = (get(&c.reads), get(&c.read_misses));
        let cached = self.index.totals().1;
        Status {
            kernel: KernelStatus {
                sb_flags: self.sb.flags,
                seg_num: self.sb.seg_num,
                n_segs: self.segs.count(),
                segs_used: self.segs.used(),
                gc_percent: info.gc_percent,
                cache_info_flags: info.flags(),
                key_head: *self.log.durable_head.lock(),
                dirty_tail: self.log.dirty_tail.lock().pos,
                key_tail: self.log.key_tail.lock().pos,
            },
            data_crc: self.data_crc,
            cache_mode: mode,
            draining: !mode.keeps_dirty() && dirty > 0,
            seq_cutoff: self.policy.cutoff(),
            writeback_percent: self
                .ctl
                .writeback_percent
                .load(std::sync::atomic::Ordering::Relaxed),
            reads,
            read_hits: reads.saturating_sub(read_misses),
            read_misses,
            writes: get(&c.writes),
            bypassed_reads: get(&c.bypassed_reads),
            bypassed_writes: get(&c.bypassed_writes),
            written_through: get(&c.written_through),
            space_waits: get(&c.space_waits),
            direct_writes: get(&c.direct_writes),
            direct_aborts: get(&c.direct_aborts),
            cached_bytes: cached,
            clean_bytes: cached.saturating_sub(dirty),
            hits: get(&c.hits),
            misses: get(&c.misses),
            written: get(&c.written),
            dirty_bytes: dirty,
            written_back: get(&c.written_back),
            gc_runs: get(&c.gc_runs),
            errors: get(&c.errors),
            failed: self.health.failed.lock().clone(),
            replay: self.replay_stats,
        }
    }
}
