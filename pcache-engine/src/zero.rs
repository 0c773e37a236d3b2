//! Zeroing: write zeroes and discard. Zero keys go to the cache where it holds something;
//! the rest goes to the backing device alone (`docs/design.md`, "Discard and
//! write-zeroes").

use crate::cache::Inner;
use crate::error::{EngineError, Result};
use crate::io::{copy_from, with_extents, ZEROS};
use crate::mutants::{skip, Step};
use pcache_format::layout;

impl Inner {
    /// Writes zeros over a range, through the cache, so no older data of it survives in
    /// the cache or in replay, and writeback zeroes the backing in log order. With
    /// `durable`, the zero keys are durable before this returns (a discard passed on to the
    /// backing device must never be followed, after a crash, by older cached data that
    /// GC later drops, uncovering the discarded backing).
    pub(crate) fn zero_range(&self, off: u64, len: u64, durable: bool) -> Result<()> {
        self.check_request(off, len)?;
        let mut done = 0;
        while done < len {
            // At most 1 MiB.
            #[allow(clippy::cast_possible_truncation)]
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            let at = off + done;
            // Spread over the queues by region, as the ksets are.
            #[allow(clippy::cast_possible_truncation)]
            let q = (at >> layout::SUBTREE_SHIFT) as u32;
            self.write_inner(q, at, n, durable, &mut copy_from(&ZEROS[..n]), true)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Discards (`discard`) or zeros `[off, off + len)` on the backing device, and writes
    /// zero keys where the cache holds something (durable ones for a discard). A region
    /// the index holds no extent of has no key in the log that writeback could still
    /// write over it (every dirty key's bytes are an extent's until written back), so it
    /// needs none: a discard of a whole device (mkfs) costs a backing discard, not a
    /// cache's worth of zeros. Each region's piece goes to the backing device under the
    /// region's write lock with its epoch moved on before and after, as a write-around
    /// does, so no read-miss fill that read the older bytes is cached. Write zeroes are
    /// durable after the next FLUSH; a discard is durable when it completes, as its zero
    /// keys are (WT2).
    pub(crate) fn zero_backing(&self, off: u64, len: u64, discard: bool) -> Result<()> {
        self.check_request(off, len)?;
        let end = off + len;
        let mut at = off;
        let mut sent = None;
        while at < end {
            let n = layout::bytes_to_subtree_end(at).min(end - at);
            let (tree, rel) = self
                .index
                .subtree(at)
                .ok_or_else(|| EngineError::Inconsistent(format!("{at:#x} outside the index")))?;
            // Inside one region: fits.
            #[allow(clippy::cast_possible_truncation)]
            let rel_end = rel + n as u32;
            let region = self.index.write_lock(at);
            let cached = with_extents(|exts| {
                let mut t = tree.write();
                t.epoch += 1;
                exts.clear();
                t.overlapping(rel, rel_end, exts);
                !exts.is_empty()
            });
            if discard || !cached {
                let r = if discard {
                    self.backing.discard(at, n)
                } else {
                    self.backing.write_zeroes(at, n)
                };
                // A fill that looked at the index while the backing device changed read
                // older bytes: it is dropped.
                tree.write().epoch += 1;
                r.map_err(EngineError::backing(
                    if discard { "discard" } else { "write_zeroes" },
                    at,
                    n,
                ))?;
                sent = Some(self.backing_wrote());
            }
            drop(region);
            if cached {
                self.zero_range(at, n, discard)?;
            }
            at += n;
        }
        if let (true, Some(written)) = (discard, sent) {
            // WT2: the discard is durable on the backing device when it completes.
            if !skip(Step::WT2) {
                self.flush_backing(written)?;
            }
        }
        Ok(())
    }
}
