//! Dual-copy metadata records: which slot an update goes to, and the persistence of one
//! update (store, flush, fence) — steps M1 of `docs/design.md`.

use crate::error::{EngineError, Result};
use crate::media::CacheMedia;
use crate::mutants::{skip, Step};
use pcache_format::record::{self, encode_meta, Dual, MetaRecord};
use zerocopy::IntoBytes;

/// Where the latest copy of a dual record lives, so the next update goes to the other slot
/// (upstream-format.md E.3, our recommendation: true alternation, for tails too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DualState {
    /// Slot and seq of the latest valid copy; `None` when no copy is valid.
    latest: Option<(usize, u8)>,
}

impl DualState {
    /// The state of a record whose latest copy is in `slot` with `seq`.
    pub(crate) const fn at(slot: usize, seq: u8) -> Self {
        Self {
            latest: Some((slot, seq)),
        }
    }

    /// The state found on the media.
    pub(crate) fn from_dual<T>(dual: &Dual<T>) -> Self {
        Self {
            latest: dual
                .latest_slot()
                .and_then(|i| dual.slots[i].valid().map(|v| (i, v.seq))),
        }
    }

    /// Writes `value` to the slot that does not hold the latest copy, with seq + 1, and
    /// makes it durable (step M1: store, flush, fence). `slot_off(i)` is the absolute
    /// offset of slot `i`. The state advances only once the copy is durable. `durable`
    /// is false only for a mutant of the step the record is written for
    /// ([`crate::mutants`]): the flush and fence are dropped.
    pub(crate) fn persist<R: MetaRecord>(
        &mut self,
        media: &dyn CacheMedia,
        slot_off: impl Fn(usize) -> u64,
        value: &R,
        durable: bool,
    ) -> Result<()> {
        let (slot, seq) = record::next_write(self.latest);
        let raw = encode_meta(value, seq);
        let bytes = raw.as_bytes();
        let off = slot_off(slot);
        media
            .write(off, bytes)
            .map_err(EngineError::media("write metadata record"))?;
        // M1: the record is durable before anything that relies on it is written.
        if durable && !skip(Step::M1) {
            media.flush(off, bytes.len() as u64);
            media.fence();
        }
        media
            .check()
            .map_err(EngineError::media("flush metadata record"))?;
        self.latest = Some((slot, seq));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MemMedia;
    use pcache_format::layout::{key_tail_off, CachePos};
    use pcache_format::record::{Dual, TailPos};

    fn read_dual(m: &MemMedia) -> Dual<TailPos> {
        let a = m.to_vec(key_tail_off(0), 16).unwrap();
        let b = m.to_vec(key_tail_off(1), 16).unwrap();
        Dual::decode([&a, &b], [key_tail_off(0), key_tail_off(1)])
    }

    /// Every update lands in the other slot and becomes the latest copy, across the u8
    /// wrap of seq; the previous copy stays intact as the fallback.
    #[test]
    fn alternates_and_wraps() {
        let m = MemMedia::new(1 << 20);
        let mut st = DualState::at(0, 250);
        for i in 0..20u32 {
            let pos = TailPos(CachePos::new(i, i * 8));
            st.persist(&m, key_tail_off, &pos, true).unwrap();
            let dual = read_dual(&m);
            let latest = dual.latest().unwrap();
            assert_eq!(latest.value, pos, "update {i}");
            assert_eq!(latest.seq, 250u8.wrapping_add(1 + i as u8));
            assert_eq!(dual.latest_slot(), Some(((i + 1) % 2) as usize));
            if i > 0 {
                let other = dual.slots[i as usize % 2].valid().unwrap();
                assert_eq!(other.value, TailPos(CachePos::new(i - 1, (i - 1) * 8)));
            }
            assert_eq!(DualState::from_dual(&dual), st);
        }
    }
}
