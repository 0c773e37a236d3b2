//! The proof by simulated power cuts (issue 5; docs/design.md, "The power-cut proof"):
//! random workloads of writes, overwrites, FUA writes, reads (whose misses are cached),
//! flushes, discards, writeback and GC run on a `CrashMedia`, which records every store,
//! flush and fence, and a recording `TestBacking`, whose write completions and flushes are
//! events on the same timeline. Each operation runs on a thread of its own, and a fence
//! only makes durable what its own thread flushed, so a persistence step that relies on
//! some other call's fence is caught. The backing device starts with data of its own, so
//! cached misses carry data that no write produced, and it is a disk with a volatile write
//! cache: what was not flushed may be lost, sector by sector. Then, for every event of the
//! run, the image a power cut right there could leave is reopened and checked: the media
//! with nothing pending and the backing device with nothing unflushed kept, then a random
//! torn subset of the pending 8-byte words with a random choice of the unflushed sectors.
//!
//! Where only a few 8-byte words are pending at a crash point (a tail or generation
//! record, a terminator), every subset of them is checked too.
//!
//! 1. opening never fails;
//! 2. every write acknowledged before the last completed FLUSH, and every completed FUA
//!    write or discard, reads back its data or newer data;
//! 3. no sector returns data that was never written to it;
//! 4. at every backing flush, each backing sector holds data written to it, and never
//!    older data than at an earlier flush (writeback goes in log order);
//! 5. in the modes that keep no dirty data (writethrough, writearound, passthrough), the
//!    backing device alone holds every write of 2.: losing the cache loses nothing;
//! 6. every sector the recovered cache holds no dirty data of reads the same from the
//!    backing device alone (a clean key never claims bytes the backing device may not
//!    hold), but for those of a write or discard in flight at the cut.
//!
//! The workloads cycle through the five cache modes (and every seventh runs with a small
//! sequential cutoff, which sends streams around the cache); each runs on a device that
//! held an earlier cache, and some start the log near the end of its segment or free and
//! reuse a data segment (see [`workload`] and [`run`]).
//!
//! `PCACHE_CRASH_POINTS` sets how many crash points to cover (default 1 000; CI runs
//! 10 000 in release mode, `cargo xtask crash --points N` more; `cargo xtask crash
//! --mutants` runs it once per dropped persistence step).

use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::format::fresh;
use pcache_engine::format::layout::{self, CachePos};
use pcache_engine::format::record::{encode_meta, TailPos};
use pcache_engine::media::CacheMedia;
use pcache_engine::testing::{
    write_superblock, BackingImage, BackingReplayer, CrashMedia, SplitMix, Survivors, TestBacking,
};
use pcache_engine::{Cache, CacheConfig, CacheMode, SeqCutoff};
use std::sync::{Arc, Mutex};
use zerocopy::IntoBytes;

const SECTOR: usize = 512;
const DEV: u64 = 8 << 20;
const SECTORS: usize = (DEV / 512) as usize;
const CACHE: u64 = 512 << 20;
/// Crash points with at most this many pending 8-byte words are checked for every
/// subset of them.
const MAX_SUBSET_WORDS: usize = 6;

/// Property 4, checked at every backing flush: each backing sector holds data written to
/// it, never older than at an earlier flush. `seen` holds, per sector, the newest non-zero
/// tag seen at a backing flush.
fn check_flushed_state(live: &MemBacking, hist: &Mutex<History>, seen: &Mutex<Vec<u64>>) {
    let hist = hist.lock().unwrap();
    let mut seen = seen.lock().unwrap();
    let all = live.to_vec(0, DEV as usize);
    for (s, data) in all.chunks(SECTOR).enumerate() {
        let tag = tag_of(s, data)
            .unwrap_or_else(|| panic!("backing sector {s} holds data never written to it"));
        if tag == 0 {
            continue; // zeros: the initial content, or a discard passed through
        }
        assert!(
            hist[s].iter().any(|&(_, t)| t == tag),
            "backing sector {s} holds tag {tag}, never written there"
        );
        // Tags grow in op order, so "not older" is "not smaller".
        assert!(
            tag >= seen[s],
            "backing sector {s} went back from tag {} to {tag}",
            seen[s]
        );
        seen[s] = tag;
    }
}

