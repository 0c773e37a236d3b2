//! Reclaim from the write path: the one way a writer that finds no space reaches
//! writeback and GC (and makes idle data heads give their segments up). With the background workers it asks them for space
//! ([`Control::want_space`](crate::workers::Control::want_space)) and waits for a segment
//! to be freed; without them it runs writeback and GC rounds in the writing thread. The
//! log and the I/O paths call only this; they never call writeback or GC themselves.

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::segments::Purpose;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Inner {
    /// Waits for space to be freed. With background workers it asks them to hurry; without,
    /// it reclaims in this thread (closing ksets first only when `close_ksets`, i.e. when
    /// the caller holds no kset lock).
    pub(crate) fn wait_for_space(&self, close_ksets: bool, purpose: Purpose) -> Result<()> {
        if self.ctl.stop.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        self.health.check()?;
        self.health.counters.space_wait();
        self.retire_idle_heads()?;
        if self.background {
            // A waiting writer gets GC regardless of gc_percent.
            self.ctl.want_space(close_ksets);
            self.segs.wait_freed(Duration::from_millis(50));
            return Ok(());
        }
        let mut progress = false;
        if close_ksets {
            self.close_all()?;
        }
        while self.writeback_once()? {
            progress = true;
        }
        while self.gc_once_forced()? {
            progress = true;
        }
        if progress || self.segs.can_alloc(purpose) {
            Ok(())
        } else {
            Err(EngineError::Full)
        }
    }

    /// Makes every data head not in use let go of its segment. A head keeps a reference
    /// on the segment it fills, so a queue that stopped writing pins a partly filled
    /// segment: with as many such queues as free segments, nothing could ever be freed
    /// and a writer on another queue would wait forever. A retired head's segment is
    /// freed by GC once its keys are gone (at once if it has none); the queue takes a new
    /// segment on its next write. Heads are only tried (never waited for): a head in use
    /// belongs to a writer that is making progress, and the caller may hold a kset lock.
    fn retire_idle_heads(&self) -> Result<()> {
        for h in &self.log.heads {
            let Some(mut head) = h.try_lock() else {
                continue;
            };
            if let Some(d) = head.take() {
                if self.segs.put(d.seg) {
                    self.segs.invalidate(&*self.media, d.seg)?;
                }
            }
        }
        Ok(())
    }
}
