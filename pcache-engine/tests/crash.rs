//! The proof by simulated power cuts (issue 5; docs/design.md, "The power-cut proof"):
//! random workloads of writes, overwrites, FUA writes, reads (whose misses are cached),
//! flushes, discards, writeback rounds (the open ksets left open), writeback of everything
//! and GC run on a `CrashMedia`, which records every store, flush and fence, and a
//! recording `TestBacking`, whose write completions and flushes are
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
//! reuse a data segment (see [`workload`] and [`run`]). A scripted test,
//! [`log_segment_taken_again`], takes a log segment a second time as a log segment and
//! reuses a data segment in the activation that freed it, which the random workloads
//! never reach (steps L1 and G2), and cuts after every event around the second taking.
//!
//! `PCACHE_CRASH_POINTS` sets how many crash points to cover (default 1 000; CI runs
//! 10 000 in release mode, `cargo xtask crash --points N` more, split among processes
//! with `PCACHE_CRASH_SHARD=i/n`; `cargo xtask crash --mutants` runs it once per dropped
//! persistence step).

use pcache_engine::backing::{Backing, MemBacking};
use pcache_engine::format::fresh;
use pcache_engine::format::layout::{self, CachePos};
use pcache_engine::format::record::{encode_meta, Dual, TailPos};
use pcache_engine::media::{BlockMedia, CacheMedia};
use pcache_engine::testing::{
    write_superblock, BackingImage, BackingReplayer, CrashBlockDevice, CrashMedia, CrashReplayer,
    SplitMix, Survivors, TestBacking,
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

/// Writes `buf` at `off`: staged, landed piece by piece and committed when `direct` and
/// the cache can stage it (`Cache::stage_direct`), else with `Cache::write`.
fn write_maybe_direct(cache: &Cache, q: u32, off: u64, buf: &[u8], fua: bool, direct: bool) {
    if direct {
        if let Some(w) = cache.stage_direct(q, off, buf.len()).unwrap() {
            for (i, p) in w.pieces().iter().enumerate() {
                let piece = &buf[p.at as usize..][..p.len as usize];
                cache.write_direct_piece(&w, i, piece).unwrap();
            }
            cache.commit_direct(w, fua).unwrap();
            return;
        }
    }
    cache.write(q, off, buf, fua).unwrap();
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
    /// One writeback round: it makes nothing durable that a power cut could not lose.
    Round,
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

/// Moves both tails of a closed cache whose log is clean (key_tail = dirty_tail =
/// key_head, in log segment `seg`) to `NEAR_END` in `seg`, over a terminator: the state
/// of a cache whose log was written back and collected up to there. The stores are the
/// test's, not the engine's: one fence makes them durable, and no power cut falls
/// between them.
fn near_end(media: &CrashMedia, seg: u32) {
    let at = layout::data_area_off(seg) + u64::from(NEAR_END);
    media.write(at, &[0; 24]).unwrap();
    media.flush(at, 24);
    let pos = TailPos(CachePos::new(seg, NEAR_END));
    for slot_off in [layout::key_tail_off, layout::dirty_tail_off] {
        let mut copies = [[0u8; 16]; 2];
        for (i, c) in copies.iter_mut().enumerate() {
            media.read(slot_off(i), c).unwrap();
        }
        let dual = Dual::<TailPos>::decode([&copies[0], &copies[1]], [slot_off(0), slot_off(1)]);
        let (slot, seq) = dual.next_write();
        let raw = encode_meta(&pos, seq);
        media.write(slot_off(slot), raw.as_bytes()).unwrap();
        media.flush(slot_off(slot), raw.as_bytes().len() as u64);
    }
    media.fence();
}

/// The history of a backing device holding its initial content (op 0).
fn initial_history() -> Arc<Mutex<History>> {
    Arc::new(Mutex::new(
        (0..SECTORS).map(|s| vec![(0, initial_tag(s))]).collect(),
    ))
}

/// The backing device holding the initial content: recording its events on `media`'s
/// timeline when `record`, and checking property 4 against `hist` at every flush.
fn backing_device(
    media: &Arc<CrashMedia>,
    hist: &Arc<Mutex<History>>,
    record: bool,
) -> Arc<TestBacking> {
    let hist = hist.clone();
    let seen = Mutex::new(vec![0; SECTORS]);
    let b = TestBacking::new(prefilled());
    let b = if record {
        b.recording(media.clone())
    } else {
        b
    };
    Arc::new(b.on_flush(move |live| check_flushed_state(live, &hist, &seen)))
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
    let hist = initial_history();
    let backing = backing_device(media, &hist, record);
    let cutoff = if seed.is_multiple_of(7) { 16 << 10 } else { 0 };
    let cfg = CacheConfig {
        queues: 2,
        background: false,
        gc_percent: Some(0),
        // Seeds 7 mod 8 (block media) keep no data CRCs, so that their writes can be
        // staged (zero copy) whatever the seed's multiple of 3: seed 15, in writeback
        // mode, is among the first workloads.
        data_crc: seed.is_multiple_of(3) && seed % 8 != 7,
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
    // Seeds 3 mod 4 run the cache on a pmem block device's media (`BlockMedia`: every
    // write durable on completion, unaligned ones read-modify-write their edge blocks).
    let cache_media = || -> Arc<dyn CacheMedia> {
        if seed % 4 == 3 {
            let dev = CrashBlockDevice(media.clone());
            Arc::new(BlockMedia::on_device(
                dev,
                CACHE,
                512,
                false,
                "crash".into(),
            ))
        } else {
            media.clone()
        }
    };
    let open = || Cache::open(cache_media(), backing.clone(), cfg).unwrap();
    let format_start = media.events();
    let mut cache = open();
    let format = (format_start, media.events());
    if seed % 2 == 1 {
        cache.close().unwrap();
        drop(cache);
        near_end(media, 0);
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
                    // On block media, half the writes are staged and their pieces landed
                    // as the daemon's zero copy does (D1: each piece durable, then the
                    // commit logs the keys).
                    let direct = seed % 4 == 3 && rng.below(2) == 0;
                    write_maybe_direct(&cache, q, (sector * SECTOR) as u64, &buf, fua, direct);
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
                } else if r < 88 {
                    cache.flush().unwrap();
                    Kind::Flush
                } else if r < 92 {
                    // One round, as the background worker runs it: the open ksets stay
                    // open (W0: a key that replaced data the round leaves unwritten is
                    // in one of them).
                    cache.writeback_step().unwrap();
                    Kind::Round
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

/// Checks the images a power cut right after event `k` could leave (`cut` seeds the torn
/// ones; `at` names the point in messages): nothing pending on the media and no volatile
/// write kept on the backing device; a torn media image with a seeded choice of the
/// volatile sectors; and, where few words are pending (a tail, a generation, a
/// terminator), every subset of them that may have reached the media. Returns how many
/// images it checked.
#[allow(clippy::too_many_arguments)]
fn check_cut(
    replayer: &mut CrashReplayer,
    backing: &mut BackingReplayer,
    k: usize,
    at: &str,
    cut: u64,
    ops: &[OpRec],
    hist: &History,
    mode: CacheMode,
    formatting: bool,
) -> usize {
    let mut points = 0;
    for (torn, survivors) in [(None, Survivors::None), (Some(cut), Survivors::Some(cut))] {
        let what = format!("{at}, torn {}, backing {survivors:?}", torn.is_some());
        let image: Arc<dyn CacheMedia> = Arc::new(replayer.image(k, torn));
        let backing = Arc::new(backing.image(k, survivors));
        check_point(image, &backing, ops, hist, k, &what, mode, formatting);
        points += 1;
    }
    let n = replayer.pending_words(k);
    if (1..=MAX_SUBSET_WORDS).contains(&n) {
        for mask in 1..(1u64 << n) {
            let what = format!("{at}, subset {mask:#b} of {n} words");
            let image: Arc<dyn CacheMedia> = Arc::new(replayer.image_subset(k, mask));
            let backing = Arc::new(backing.image(k, Survivors::None));
            check_point(image, &backing, ops, hist, k, &what, mode, formatting);
            points += 1;
        }
    }
    points
}

#[test]
fn power_cuts_never_lose_acknowledged_data() {
    let target: usize = std::env::var("PCACHE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // `PCACHE_CRASH_SHARD=i/n`: this process takes the workloads of seeds i+1, i+1+n, …
    // and its share of the points (`cargo xtask crash --jobs n` runs n of them at once).
    let (shard, shards) = std::env::var("PCACHE_CRASH_SHARD")
        .ok()
        .and_then(|v| {
            let (i, n) = v.split_once('/')?;
            let (i, n): (u64, u64) = (i.parse().ok()?, n.parse().ok()?);
            (i < n).then_some((i, n))
        })
        .unwrap_or((0, 1));
    let target = (target + (shards - 1 - shard) as usize) / shards as usize;
    let mut points = 0usize;
    let mut seed = 1 + shard;
    let mut workloads = 0u64;
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
            points += check_cut(
                &mut replayer,
                &mut backing,
                k,
                &format!("seed {seed}, event {k}/{events}"),
                seed ^ (k as u64) << 8,
                &ops,
                &hist,
                mode,
                formatting,
            );
            k = if k + 1 < format.1 {
                k + 1
            } else {
                (k + step).max(first)
            };
        }
        seed += shards;
        workloads += 1;
    }
    eprintln!("checked {points} crash points over {workloads} workloads (shard {shard}/{shards})");
}

/// A scripted workload on one cache (see [`log_segment_taken_again`]), each operation on
/// a thread of its own as in [`run`], with the history the checks need.
struct Script {
    media: Arc<CrashMedia>,
    backing: Arc<TestBacking>,
    cfg: CacheConfig,
    cache: Option<Cache>,
    ops: Vec<OpRec>,
    hist: Arc<Mutex<History>>,
    tag: u64,
    /// Crash points that would fall among the test's own stores (a move of the tails).
    skip: Vec<usize>,
    /// The ops every event of which is a crash point.
    dense: Vec<usize>,
}

impl Script {
    /// A fresh device (a superblock), formatted by the first open.
    fn new(data_crc: bool) -> Self {
        let media = Arc::new(CrashMedia::new(CACHE));
        write_superblock(&*media);
        media.flush(layout::SB_OFF, 24);
        media.fence();
        let hist = initial_history();
        let backing = backing_device(&media, &hist, true);
        let cfg = CacheConfig {
            queues: 1,
            background: false,
            gc_percent: Some(0),
            data_crc,
            cache_mode: Some(CacheMode::Writeback),
            ..CacheConfig::default()
        };
        let cache = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
        Self {
            media,
            backing,
            cfg,
            cache: Some(cache),
            // Op 0: the backing's initial content.
            ops: vec![OpRec {
                kind: Kind::Write { fua: true },
                start: 0,
                end: 0,
            }],
            hist,
            tag: SECTORS as u64 + 1,
            skip: Vec::new(),
            dense: Vec::new(),
        }
    }

    fn cache(&self) -> &Cache {
        self.cache.as_ref().unwrap()
    }

    /// Runs `f` on a thread of its own and records it as an op.
    fn op(&mut self, f: impl FnOnce(&Cache) -> Kind + Send) {
        let start = self.media.events();
        let cache = self.cache();
        let kind = std::thread::scope(|s| s.spawn(|| f(cache)).join().unwrap());
        self.ops.push(OpRec {
            kind,
            start,
            end: self.media.events(),
        });
    }

    fn write(&mut self, sector: usize, len: usize, fua: bool) {
        let i = self.ops.len();
        let mut buf = vec![0u8; len * SECTOR];
        let mut hist = self.hist.lock().unwrap();
        for j in 0..len {
            stamp(self.tag, sector + j, &mut buf[j * SECTOR..(j + 1) * SECTOR]);
            hist[sector + j].push((i, self.tag));
            self.tag += 1;
        }
        drop(hist);
        self.op(|c| {
            c.write(0, (sector * SECTOR) as u64, &buf, fua).unwrap();
            Kind::Write { fua }
        });
    }

    /// A read, checked against the history at once.
    fn read(&mut self, sector: usize, len: usize) {
        let hist = self.hist.clone();
        self.op(|c| {
            let mut buf = vec![0u8; len * SECTOR];
            c.read(0, (sector * SECTOR) as u64, &mut buf).unwrap();
            let hist = hist.lock().unwrap();
            for j in 0..len {
                let s = sector + j;
                let want = hist[s].last().map_or(0, |&(_, t)| t);
                let got = tag_of(s, &buf[j * SECTOR..(j + 1) * SECTOR]);
                assert_eq!(got, Some(want), "live read of sector {s}");
            }
            Kind::Read
        });
    }

    fn flush(&mut self) {
        self.op(|c| {
            c.flush().unwrap();
            Kind::Flush
        });
    }

    fn writeback_all(&mut self) {
        self.op(|c| {
            c.writeback_all().unwrap();
            Kind::Flush
        });
    }

    /// Closes the cache and opens it again. With `jump`, the tails of its clean log move
    /// to `NEAR_END` of key_head's segment in between ([`near_end`]).
    fn reopen(&mut self, jump: bool) {
        let start = self.media.events();
        let cache = self.cache.take().unwrap();
        let k = cache.status().kernel;
        std::thread::scope(|s| s.spawn(|| cache.close().unwrap()).join().unwrap());
        drop(cache);
        if jump {
            assert!(
                k.key_tail == k.dirty_tail && k.dirty_tail == k.key_head,
                "the log is not clean: {k:?}"
            );
            self.skip.push(self.media.events());
            near_end(&self.media, k.key_head.seg);
        }
        let (media, backing, cfg) = (self.media.clone(), self.backing.clone(), self.cfg);
        let cache = std::thread::scope(|s| {
            s.spawn(move || Cache::open(media, backing, cfg).unwrap())
                .join()
                .unwrap()
        });
        self.cache = Some(cache);
        self.ops.push(OpRec {
            kind: Kind::Reopen,
            start,
            end: self.media.events(),
        });
    }

    /// The log segment key_head is in.
    fn head_seg(&self) -> u32 {
        self.cache().status().kernel.key_head.seg
    }

    /// One lap of the log from `NEAR_END`: writes to spread sectors whose keys make one
    /// kset (2 424 bytes) larger than the 2 KiB left there, then the FLUSH that closes it
    /// and so chains the next log segment, which the kset then starts. The data goes
    /// first, so it takes the lowest free segment; the log the next free one after it.
    /// With `dense`, every event of the FLUSH is a crash point. Returns the segment the
    /// log went on in.
    fn lap(&mut self, dense: bool) -> u32 {
        for i in 0..LAP_KEYS {
            self.write(LAP_SECTOR + 2 * i, 1, false);
        }
        if dense {
            self.dense.push(self.ops.len());
        }
        self.flush();
        self.head_seg()
    }
}

/// Keys of a lap's kset ([`Script::lap`]): more than fit in the 2 KiB at `NEAR_END`.
const LAP_KEYS: usize = 60;
/// Where a lap writes (region 0).
const LAP_SECTOR: usize = 1024;

/// The power-cut proof for what the random workloads do not reach (docs/design.md,
/// "Mutants"): a data segment freed by GC and reused in one activation while the index
/// still maps extents into it (G2), and a log segment taken a second time as a log
/// segment (L1), which takes 16 MiB of log per lap on its own; here the tails move to
/// near the end of the log segment between activations instead ([`near_end`]).
///
/// 1. X is written into data segment 1 (the log is in 0), the cache reopened (the index
///    maps X from the replay, and no data head holds segment 1), everything written
///    back: GC passes X's kset and frees segment 1 (bumping its generation, G2). Y is
///    written: the allocator starts again from the first segment and reuses segment 1
///    from its start. Reading X must find its extent stale and read the backing device;
///    without G2 the extent still looks current and the read returns Y's bytes.
/// 2. Three laps of the log, each from `NEAR_END` of a clean log: 0 → 2 (a kset of
///    keys into segment 1 starts segment 2), 2 → 1, 1 → 2 again. Segment 2 is taken
///    once more, while its first bytes still hold the first lap's kset, whose keys
///    point into segment 1 under its current generation (freed at an open, never
///    invalidated). L1 zeroes them before the LAST kset links the segment; every event
///    of that FLUSH is a crash point, and a cut right after the link would otherwise
///    replay the old kset: its keys read bytes of the log now in segment 1, or older
///    data than the FLUSH made durable.
#[test]
fn log_segment_taken_again() {
    let target: usize = std::env::var("PCACHE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut points = 0;
    for data_crc in [false, true] {
        let mut s = Script::new(data_crc);
        // 1. G2.
        s.write(0, 8, true);
        s.reopen(false);
        s.writeback_all();
        s.write(64, 8, true);
        s.read(0, 8);
        // 2. L1.
        s.writeback_all();
        s.reopen(true);
        assert_eq!(s.lap(false), 2, "the first lap takes segment 2");
        s.writeback_all();
        s.reopen(true);
        assert_eq!(s.lap(false), 1, "the second lap takes segment 1");
        s.writeback_all();
        s.reopen(true);
        assert_eq!(s.lap(true), 2, "the third lap takes segment 2 again");
        s.write(LAP_SECTOR, 4, true);
        s.read(LAP_SECTOR, 2 * LAP_KEYS);
        let Script {
            media,
            backing: rec,
            cache,
            ops,
            hist,
            skip,
            dense,
            ..
        } = s;
        cache.unwrap().crash();
        let hist = hist.lock().unwrap().clone();
        let events = media.events();
        let first = ops[1].start;
        // Every event of the dense ops; the others sampled evenly.
        let budget = (target / 20).max(1);
        let step = ((events - first) / budget).max(1);
        let mut cuts: std::collections::BTreeSet<usize> = (first..=events).step_by(step).collect();
        for &i in &dense {
            cuts.extend(ops[i].start..=ops[i].end);
        }
        let mut replayer = media.replayer();
        let mut backing =
            BackingReplayer::new(prefilled().to_vec(0, DEV as usize), rec.take_recorded());
        for k in cuts.into_iter().filter(|k| !skip.contains(k)) {
            points += check_cut(
                &mut replayer,
                &mut backing,
                k,
                &format!("laps (data_crc {data_crc}), event {k}/{events}"),
                (k as u64) << 8 | u64::from(data_crc),
                &ops,
                &hist,
                CacheMode::Writeback,
                false,
            );
        }
    }
    eprintln!("checked {points} crash points of the scripted laps");
}