/// The tag of sector `s` in the backing device's initial content: below every tag a
/// write of the workload stamps.
fn initial_tag(s: usize) -> u64 {
    s as u64 + 1
}

/// A backing device holding the initial content.
fn prefilled() -> MemBacking {
    let b = MemBacking::new(DEV);
    let mut buf = vec![0u8; DEV as usize];
    for (s, sector) in buf.chunks_mut(SECTOR).enumerate() {
        stamp(initial_tag(s), s, sector);
    }
    b.write_at(0, &buf).unwrap();
    b
}

fn stamp(tag: u64, sector: usize, out: &mut [u8]) {
    out[..8].copy_from_slice(&tag.to_le_bytes());
    out[8..16].copy_from_slice(&(sector as u64).to_le_bytes());
    out[16..].fill(tag as u8 ^ 0x5a);
}

fn tag_of(sector: usize, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut want = [0u8; SECTOR];
    stamp(tag, sector, &mut want);
    (want[..] == data[..]).then_some(tag)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A write (tags start at `tag`), durable on completion when FUA.
    Write { fua: bool },
    /// A discard: zeros, durable on completion.
    Discard,
    /// FLUSH (or writeback_all, which flushes first).
    Flush,
    /// A read: checked against the history at once; its misses are cached as CLEAN keys,
    /// whose data must be durable before they are (D1 of a fill).
    Read,
    /// The cache is closed and opened again.
    Reopen,
}

