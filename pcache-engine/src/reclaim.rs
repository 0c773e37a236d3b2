//! Reclaim from the write path: the one way a writer that finds no space reaches
//! writeback and GC. With the background workers it asks them for space
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
}
