//! Writeback: dirty data goes to the backing device in log order, from dirty_tail, a
//! round of up to [`ROUND_KSETS`] ksets at a time (upstream-format.md F.5; the kernel
//! flushes the backing device after each kset, we after each round).

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::index::Subtree;
use crate::mutants::{skip, Step};
use crate::walk::WalkItem;
use pcache_format::layout::{self, CachePos, SUBTREE_SIZE};
use std::collections::BTreeMap;

/// The most ksets one writeback round takes: they share one backing flush (W1) and one
/// dirty_tail update (W2). A small kset (a FUA write makes one of a single key) would
/// otherwise cost a device cache flush each.
const ROUND_KSETS: usize = 32;

/// A round takes no further kset once it holds this much dirty data.
const ROUND_BYTES: u64 = 16 << 20;

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
    /// Writes back the ksets from dirty_tail on, several at a time (see [`ROUND_KSETS`]),
    /// or follows a LAST kset. False when the log is clean (dirty_tail has reached the end
    /// of the durable log).
    pub(crate) fn writeback_once(&self) -> Result<bool> {
        let _round = self.ctl.wb_lock.lock();
        // A closed cache writes nothing more (a drain thread may outlive the close).
        if self.ctl.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        let dt = self.log.dirty_tail.lock().pos;
        let durable = *self.log.durable_head.lock();
        if dt == durable {
            return Ok(false);
        }
        let mut walk = self.reader().walker(dt);
        // Later keys win over earlier ones, within a kset and across the round's ksets:
        // the backing must end up with the newest data of each byte.
        let mut regions: BTreeMap<u64, Subtree> = BTreeMap::new();
        let mut dirty = 0u64;
        let mut end = dt;
        let mut ksets = 0;
        while end != durable && ksets < ROUND_KSETS && dirty < ROUND_BYTES {
            match walk.next_item()? {
                None | Some(WalkItem::End { .. }) => break,
                Some(WalkItem::Last { next, .. }) => {
                    if ksets == 0 {
                        self.set_dirty_tail(CachePos::new(next, 0))?;
                        return Ok(true);
                    }
                    // The round stops at the segment's end; the next one follows it.
                    break;
                }
                Some(WalkItem::Kset { at, keys, size, .. }) => {
                    let mut live = Vec::with_capacity(keys.len());
                    for (i, raw) in keys.iter().enumerate() {
                        live.extend(self.reader().judge(raw, at, i, true)?);
                    }
                    dirty += add_keys(&live, &mut regions);
                    end = CachePos::new(end.seg, end.off + size);
                    ksets += 1;
                }
            }
        }
        if ksets == 0 {
            return Ok(false);
        }
        // What the index still holds of the round's dirty data: a piece a later write
        // replaced goes out with that write's own key, which comes later in the log (the
        // keys of one region all go to one kset at a time, in the order of their writes),
        // so writing it now would only be undone. Where something is left out, the
        // region's later keys must be durable first (W0); if they cannot be made so
        // without waiting, the region's dirty data goes out as it is.
        let mut jobs: Vec<Job> = Vec::new();
        let mut held = Vec::new();
        for (&base, t) in &regions {
            let Some((tree, _)) = self.index.subtree(base) else {
                continue;
            };
            let first = jobs.len();
            let mut left_out = false;
            {
                let tree = tree.read();
                for (rel, e) in t.iter().filter(|(_, e)| !e.is_clean()) {
                    held.clear();
                    tree.dirty_held(rel, e, &mut held);
                    left_out |= held.iter().map(|h| h.2).sum::<u32>() < e.len();
                    jobs.extend(held.iter().map(|&(at, seg_off, len)| {
                        (base + u64::from(at), CachePos::new(e.seg, seg_off), len)
                    }));
                }
            }
            if left_out && !self.later_keys_durable(base)? {
                jobs.truncate(first);
                jobs.extend(t.iter().filter(|(_, e)| !e.is_clean()).map(|(rel, e)| {
                    (
                        base + u64::from(rel),
                        CachePos::new(e.seg, e.seg_off),
                        e.len(),
                    )
                }));
            }
        }
        let jobs = merge(jobs);
        let written: u64 = jobs.iter().map(|j| u64::from(j.2)).sum();
        if skip(Step::W2) {
            // Mutant: dirty_tail moves before the round's backing writes.
            self.set_dirty_tail(end)?;
        }
        self.write_jobs(&jobs)?;
        if !jobs.is_empty() && !skip(Step::W1) {
            // W1: the backing holds the round's data durably before dirty_tail moves past
            // its ksets (one flush for all of them).
            self.backing
                .flush()
                .map_err(EngineError::backing("flush", 0, 0))?;
        }
        // The index's extents of what was written back are clean now (before W2: until
        // dirty_tail moves, GC cannot reuse their segments). A write in a mode that keeps
        // no dirty data writes a clean range through instead of logging it.
        for (&base, t) in &regions {
            let Some((tree, _)) = self.index.subtree(base) else {
                continue;
            };
            let mut tree = tree.write();
            for (rel, e) in t.iter().filter(|(_, e)| !e.is_clean()) {
                tree.mark_clean(rel, e);
            }
        }
        // W2: dirty_tail moves past the round's ksets.
        if !skip(Step::W2) {
            self.set_dirty_tail(end)?;
        }
        self.log
            .written
            .fetch_add(ksets as u64, std::sync::atomic::Ordering::Release);
        self.health.counters.written_back(written, dirty);
        self.ctl.kick_gc.kick();
        Ok(true)
    }

    /// W0: the keys of the writes into the region at `base` are durable (before dirty_tail
    /// moves past keys they replaced). Each is in the region's kset: a closed (durable)
    /// one, or the open one, closed here (a write's commit inserts its extent and pushes
    /// its key under that kset's lock, so a key whose extent the round saw is in it).
    /// False, with nothing done, where that would wait: for the kset (its holder may be
    /// waiting for space, which this round frees), for the log's head, or for a segment.
    fn later_keys_durable(&self, base: u64) -> Result<bool> {
        if skip(Step::W0) {
            return Ok(true);
        }
        // Below the kset count, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let ki = layout::kset_index(base, self.log.ksets.len() as u32) as usize;
        let Some(mut ks) = self.log.ksets[ki].try_lock() else {
            return Ok(false);
        };
        self.try_close_kset(&mut ks)
    }

    /// Writes the jobs to the backing device, up to [`BATCH_BYTES`] at a time, each batch
    /// in one [`Backing::write_many`](crate::backing::Backing::write_many), which may keep
    /// its writes in flight together (`UringBacking`) or write a large batch from several
    /// threads (`FileBacking` on a device that blocks on direct writes).
    fn write_jobs(&self, jobs: &[Job]) -> Result<()> {
        let mut rest = jobs;
        while !rest.is_empty() {
            // At least one job per batch (a job is at most 4 MiB, see `merge`).
            let mut n = 0;
            let mut bytes = 0u64;
            while n < rest.len() && (n == 0 || bytes + padded(rest[n].2) <= BATCH_BYTES) {
                bytes += padded(rest[n].2);
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            self.write_batch(batch, bytes)?;
            rest = later;
        }
        Ok(())
    }

    /// Writes one batch straight from the media ([`CacheMedia::view_many`]: a mapped
    /// media's own bytes, with no copy of ours; the kernel's copy or DMA is the only one).
    /// A poisoned line in them fails the backing write with `EFAULT` (the kernel's copy
    /// from user memory survives the machine check; design.md, "Media errors on read"):
    /// the batch is then written again through checked copies ([`Self::write_copied`]),
    /// which names the media error, or succeeds if the line reads back after all.
    ///
    /// [`CacheMedia::view_many`]: crate::media::CacheMedia::view_many
    fn write_batch(&self, jobs: &[Job], bytes: u64) -> Result<()> {
        let mut ranges = Vec::with_capacity(jobs.len());
        for &(_, pos, len) in jobs {
            ranges.push((self.reader().abs(pos)?, len as usize));
        }
        let mut failed = None;
        let viewed = self.media.view_many(&ranges, &mut |views| {
            let writes: Vec<(u64, &[u8])> =
                jobs.iter().zip(views).map(|(j, v)| (j.0, *v)).collect();
            self.backing.write_many(&writes).map_err(|e| {
                let io = std::io::Error::new(e.source.kind(), "backing write");
                failed = Some(e);
                io
            })
        });
        match (viewed, failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) if e.source.raw_os_error() == Some(libc::EFAULT) => {
                ARENA.with_borrow_mut(|arena| self.write_copied(jobs, bytes, arena))
            }
            (Err(_), Some(e)) => Err(EngineError::Backing {
                op: "write",
                off: e.off,
                len: e.len,
                source: e.source,
            }),
            (Err(e), None) => Err(EngineError::media("read data for writeback")(e)),
        }
    }

    /// Reads `jobs` (`bytes` of buffer, each job padded to [`ALIGN`]) into `arena` with
    /// checked copies ([`CacheMedia::read`](crate::media::CacheMedia::read)) and writes
    /// them with one batch.
    fn write_copied(&self, jobs: &[Job], bytes: u64, arena: &mut Vec<u8>) -> Result<()> {
        // At most BATCH_BYTES (a batch of one job: at most 4 MiB).
        #[allow(clippy::cast_possible_truncation)]
        let need = bytes as usize + ALIGN;
        if arena.len() < need {
            arena.resize(need, 0);
        }
        // Each buffer starts ALIGN-aligned, so an aligned job can go out with O_DIRECT.
        let start = arena.as_ptr().align_offset(ALIGN).min(ALIGN);
        let mut free = &mut arena[start..];
        let mut writes: Vec<(u64, &[u8])> = Vec::with_capacity(jobs.len());
        for &(off, pos, len) in jobs {
            // padded(len) <= what is left: the arena holds `bytes`.
            #[allow(clippy::cast_possible_truncation)]
            let (buf, after) = std::mem::take(&mut free).split_at_mut(padded(len) as usize);
            free = after;
            let buf = &mut buf[..len as usize];
            self.media
                .read(self.reader().abs(pos)?, buf)
                .map_err(EngineError::media("read data for writeback"))?;
            writes.push((off, buf));
        }
        self.backing
            .write_many(&writes)
            .map_err(|e| EngineError::Backing {
                op: "write",
                off: e.off,
                len: e.len,
                source: e.source,
            })
    }
}

/// Alignment of each writeback buffer (direct I/O's, for logical blocks up to 4 KiB).
const ALIGN: usize = 4096;

/// Buffer bytes of one backing batch: a kset whose dirty data is larger goes out in
/// several batches (one after the other, all before W1).
const BATCH_BYTES: u64 = 8 << 20;

/// `len` rounded up to [`ALIGN`].
fn padded(len: u32) -> u64 {
    u64::from(len).next_multiple_of(ALIGN as u64)
}

thread_local! {
    /// The writeback buffers of this thread for [`Inner::write_copied`], reused: at most
    /// [`BATCH_BYTES`] + [`ALIGN`] bytes.
    static ARENA: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Adds a kset's live keys (judged: current, data checked) to the round's map, a later
/// key replacing what it overlaps; returns the dirty bytes among them.
fn add_keys(keys: &[pcache_format::Key], regions: &mut BTreeMap<u64, Subtree>) -> u64 {
    let mut dirty = 0u64;
    for key in keys {
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
    dirty
}