#[derive(Debug)]
struct OpRec {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Per sector: (op index, tag) in op order.
type History = Vec<Vec<(usize, u64)>>;

/// The cache mode of the workload of `seed`: each mode in turn.
fn mode_of(seed: u64) -> CacheMode {
    CacheMode::ALL[usize::try_from(seed % 5).unwrap()]
}

/// Tags of the earlier cache on the device: above every tag a workload stamps, so a
/// sector that returns one returns data never written to this cache.
const EARLIER: u64 = 1 << 40;

/// Where the log starts in the workloads that start it near the end of its segment.
const NEAR_END: u32 = layout::SEG_DATA_SIZE - 2048;

/// A workload run: the crash-recording media, the backing device, the operations, the
/// history, and the events of the first open (the format).
struct Run {
    media: Arc<CrashMedia>,
    backing: Arc<TestBacking>,
    ops: Vec<OpRec>,
    hist: History,
    format: (usize, usize),
}

/// The workload of `seed` on a used device: the same workload ran on it first as an
/// earlier cache (tags of its own, a backing device of its own), so its ksets and data lie
/// where this run's will; then mkfs (cache_info invalid, a superblock), and this run,
/// whose first open formats. A terminator this run does not make durable lets replay read
/// the earlier cache's kset behind it.
fn workload(seed: u64) -> Run {
    let media = Arc::new(CrashMedia::new(CACHE));
    write_superblock(&*media);
    media.flush(layout::SB_OFF, 24);
    media.fence();
    drop(run(&media, seed, EARLIER, false));
    let (off, len) = fresh::INVALIDATE_RANGE;
    media.write(off, &vec![0; len as usize]).unwrap();
    write_superblock(&*media);
    media.flush(off, len);
    media.flush(layout::SB_OFF, 24);
    media.fence();
    run(&media, seed, SECTORS as u64 + 1, true)
}

/// Moves both tails of a cache that was just formatted (and closed) to `NEAR_END` in the
/// first log segment, over a terminator: the state of a cache whose log was written back
/// and collected up to there.
fn start_near_end(media: &CrashMedia) {
    let at = layout::data_area_off(0) + u64::from(NEAR_END);
    media.write(at, &[0; 24]).unwrap();
    media.flush(at, 24);
    let pos = TailPos(CachePos::new(0, NEAR_END));
    // Format left both tails in slot 0 with seq 1.
    let raw = encode_meta(&pos, 2);
    for off in [layout::key_tail_off(1), layout::dirty_tail_off(1)] {
        media.write(off, raw.as_bytes()).unwrap();
        media.flush(off, raw.as_bytes().len() as u64);
    }
    media.fence();
}

/// A run of random operations on `media` from its first open (which formats it), with
/// tags from `tag`: the backing device (recording its events on the media's timeline when
/// `record`, and checking property 4 at every flush), the operations and the history.
///
/// Odd seeds start the log near the end of its segment (so the log chains a segment: L1,
/// L2; and GC frees one: G1 past a LAST kset). Seeds 2 mod 3 fill a data segment with
/// 4 MiB writes, write everything back (GC frees the segment: G2, G3) and reopen the
/// cache, whose allocator starts again from the first segment and reuses it.
fn run(media: &Arc<CrashMedia>, seed: u64, mut tag: u64, record: bool) -> Run {
    // The backing starts with data of its own (op 0, below), so that a read miss caches
    // data no cache write produced: a fill whose data was not durable would read back
    // wrong.
    let hist = Arc::new(Mutex::new(
        (0..SECTORS).map(|s| vec![(0, initial_tag(s))]).collect(),
    ));
    let backing = {
        let hist = hist.clone();
        let seen = Mutex::new(vec![0; SECTORS]);
        let b = TestBacking::new(prefilled());
        let b = if record {
            b.recording(media.clone())
        } else {
            b
        };
        Arc::new(b.on_flush(move |live| check_flushed_state(live, &hist, &seen)))
    };
    let cutoff = if seed.is_multiple_of(7) { 16 << 10 } else { 0 };
    let cfg = CacheConfig {
        queues: 2,
        background: false,
        gc_percent: Some(0),
        data_crc: seed.is_multiple_of(3),
        cache_mode: Some(mode_of(seed)),
        seq_cutoff: SeqCutoff {
            read: cutoff,
            write: cutoff,
        },
        ..CacheConfig::default()
    };
    let mut rng = SplitMix(seed);
    // Op 0: the backing's initial content, there (and durable) from the start.
    let mut ops = vec![OpRec {
        kind: Kind::Write { fua: true },
        start: 0,
        end: 0,
    }];
    let open = || Cache::open(media.clone(), backing.clone(), cfg).unwrap();
    let format_start = media.events();
    let mut cache = open();
    let format = (format_start, media.events());
    if seed % 2 == 1 {
        cache.close().unwrap();
        drop(cache);
        start_near_end(media);
        cache = open();
    }
    let big = seed % 3 == 2;
    let mut n = 0usize;
    while n < 70 {
        let i = ops.len();
        let start = media.events();
        // A data segment filled, written back and freed, then a reopen.
        let phase = if big {
            n.checked_sub(30).filter(|p| *p < 7)
        } else {
            None
        };
        if phase == Some(6) {
            cache.close().unwrap();
            drop(cache);
            cache = open();
            ops.push(OpRec {
                kind: Kind::Reopen,
                start,
                end: media.events(),
            });
            n += 1;
            continue;
        }
        // Each op runs on a thread of its own: a fence only covers the flushes of its own
        // thread (CrashMedia), so a persistence step that leans on a fence some other
        // call issued (a missing D1, say) shows up as lost data.
        let kind = std::thread::scope(|s| {
            s.spawn(|| {
                let r = match phase {
                    Some(5) => 99,
                    Some(_) => 200,
                    None => rng.below(100),
                };
                if r < 70 || r == 200 {
                    let (sector, len, fua, q) = if r == 200 {
                        // 4 MiB, a whole region, into queue 0.
                        let region = (n % 2) * SECTORS / 2;
                        (region, SECTORS / 2, false, 0)
                    } else {
                        let base = [0usize, SECTORS / 2 - 64, SECTORS - 256][rng.below(3) as usize];
                        let sector = base + rng.below(200) as usize;
                        let len = (1 + rng.below(48) as usize).min(SECTORS - sector);
                        (sector, len, rng.below(5) == 0, rng.below(2) as u32)
                    };
                    let mut buf = vec![0u8; len * SECTOR];
                    let mut hist = hist.lock().unwrap();
                    for j in 0..len {
                        stamp(tag, sector + j, &mut buf[j * SECTOR..(j + 1) * SECTOR]);
                        hist[sector + j].push((i, tag));
                        tag += 1;
                    }
                    drop(hist);
                    cache.write(q, (sector * SECTOR) as u64, &buf, fua).unwrap();
                    Kind::Write { fua }
                } else if r < 78 {
                    let sector = rng.below(SECTORS as u64 - 64) as usize;
                    let len = 1 + rng.below(32) as usize;
                    cache
                        .discard((sector * SECTOR) as u64, (len * SECTOR) as u64)
                        .unwrap();
                    for j in 0..len {
                        hist.lock().unwrap()[sector + j].push((i, 0));
                    }
                    Kind::Discard
                } else if r < 84 {
                    // Half the reads are of spans writes rarely touch, so that they miss;
                    // half of the spots writes go to (their misses cache what writes sent
                    // to the backing device alone).
                    let sector = if rng.below(2) == 0 {
                        rng.below(SECTORS as u64 - 64) as usize
                    } else {
                        [0usize, SECTORS / 2 - 64, SECTORS - 256][rng.below(3) as usize]
                            + rng.below(190) as usize
                    };
                    let len = (1 + rng.below(64) as usize).min(SECTORS - sector);
                    let mut buf = vec![0u8; len * SECTOR];
                    cache
                        .read(rng.below(2) as u32, (sector * SECTOR) as u64, &mut buf)
                        .unwrap();
                    let hist = hist.lock().unwrap();
                    for j in 0..len {
                        let s = sector + j;
                        let want = hist[s].last().map_or(0, |&(_, t)| t);
                        let got = tag_of(s, &buf[j * SECTOR..(j + 1) * SECTOR]);
                        assert_eq!(got, Some(want), "live read of sector {s}");
                    }
                    Kind::Read
                } else if r < 92 {
                    cache.flush().unwrap();
                    Kind::Flush
                } else {
                    cache.writeback_all().unwrap();
                    Kind::Flush
                }
            })
            .join()
            .unwrap()
        });
        ops.push(OpRec {
            kind,
            start,
            end: media.events(),
        });
        n += 1;
    }
    // The run ends with a crash: nothing more is persisted.
    cache.crash();
    let hist = hist.lock().unwrap().clone();
    Run {
        media: media.clone(),
        backing,
        ops,
        hist,
        format,
    }
}

/// Checks every sector of the device reopened at crash point `k`.
#[allow(clippy::too_many_arguments)]
fn check_point(
    image: Arc<dyn CacheMedia>,
    backing: &Arc<BackingImage>,
    ops: &[OpRec],
    hist: &History,
    k: usize,
    what: &str,
    mode: CacheMode,
    formatting: bool,
) {
    let data_crc = Cache::peek_info(&*image)
        .unwrap()
        .is_some_and(|i| i.data_crc);
    // Read-only: recovery is checked exactly as replay rebuilt it, without miss fills.
    // A cut in the first open may leave a cache to format: that open is not read-only.
    let cfg = CacheConfig {
        queues: 1,
        background: false,
        data_crc,
        read_only: !formatting,
        cache_mode: formatting.then_some(mode),
        ..CacheConfig::default()
    };
    let cache = Cache::open(image, backing.clone(), cfg)
        .unwrap_or_else(|e| panic!("{what}: reopening failed: {e}"));
    assert_eq!(cache.status().cache_mode, mode, "{what}: the mode is kept");
    // A torn tail is never taken for damage (the evidence fsck reports too).
    let end = cache.status().replay.end;
    assert!(
        end.is_some_and(|e| !e.is_damage()),
        "{what}: the end of the log reads as damage: {end:?}"
    );
    // Ops before this index were followed by a completed FLUSH.
    let flushed_before = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == Kind::Flush && o.end <= k)
        .map(|(i, _)| i)
        .max()
        .unwrap_or(0);
    let must_survive = |i: usize| {
        let o = &ops[i];
        i < flushed_before
            || (matches!(o.kind, Kind::Write { fua: true } | Kind::Discard) && o.end <= k)
    };
    // Property 6: the sectors the recovered cache holds no dirty data of.
    let mut dirty = vec![false; SECTORS];
    for (off, len) in cache.dirty_extents() {
        let first = usize::try_from(off).unwrap() / SECTOR;
        let last = (usize::try_from(off).unwrap() + len as usize).div_ceil(SECTOR);
        dirty[first..last].fill(true);
    }
    let in_flight = |i: usize| ops[i].start <= k && k < ops[i].end;
    let mut buf = vec![0u8; 1 << 20];
    let per = buf.len() / SECTOR;
    let mut from_backing = vec![0u8; 1 << 20];
    for chunk in 0..SECTORS / per {
        cache
            .read(0, (chunk * buf.len()) as u64, &mut buf)
            .unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
        backing
            .read_at((chunk * buf.len()) as u64, &mut from_backing)
            .unwrap();
        for j in 0..per {
            let s = chunk * per + j;
            let at = j * SECTOR..(j + 1) * SECTOR;
            if dirty[s] || hist[s].iter().any(|&(i, _)| in_flight(i)) {
                continue;
            }
            assert!(
                buf[at.clone()] == from_backing[at],
                "{what}: sector {s} is not dirty in the cache, but the backing device \
                 alone reads tag {:?}, the cache {:?}; history {:?}",
                tag_of(s, &from_backing[j * SECTOR..(j + 1) * SECTOR]),
                tag_of(s, &buf[j * SECTOR..(j + 1) * SECTOR]),
                hist[s]
            );
        }
        // Property 5: without dirty data, the backing device alone is the whole device.
        for (j, alone) in (0..per).flat_map(|j| [(j, false), (j, true)]) {
            if alone && mode.keeps_dirty() {
                continue;
            }
            let data = if alone { &from_backing } else { &buf };
            let what = if alone {
                format!("{what} (the backing device alone)")
            } else {
                what.to_owned()
            };
            let s = chunk * per + j;
            let got = tag_of(s, &data[j * SECTOR..(j + 1) * SECTOR])
                .unwrap_or_else(|| panic!("{what}: sector {s} holds data never written to it"));
            let h = &hist[s];
            let last_sure = h.iter().rposition(|&(i, _)| must_survive(i));
            let allowed = |t: u64| match last_sure {
                Some(p) => h[p..].iter().any(|&(i, tag)| tag == t && ops[i].start <= k),
                None => t == 0 || h.iter().any(|&(i, tag)| tag == t && ops[i].start <= k),
            };
            assert!(
                allowed(got),
                "{what}: sector {s} reads tag {got}; history {h:?}; last durable {last_sure:?}"
            );
        }
    }
    cache.crash();
}

