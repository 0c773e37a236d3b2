//! GC: FIFO reclamation behind dirty_tail (upstream-format.md F.7).
//!
//! Our order differs from the kernel's in one place, on purpose: key_tail is persisted
//! *before* the generations of the segments it frees are bumped (G1 before G2 in
//! `docs/design.md`). A crash in between leaves no stale key in front of replay, so a
//! data_crc cache never fails to load (the kernel's order can, upstream-format.md G.13).

use crate::cache::Inner;
use crate::error::Result;
use crate::walk::WalkItem;
use pcache_format::layout::CachePos;

impl Inner {
    /// One GC step if it is due (segments used ≥ gc_percent). False when there is
    /// nothing to do.
    pub(crate) fn gc_once(&self) -> Result<bool> {
        let forced = self
            .ctl
            .gc_wanted
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        self.gc_step(forced)
    }

    /// One GC step regardless of gc_percent (a writer is waiting for space).
    pub(crate) fn gc_once_forced(&self) -> Result<bool> {
        self.gc_step(true)
    }

    fn gc_step(&self, force: bool) -> Result<bool> {
        let _round = self.ctl.gc_lock.lock();
        let kt = self.log.key_tail.lock().pos;
        let dt = self.log.dirty_tail.lock().pos;
        if kt == dt {
            return Ok(false);
        }
        let n = self.segs.count();
        let pct = u64::from(self.info.lock().0.gc_percent);
        if !force && u64::from(self.segs.used()) < u64::from(n) * pct / 100 {
            return Ok(false);
        }
        let mut walk = self.reader().walker(kt);
        match walk.next_item()? {
            None | Some(WalkItem::End { .. }) => Ok(false),
            Some(WalkItem::Last { next, .. }) => {
                if dt.seg == kt.seg {
                    return Ok(false);
                }
                // G1: key_tail leaves the log segment, which is then free.
                self.set_key_tail(CachePos::new(next, 0))?;
                self.segs.free_log(kt.seg);
                Ok(true)
            }
            Some(WalkItem::Kset { at, keys, size, .. }) => {
                // Replay took no reference for a stale key; neither do we drop one. The
                // data was checked when it was replayed or written.
                let mut live = Vec::with_capacity(keys.len());
                for (i, raw) in keys.iter().enumerate() {
                    if let Some(k) = self.reader().judge(raw, at, i, false)? {
                        live.push(k.pos.seg);
                    }
                }
                // G1: key_tail moves past the kset. Nothing in memory changes before it is
                // durable, so a failure here leaves the round to be retried as it was.
                self.set_key_tail(CachePos::new(kt.seg, kt.off + size))?;
                // The kset's keys no longer hold their segments.
                let dead: Vec<u32> = live.into_iter().filter(|&s| self.segs.put(s)).collect();
                // G2: each segment whose last key it was is invalidated (its generation
                // persisted) and freed. A failure here would leak the segment: it latches.
                for seg in dead {
                    if let Err(e) = self.segs.invalidate(&*self.media, seg) {
                        self.health.fail(&e);
                        return Err(e);
                    }
                }
                self.health.counters.gc_run();
                Ok(true)
            }
        }
    }
}
