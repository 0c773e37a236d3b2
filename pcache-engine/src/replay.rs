//! Replay at open: rebuild the index, segment references, allocation map and key_head
//! from the log between key_tail and the first invalid kset (upstream-format.md F.2, with
//! the 7.3.4 treatment of stale keys).

use crate::error::{EngineError, Result};
use crate::index::{Extent, Index};
use crate::reader::LogReader;
use crate::salvage::{DamagedKset, SalvageReport, SkippedKey};
use crate::walk::{behind, judge_end, EndEvidence, WalkError, WalkItem};
use pcache_format::kset::{read_kset, KsetRead};
use pcache_format::layout::CachePos;
use pcache_format::layout::SEG_DATA_SIZE;
use pcache_format::raw::RawKey;
use pcache_format::Key;
use std::collections::VecDeque;
use std::sync::{mpsc, Arc};

/// What a replay found, for `pcache-replay` and the status counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Normal ksets replayed.
    pub ksets: u64,
    /// LAST ksets followed.
    pub last_ksets: u64,
    /// Keys replayed (stale ones included).
    pub keys: u64,
    /// Stale keys dropped (their segment was reused).
    pub stale_keys: u64,
    /// Bytes of dirty keys between dirty_tail and key_head.
    pub dirty_bytes: u64,
    /// Extents in the rebuilt index (what the live keys cover after overlaps).
    pub extents: u64,
    /// Bytes the rebuilt index covers.
    pub cached_bytes: u64,
    /// Normal ksets from dirty_tail on (not yet written back).
    pub dirty_ksets: u64,
    /// What the end of the log is (`None` before a replay).
    #[serde(serialize_with = "end_name")]
    pub end: Option<EndEvidence>,
}

fn end_name<S: serde::Serializer>(
    e: &Option<EndEvidence>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(e.name()),
        None => s.serialize_none(),
    }
}

/// What a replay rebuilt and found.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// key_head: where the log ends.
    pub head: CachePos,
    pub stats: ReplayStats,
    /// What a salvage skipped and repaired (empty for a strict replay).
    pub report: SalvageReport,
}

/// A replay: the log it reads and the index it fills (with the segments' references,
/// generations and allocation map, through the reader's segments). It needs nothing else
/// of the cache, and runs before the cache exists.
pub(crate) struct Replay<'a> {
    pub log: LogReader<'a>,
    pub index: &'a Index,
    /// Salvage mode: go on past what a strict replay refuses, and report it.
    pub salvage: bool,
    /// Threads that check a kset's data CRCs together (1: the replaying thread alone).
    pub threads: usize,
}

/// A kset carrying less data than this has its data CRCs checked by the replaying thread
/// when it applies the kset: handing it to a helper costs more than the CRCs.
const PARALLEL_BYTES: u64 = 64 << 10;

/// The most ksets whose verdicts are on their way from the helpers at once: enough that
/// the helpers never wait for the walk, few enough to bound the keys held (each kset
/// at most [`SEG_DATA_SIZE`] of keys).
const AHEAD: usize = 32;

/// The verdicts on one kset's keys, in order ([`LogReader::judge`], data CRCs checked).
type Verdicts = Vec<Result<Option<Key>>>;

/// A kset handed to a helper: its keys, where it is, and where its verdicts go.
struct Job {
    keys: Arc<[RawKey]>,
    at: u64,
    reply: mpsc::Sender<Verdicts>,
}

/// A kset walked and not yet applied.
struct Pending {
    pos: CachePos,
    at: u64,
    keys: Arc<[RawKey]>,
    dirty: bool,
    /// Where a helper sends its verdicts; `None`: the replaying thread judges it.
    verdicts: Option<mpsc::Receiver<Verdicts>>,
}

