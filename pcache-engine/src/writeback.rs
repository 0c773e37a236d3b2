//! Writeback: dirty data goes to the backing device in log order, one kset at a time
//! from dirty_tail (upstream-format.md F.5).

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::index::Subtree;
use pcache_format::kset::KsetRead;
use pcache_format::layout::{CachePos, SUBTREE_SIZE};
use std::collections::BTreeMap;

/// Backing writes in flight at once for one kset.
const WRITERS: usize = 4;

/// A kset with at least this much dirty data is written back by several threads.
const PARALLEL_BYTES: u64 = 8 << 20;

/// One backing write: logical offset, cache position, length.
type Job = (u64, CachePos, u32);

/// Joins jobs (in logical order) that are adjacent both on the backing device and in the
/// cache into one write.
fn merge(jobs: Vec<Job>) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::with_capacity(jobs.len());
    for j in jobs {
        if let Some(last) = out.last_mut() {
            let (off, pos, len) = *last;
            if off + u64::from(len) == j.0
                && pos.seg == j.1.seg
                && pos.off + len == j.1.off
                && len.checked_add(j.2).is_some_and(|n| n <= 4 << 20)
            {
                last.2 = len + j.2;
                continue;
            }
        }
        out.push(j);
    }
    out
}

impl Inner {
    /// Writes back the kset at dirty_tail, or follows a LAST kset. False when the log is
    /// clean (dirty_tail has reached the end of the durable log).
    pub(crate) fn writeback_once(&self) -> Result<bool> {
        let _round = self.wb_lock.lock();
        let dt = self.dirty_tail.lock().pos;
        if dt == *self.durable_head.lock() {
            return Ok(false);
        }
        let mut buf = Vec::new();
        let at = self.abs(dt)?;
        match self.load_kset(dt, &mut buf)? {
            KsetRead::End(_) => Ok(false),
            KsetRead::Last { next } => {
                self.set_dirty_tail(CachePos::new(next, 0))?;
                Ok(true)
            }
            KsetRead::Keys { keys, size } => {
                let keys = self.decode_keys(keys, at)?;
                // Later keys of the kset win over earlier ones.
                let mut regions: BTreeMap<u64, Subtree> = BTreeMap::new();
                let mut dirty = 0u64;
                for key in &keys {
                    if self.is_stale(key) {
                        continue;
                    }
                    self.verify_data(key)?;
                    if !key.is_clean() {
                        dirty += u64::from(key.len);
                    }
                    let base = key.off & !(SUBTREE_SIZE - 1);
                    // Below 4 MiB.
                    #[allow(clippy::cast_possible_truncation)]
                    let rel = (key.off - base) as u32;
                    regions.entry(base).or_default().insert(
                        rel,
                        crate::index::Extent::new(
                            key.pos.seg,
                            key.pos.off,
                            key.len,
                            key.seg_gen,
                            key.is_clean(),
                        ),
                    );
                }
                let jobs: Vec<Job> = regions
                    .iter()
                    .flat_map(|(&base, t)| {
                        t.iter()
                            .filter(|(_, e)| !e.is_clean())
                            .map(move |(rel, e)| {
                                (
                                    base + u64::from(rel),
                                    CachePos::new(e.seg, e.seg_off),
                                    e.len(),
                                )
                            })
                    })
                    .collect();
                let jobs = merge(jobs);
                let written: u64 = jobs.iter().map(|j| u64::from(j.2)).sum();
                self.write_jobs(&jobs)?;
                if !jobs.is_empty() {
                    // W1: the backing holds the kset's data durably before dirty_tail
                    // moves past it.
                    self.backing
                        .flush()
                        .map_err(EngineError::backing("flush", 0, 0))?;
                }
                // W2: dirty_tail moves past the kset.
                self.set_dirty_tail(CachePos::new(dt.seg, dt.off + size))?;
                self.counters.written_back(written, dirty);
                self.kick_gc.kick();
                Ok(true)
            }
        }
    }

    fn write_job(&self, &(off, pos, len): &Job, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(len as usize, 0);
        self.media
            .read(self.abs(pos)?, buf)
            .map_err(EngineError::media("read data for writeback"))?;
        self.backing
            .write_at(off, buf)
            .map_err(EngineError::backing("write", off, u64::from(len)))
    }

    /// Writes the jobs to the backing device: in this thread for a small kset (starting
    /// threads would cost more than it saves), several at a time for a large one.
    fn write_jobs(&self, jobs: &[Job]) -> Result<()> {
        let bytes: u64 = jobs.iter().map(|j| u64::from(j.2)).sum();
        if jobs.len() <= 2 || bytes < PARALLEL_BYTES {
            let mut buf = Vec::new();
            return jobs.iter().try_for_each(|j| self.write_job(j, &mut buf));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let workers = WRITERS.min(jobs.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let mut buf = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(j) = jobs.get(i) else { return Ok(()) };
                            self.write_job(j, &mut buf)?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(EngineError::Inconsistent(
                            "writeback worker panicked".into(),
                        ))
                    })
                })
                .collect::<Result<Vec<()>>>()
                .map(|_| ())
        })
    }
}