#[test]
fn power_cuts_never_lose_acknowledged_data() {
    let target: usize = std::env::var("PCACHE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut points = 0usize;
    let mut seed = 1u64;
    while points < target {
        let Run {
            media,
            backing: rec,
            ops,
            hist,
            format,
        } = workload(seed);
        let mode = mode_of(seed);
        let events = media.events();
        let mut replayer = media.replayer();
        let mut backing =
            BackingReplayer::new(prefilled().to_vec(0, DEV as usize), rec.take_recorded());
        // Crash points: every event of the first open (the format), then every event from
        // the first operation on (every fence, backing write completion and flush);
        // sampled evenly when the run has more than the remaining budget.
        let first = ops.get(1).map_or(0, |o| o.start);
        let budget = ((target - points) / 2).max(1);
        let step = ((events - first) / budget).max(1);
        let mut k = format.0;
        while k <= events && points < target {
            let formatting = k < format.1;
            // Nothing pending and no volatile write kept; a torn media image with a
            // seeded choice of the volatile sectors on the backing device.
            let cut = seed ^ (k as u64) << 8;
            for (torn, survivors) in [(None, Survivors::None), (Some(cut), Survivors::Some(cut))] {
                let what = format!(
                    "seed {seed}, event {k}/{events}, torn {}, backing {survivors:?}",
                    torn.is_some()
                );
                let image: Arc<dyn CacheMedia> = Arc::new(replayer.image(k, torn));
                let backing = Arc::new(backing.image(k, survivors));
                check_point(image, &backing, &ops, &hist, k, &what, mode, formatting);
                points += 1;
            }
            // Few words pending (a tail, a generation, a terminator): every subset of
            // them that may have reached the media.
            let n = replayer.pending_words(k);
            if (1..=MAX_SUBSET_WORDS).contains(&n) {
                for mask in 1..(1u64 << n) {
                    let what =
                        format!("seed {seed}, event {k}/{events}, subset {mask:#b} of {n} words");
                    let image: Arc<dyn CacheMedia> = Arc::new(replayer.image_subset(k, mask));
                    let backing = Arc::new(backing.image(k, Survivors::None));
                    check_point(image, &backing, &ops, &hist, k, &what, mode, formatting);
                    points += 1;
                }
            }
            k = if k + 1 < format.1 {
                k + 1
            } else {
                (k + step).max(first)
            };
        }
        seed += 1;
    }
    eprintln!("checked {points} crash points over {} workloads", seed - 1);
}
