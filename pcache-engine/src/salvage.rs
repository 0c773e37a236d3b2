//! Salvage: what a replay in salvage mode ([`CacheConfig::salvage`](crate::CacheConfig))
//! skipped or repaired to get the rest of a damaged cache's data out.
//!
//! A strict replay refuses the whole cache for one bad key (a data CRC mismatch, a key
//! that does not decode) or a damaged kset in the middle of the log. Salvage takes every
//! key that verifies, in log order with newest-wins as always, skips the others, goes on
//! past a damaged kset (repairing a kset damaged by one flipped bit, which gives back its
//! keys too), and reports all of it here. A skipped key never lets older data come back
//! silently: [`SalvageReport::older`] lists the logical ranges whose newest data the log
//! had and the salvage does not (what is read there is the older data: an earlier key's,
//! or the backing device's).

use pcache_format::layout::CachePos;

/// A key the salvage left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The kset holding it.
    pub kset: CachePos,
    /// Its index in the kset.
    pub index: u32,
    /// Its logical range `[off, off + len)` as recorded (untrusted if it did not decode).
    pub off: u64,
    /// Its length.
    pub len: u32,
    /// Why it was skipped.
    pub reason: String,
}

/// A kset the salvage could not read, or repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedKset {
    /// Its log position.
    pub pos: CachePos,
    /// Repaired (one flipped bit undone: its keys were replayed) or skipped.
    pub repaired: bool,
    /// What was wrong.
    pub what: String,
}

/// What a salvage replay skipped and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Keys left out.
    pub skipped_keys: Vec<SkippedKey>,
    /// Damaged ksets in the middle of the log, repaired or skipped.
    pub damaged_ksets: Vec<DamagedKset>,
    /// Logical ranges `[start, end)` whose newest data is lost: the skipped keys' ranges
    /// that no later key overwrote, merged. (The keys of a skipped kset are unknown: its
    /// ranges cannot be listed.)
    pub older: Vec<(u64, u64)>,
}

impl SalvageReport {
    /// Whether everything the log holds was salvaged (nothing skipped; a repaired kset
    /// loses nothing).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.skipped_keys.is_empty() && self.damaged_ksets.iter().all(|k| k.repaired)
    }

    /// A key was skipped: its range holds older data unless a later key covers it.
    pub(crate) fn skip_key(&mut self, key: SkippedKey) {
        let end = key.off.saturating_add(u64::from(key.len));
        if key.len > 0 {
            self.older.push((key.off, end));
        }
        self.skipped_keys.push(key);
    }

    /// A later key holds the newest data of `[off, end)`.
    pub(crate) fn covered(&mut self, off: u64, end: u64) {
        if self.older.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.older.len());
        for &(s, e) in &self.older {
            if e <= off || s >= end {
                out.push((s, e));
                continue;
            }
            if s < off {
                out.push((s, off));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.older = out;
    }

    /// Sorts and merges the ranges (at the end of the replay).
    pub(crate) fn finish(&mut self) {
        self.older.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.older.len());
        for &(s, e) in &self.older {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.older = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(off: u64, len: u32) -> SkippedKey {
        SkippedKey {
            kset: CachePos::new(0, 0),
            index: 0,
            off,
            len,
            reason: "test".into(),
        }
    }

    #[test]
    fn later_keys_cover_what_was_skipped() {
        let mut r = SalvageReport::default();
        r.skip_key(key(0, 8192));
        r.skip_key(key(100_000, 4096));
        r.covered(4096, 6144);
        r.covered(99_000, 200_000);
        r.skip_key(key(8192, 512));
        r.finish();
        assert_eq!(r.older, [(0, 4096), (6144, 8704)]);
        assert!(!r.is_complete());
        assert!(SalvageReport::default().is_complete());
    }
}