impl Replay<'_> {
    /// Replays the log from `key_tail`; dirty keys are those from `dirty_tail` on. In
    /// salvage mode it goes on past what a strict replay refuses, and records it
    /// ([`SalvageReport`]).
    ///
    /// With data CRCs and [`Replay::threads`] above 1, helper threads (one pool for the
    /// whole replay) check the CRCs of the ksets ahead of the one being applied; each
    /// key's verdict depends only on the key, its data and the segments' generations
    /// (which replay does not change), and the verdicts are applied in log order, so the
    /// result is the same as on one thread.
    pub(crate) fn run(&self, key_tail: CachePos, dirty_tail: CachePos) -> Result<Replayed> {
        let helpers = if self.log.data_crc {
            self.threads.saturating_sub(1)
        } else {
            0
        };
        if helpers == 0 {
            return self.walk(key_tail, dirty_tail, None);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = parking_lot::Mutex::new(rx);
        let rx = &rx;
        std::thread::scope(|s| {
            let pool: Vec<_> = (0..helpers)
                .map(|_| {
                    s.spawn(move || loop {
                        // The lock is held only to take a job; it ends with the walk.
                        let Ok(job) = rx.lock().recv() else {
                            return;
                        };
                        let verdicts = job
                            .keys
                            .iter()
                            .enumerate()
                            .map(|(i, raw)| self.log.judge(raw, job.at, i, true))
                            .collect();
                        // The walk may have stopped (an error): nobody waits then.
                        let _ = job.reply.send(verdicts);
                    })
                })
                .collect();
            let replayed = self.walk(key_tail, dirty_tail, Some(&tx));
            // The helpers end once the sender is gone (on every way out of the walk).
            drop(tx);
            // Joined one by one, not only at the end of the scope: the scope waits for
            // the closures, a join for the whole thread, its thread-local destructors
            // included (which LeakSanitizer, in the fuzz targets, otherwise sees as a
            // leak when it checks before they ran). A helper never panics.
            for h in pool {
                let _ = h.join();
            }
            replayed
        })
    }

    /// The walk of [`Replay::run`]; `pool`: where ksets go to the helpers.
    fn walk(
        &self,
        key_tail: CachePos,
        dirty_tail: CachePos,
        pool: Option<&mpsc::Sender<Job>>,
    ) -> Result<Replayed> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut stats = ReplayStats::default();
        let mut report = SalvageReport::default();
        let mut dirty = key_tail == dirty_tail;
        self.log.segs.mark_used(key_tail.seg);
        // The segments the log goes through (key_tail's, then each LAST kset's link).
        let mut log_segs = vec![key_tail.seg];
        let mut start = key_tail;
        let mut resumes = 0u32;
        // The damaged ends salvage went past.
        let mut salvaged = std::collections::HashSet::new();
        let head = 'log: loop {
            let mut walk = self.log.walker(start);
            loop {
                let item = match walk.next_item() {
                    Ok(item) => item,
                    // A kset that overruns its segment or links out of range fails a
                    // strict load; a salvage weighs it as the end it would have been.
                    Err(e @ WalkError::Kset { .. }) if self.salvage => Some(WalkItem::End {
                        pos: e.pos(),
                        at: 0,
                        end: pcache_format::LogEnd::BadCrc,
                        header: &[],
                    }),
                    Err(e) => return Err(e.into()),
                };
                if !matches!(item, Some(WalkItem::Kset { .. })) {
                    // Whatever comes next (an end, a salvage, a LAST) follows every kset
                    // before it.
                    self.apply_all(&mut pending, &mut stats, &mut report)?;
                }
                match item {
                    None => break 'log walk.pos(),
                    Some(WalkItem::End { pos, .. }) => {
                        if self.salvage {
                            // Salvage goes on behind damage, but not in circles (a repaired
                            // LAST kset may lead back to damage it went past before) nor
                            // without bound: it then stops where a strict open would, and
                            // says so.
                            let max = self.log.segs.count().saturating_mul(4);
                            let stop = if !salvaged.insert(pos) {
                                Some(
                                    "the log leads back here, to damage salvage went past \
                                     before: salvage stops here"
                                        .to_owned(),
                                )
                            } else if resumes >= max {
                                Some(format!(
                                    "salvage went past {max} damaged ksets: it stops here"
                                ))
                            } else {
                                None
                            };
                            if let Some(what) = stop {
                                report.damaged_ksets.push(DamagedKset {
                                    pos,
                                    repaired: false,
                                    what,
                                });
                                stats.end = Some(self.end_evidence(pos)?);
                                break 'log pos;
                            }
                            if let Some(resume) =
                                self.salvage_end(pos, dirty, &mut stats, &mut report)?
                            {
                                resumes += 1;
                                dirty |= resume == dirty_tail;
                                start = resume;
                                continue 'log;
                            }
                        }
                        stats.end = Some(self.refuse_damaged_end(pos)?);
                        break 'log pos;
                    }
                    Some(WalkItem::Last { next, .. }) => {
                        stats.last_ksets += 1;
                        self.log.segs.mark_used(next);
                        log_segs.push(next);
                    }
                    Some(WalkItem::Kset { pos, at, keys, .. }) => {
                        let keys: Arc<[RawKey]> = keys.into();
                        let bytes: u64 = keys.iter().map(|k| u64::from(k.len.get())).sum();
                        let verdicts = match pool {
                            Some(tx) if bytes >= PARALLEL_BYTES => {
                                let (reply, verdicts) = mpsc::channel();
                                let job = Job {
                                    keys: keys.clone(),
                                    at,
                                    reply,
                                };
                                // The helpers outlive the walk: the send cannot fail.
                                tx.send(job).ok().map(|()| verdicts)
                            }
                            _ => None,
                        };
                        pending.push_back(Pending {
                            pos,
                            at,
                            keys,
                            dirty,
                            verdicts,
                        });
                        if pool.is_none() || pending.len() > AHEAD {
                            if let Some(p) = pending.pop_front() {
                                self.replay_keys(p, &mut stats, &mut report)?;
                            }
                        }
                    }
                }
                if walk.pos() == dirty_tail {
                    dirty = true;
                }
            }
        };
        report.finish();
        // A segment is the log's or data's, never both at once: a live key's data in a
        // segment the log goes through would be overwritten by the log (or was, by it),
        // and writing the cache would lose it (fsck's `seg_log_and_data`).
        if !self.salvage {
            if let Some(&seg) = log_segs.iter().find(|&&s| self.log.segs.refs(s) > 0) {
                return Err(EngineError::Inconsistent(format!(
                    "segment {seg} holds ksets of the log and the data of {} live keys: \
                     one overwrites the other",
                    self.log.segs.refs(seg)
                )));
            }
        }
        if !dirty {
            return Err(EngineError::Inconsistent(format!(
                "dirty_tail {dirty_tail} is not on the log from key_tail {key_tail} to key_head {head}"
            )));
        }
        let (extents, bytes) = self.index.totals();
        stats.extents = extents;
        stats.cached_bytes = bytes;
        Ok(Replayed {
            head,
            stats,
            report,
        })
    }

    /// Applies every kset walked and not yet applied, in order.
    fn apply_all(
        &self,
        pending: &mut VecDeque<Pending>,
        stats: &mut ReplayStats,
        report: &mut SalvageReport,
    ) -> Result<()> {
        while let Some(p) = pending.pop_front() {
            self.replay_keys(p, stats, report)?;
        }
        Ok(())
    }

    /// Replays the keys of a kset, with the verdicts on them (a helper's, or judged here).
    fn replay_keys(
        &self,
        kset: Pending,
        stats: &mut ReplayStats,
        report: &mut SalvageReport,
    ) -> Result<()> {
        let Pending {
            pos,
            at,
            keys,
            dirty,
            verdicts,
        } = kset;
        // A helper that is gone (it panicked) leaves the kset to this thread.
        let verdicts = verdicts.and_then(|rx| rx.recv().ok()).unwrap_or_else(|| {
            keys.iter()
                .enumerate()
                .map(|(i, raw)| self.log.judge(raw, at, i, true))
                .collect()
        });
        for ((i, raw), verdict) in keys.iter().enumerate().zip(verdicts) {
            stats.keys += 1;
            // A key whose segment moved on is dropped before anything else (before the
            // data CRC, which reused space would fail).
            match verdict {
                Ok(None) => stats.stale_keys += 1,
                Ok(Some(key)) => {
                    report.covered(key.off, key.end());
                    self.replay_key(&key, dirty, stats)?;
                }
                Err(e @ (EngineError::DataCrc { .. } | EngineError::Corrupt { .. }))
                    if self.salvage =>
                {
                    report.skip_key(SkippedKey {
                        kset: pos,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        off: raw.off.get(),
                        len: raw.len.get(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        stats.ksets += 1;
        if dirty {
            stats.dirty_ksets += 1;
        }
        Ok(())
    }

    /// Salvage at an end of the log at `pos`: a kset damaged by one flipped bit is
    /// repaired and replayed; one the log goes on behind is skipped. Returns where the
    /// log goes on, or `None` at its real end.
    fn salvage_end(
        &self,
        pos: CachePos,
        dirty: bool,
        stats: &mut ReplayStats,
        report: &mut SalvageReport,
    ) -> Result<Option<CachePos>> {
        let chain = self.log.segs.chain();
        let cx = self.log.key_context(false);
        let media = self.log.media;
        let ev = judge_end(media, chain, pos, &cx).map_err(EngineError::media("read kset"))?;
        let Some(resume) = ev.resume(pos) else {
            return Ok(None);
        };
        match ev {
            EndEvidence::BitFlip(f) => {
                let at = self.log.abs(pos)?;
                let room = SEG_DATA_SIZE.saturating_sub(pos.off);
                let mut bytes = vec![0; f.was.size() as usize];
                media
                    .read(at, &mut bytes)
                    .map_err(EngineError::media("read kset"))?;
                if let Some(b) = bytes.get_mut(f.byte as usize) {
                    *b ^= 1 << f.bit;
                }
                report.damaged_ksets.push(DamagedKset {
                    pos,
                    repaired: true,
                    what: format!("bit {} of byte {} flipped; repaired", f.bit, f.byte),
                });
                match read_kset(&bytes, room, self.log.segs.count(), at) {
                    Ok(KsetRead::Keys { keys, .. }) => {
                        let kset = Pending {
                            pos,
                            at,
                            keys: keys.into(),
                            dirty,
                            verdicts: None,
                        };
                        self.replay_keys(kset, stats, report)?;
                    }
                    Ok(KsetRead::Last { next }) => {
                        stats.last_ksets += 1;
                        self.log.segs.mark_used(next);
                    }
                    _ => {}
                }
            }
            _ => report.damaged_ksets.push(DamagedKset {
                pos,
                repaired: false,
                what: format!(
                    "not a valid kset, and the log goes on at {resume}: skipped (its keys are \
                     unknown)"
                ),
            }),
        }
        Ok(Some(resume))
    }

    /// What the end of the log at `pos` is ([`judge_end`]).
    fn end_evidence(&self, pos: CachePos) -> Result<EndEvidence> {
        let cx = self.log.key_context(false);
        judge_end(self.log.media, self.log.segs.chain(), pos, &cx)
            .map_err(EngineError::media("read kset"))
    }

    /// Refuses a log that ends at a damaged kset with durable ksets behind it (see
    /// [`judge_end`]): serving the cache would silently bring back older data for what
    /// they hold. A torn last write (never promised) is the normal end after a crash; a
    /// damaged last kset with nothing behind it is left to `pcache-fsck` to report (the
    /// kernel's own torn writes can look like one in rare cases, and such a cache must
    /// still open).
    fn refuse_damaged_end(&self, pos: CachePos) -> Result<EndEvidence> {
        let chain = self.log.segs.chain();
        let cx = self.log.key_context(false);
        let media = self.log.media;
        let ev = self.end_evidence(pos)?;
        let Some(resume) = ev.resume(pos) else {
            return Ok(ev);
        };
        let b = behind(media, chain, resume, &cx).map_err(EngineError::media("read kset"))?;
        if b.ksets == 0 {
            return Ok(ev);
        }
        let what = match ev {
            EndEvidence::BitFlip(f) => format!(
                "a valid kset with bit {} of byte {} flipped: damage, not a torn write",
                f.bit, f.byte
            ),
            _ => format!("a valid kset with current keys follows at {resume}"),
        };
        Err(EngineError::DamagedLog {
            pos,
            what,
            ksets: b.ksets,
            keys: b.keys,
            dirty_bytes: b.dirty_bytes,
        })
    }

    /// Inserts a live key into the index and takes its segment reference.
    fn replay_key(&self, key: &Key, dirty: bool, stats: &mut ReplayStats) -> Result<()> {
        self.log.segs.mark_used(key.pos.seg);
        self.log.segs.get(key.pos.seg);
        self.log
            .segs
            .set_key_crc(key.pos.seg, key.pos.off, key.len, key.data_crc);
        if dirty && !key.is_clean() {
            stats.dirty_bytes += u64::from(key.len);
        }
        let (tree, rel) = self.index.subtree(key.off).ok_or_else(|| {
            EngineError::Inconsistent(format!("key at {:#x} outside the device", key.off))
        })?;
        tree.write().insert(
            rel,
            Extent::new(
                key.pos.seg,
                key.pos.off,
                key.len,
                key.seg_gen,
                // Before dirty_tail, a dirty key was written back.
                key.is_clean() || !dirty,
            ),
        );
        Ok(())
    }
}
