//! [`LogReader`]: what reading the log needs, borrowed — the media, the segments (chain
//! and generations) and the bounds keys are checked against. Replay, writeback and GC read
//! the log through it; none of them needs the rest of the cache, and replay runs before
//! the cache exists.

use crate::error::{EngineError, Result};
use crate::media::CacheMedia;
use crate::segments::Segments;
use crate::walk::{judge_key, KeyContext, KeyOrder, KeyVerdict, LogWalker};
use pcache_format::layout::CachePos;
use pcache_format::raw::RawKey;
use pcache_format::{Key, KeyBounds};

/// A read-only view of the log (see the module documentation).
#[derive(Clone, Copy)]
pub(crate) struct LogReader<'a> {
    pub media: &'a dyn CacheMedia,
    pub segs: &'a Segments,
    /// The backing device's size: keys must lie inside it.
    pub backing_size: u64,
    /// Whether keys carry data CRCs to check.
    pub data_crc: bool,
}

impl<'a> LogReader<'a> {
    /// The bounds every key is checked against.
    pub(crate) fn key_bounds(&self) -> KeyBounds {
        KeyBounds {
            backing_size: self.backing_size,
            n_segs: self.segs.count(),
        }
    }

    /// What the engine judges keys against: its bounds and generations, pcache's order,
    /// and (on a data_crc cache, when `check_data`) the data.
    pub(crate) fn key_context(&self, check_data: bool) -> KeyContext<'a> {
        KeyContext {
            bounds: self.key_bounds(),
            gen: self.segs,
            data: (check_data && self.data_crc).then(|| (self.media, self.segs.chain())),
            order: KeyOrder::Pcache,
            kernel_decode: false,
        }
    }

    /// A walk of the log from `start` ([`LogWalker`]: the one kset loop).
    pub(crate) fn walker(&self, start: CachePos) -> LogWalker<'a> {
        LogWalker::new(self.media, self.segs.chain(), start)
    }

    /// Absolute media offset of a cache position.
    pub(crate) fn abs(&self, pos: CachePos) -> Result<u64> {
        self.segs
            .chain()
            .abs(pos)
            .ok_or_else(|| EngineError::Inconsistent(format!("position {pos} outside the cache")))
    }

    /// What the engine makes of key `index` of the kset at `at`, in pcache's order (a
    /// stale key is dropped before its data is checked, [`KeyOrder::Pcache`]): `Some` for
    /// a live key, `None` for a stale one. The data CRC is checked (on a data_crc cache)
    /// only when `check_data`.
    ///
    /// # Errors
    /// A key that fails decoding or its data CRC; a media error reading the data.
    pub(crate) fn judge(
        &self,
        raw: &RawKey,
        at: u64,
        index: usize,
        check_data: bool,
    ) -> Result<Option<Key>> {
        let cx = self.key_context(check_data);
        match judge_key(raw, at, index, &cx).map_err(EngineError::media("read key data"))? {
            KeyVerdict::Live(key) => Ok(Some(key)),
            KeyVerdict::Stale(_) => Ok(None),
            KeyVerdict::BadCrc { key, .. } => Err(EngineError::DataCrc {
                off: key.off,
                len: key.len,
                pos: key.pos,
            }),
            KeyVerdict::Invalid(source) => Err(EngineError::Corrupt {
                context: "key",
                source,
            }),
        }
    }
}
