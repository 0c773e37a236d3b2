//! Every tool on adversarial but well-formed caches at the format's limits (issue 17),
//! against known answers: `pcache-mkfs`, `pcache-fsck`, `pcache-dump` (`--json`
//! included), `pcache-replay` and the engine's strict open, each read-only tool leaving
//! the image byte for byte as it was, within a memory bound.
//!
//! - **The maximum segment count**, 1 048 576 (`PCACHE_CACHE_SEGS_MAX`: the kernel's
//!   loader refuses a larger `seg_num`; `pcache-mkfs` caps a larger device at it), on a
//!   16 TiB device, with a log that runs from segment 0 through a LAST kset to the highest
//!   segment id and keys whose data sit in the one below it. A fresh cache of that size
//!   holds 12 GiB of metadata (three 4 KiB pages per segment), which neither a test's
//!   memory nor a sparse file here can hold: ext4's largest file, 16 TiB − 4 KiB, is one
//!   segment short of the maximum, and formatting it writes 16 GiB. So the libraries the
//!   binaries are made of (`fsck::check`, the scan and JSON of `pcache-dump`, pcache's
//!   strict open) run on a [`FreshMedia`] of the true maximum, which computes the fresh
//!   format's bytes (checked here against `pcache-mkfs`'s) and stores only what is
//!   written; and the binaries run on the largest sparse file that formats in about a
//!   second in a debug build, 16 384 segments (a 256 GiB file, 256 MiB written), with the
//!   same log to the highest segment. The same test at ext4's largest file, 1 048 575
//!   segments, is `#[ignore]`d: formatting it writes 16 GiB, and each of the two
//!   mappings `pcache-fsck` makes of it costs 4 GiB of page tables (a page-table page per
//!   16 MiB segment touched).
//! - **A log that fills the cache with one-key ksets**: a 512 MiB cache (the smallest)
//!   written by the engine with FUA writes of 4 KiB at scattered logical offsets, one key
//!   per kset, without background workers, until only the log's reserve segment is free
//!   (`pcache_engine::testing::fill_one_key_ksets`): 118 697 ksets. With 512-byte writes
//!   (851 344 ksets over 4 log segments, the most ksets a 512 MiB cache can hold) the
//!   same test is `#[ignore]`d for its run time in a debug build (about 10 s).
//!
//! Memory: the peak of the library calls' allocations is counted by the test's allocator
//! (`support::Peak`; the tests run one at a time, `support::serial`, the count being
//! process-wide); the binaries run under a limit on their heap (`RLIMIT_DATA`: private
//! writable memory, which leaves out the shared mapping of the cache), so one that needs
//! more fails its allocation and the test. (`wait4`'s peak resident size would not do: a
//! child started by `fork` or `vfork` inherits the peak of the test process, which holds
//! the images.)

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, FileMedia};
use pcache_engine::testing::{
    fill_data, fill_offset, fill_one_key_ksets, formatted, FreshMedia, FILL_BACKING,
};
use pcache_engine::{Cache, CacheConfig};
use pcache_format::kset::{encode_last_kset, KsetBuf};
use pcache_format::layout::{self, CachePos, CACHE_SEGS_MAX, SEG_DATA_SIZE};
use pcache_format::Key;
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::fsck::{self, exit, FsckOptions, Verdict};
use pcache_tools::mkfs::{self, MkfsOptions};
use pcache_tools::testimg::SparseImage;
use pcache_tools::Image;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;
use support::{digest, measured, run, serial, sparse};

#[path = "limits/support.rs"]
mod support;

/// The smallest device of the maximum segment count (16 TiB + 20 KiB).
const MAX_DEVICE: u64 = layout::segment_base(CACHE_SEGS_MAX);
/// The largest file ext4 holds with 4 KiB blocks: 1 048 575 segments.
const EXT4_MAX_FILE: u64 = (16 << 40) - 4096;
/// Segments of the cache file the binaries run on by default.
const FILE_SEGS: u32 = 16_384;
/// Keys in each of the two ksets of [`high_log`].
const HIGH_KEYS: u32 = 100;
/// The backing device behind [`high_log`]'s keys.
const HIGH_BACKING: u64 = 64 << 20;

/// The peak memory of a scan (`fsck::check`, `pcache-dump`'s with few segments listed)
/// per segment of the cache (measured: 49 bytes).
const CHECK_PER_SEGMENT: u64 = 64;
/// The peak memory of pcache's strict open per segment (measured: 92 bytes; 61 kept).
const OPEN_PER_SEGMENT: u64 = 128;
/// The peak memory per logged key, of a check or an open: the index's budget
/// (docs/performance.md), 48 bytes per extent (a check measured 35 to 39).
const PER_KEY: u64 = 48;
/// The peak memory of `pcache-dump`'s scan per kset it lists (measured: 97 to 108
/// bytes for one-key ksets).
const SCAN_PER_KSET: u64 = 160;
/// The heap a binary may use besides what the cache's size calls for: its libraries'
/// data, thread stacks, the allocator's arenas and I/O buffers.
const BINARY_BASE: u64 = 64 << 20;
/// A binary's heap per segment: the scan's model of it and pcache's open (about 120
/// bytes; fsck runs both).
const BINARY_PER_SEGMENT: u64 = 256;
/// A binary's heap per segment when `pcache-dump` lists it: its model (about 350 bytes)
/// and its JSON (about 1.2 KiB, in a string that grows by doubling).
const DUMP_PER_SEGMENT: u64 = 4 << 10;
/// A binary's heap per key (the index: 48 bytes; fsck's overlap check).
const BINARY_PER_KEY: u64 = 128;
/// `pcache-dump`'s heap per listed kset of one key (its model and about 250 bytes of
/// JSON).
const DUMP_PER_KSET: u64 = 1 << 10;

/// The data of key `i` of [`high_log`].
fn high_data(i: u32, len: u32) -> Vec<u8> {
    (0..len).map(|b| (i * 7 + b / 512 + b * 13) as u8).collect()
}

/// Writes a log that reaches the highest segment id on a fresh cache of `n` segments:
/// at `0:0` a kset of [`HIGH_KEYS`] keys, then a LAST kset to segment `n − 1`, which
/// holds a second kset of as many keys (and the terminator after it); the data of all
/// keys is in segment `n − 2`, the generation 0 of a fresh cache, no CRCs. Key `i` is
/// `(i + 1) × 512` bytes at logical offset `i × 256 KiB`. Returns the keys' `(offset,
/// data)`. Nothing is flushed.
fn high_log(m: &dyn CacheMedia, n: u32) -> Vec<(u64, Vec<u8>)> {
    let (log, data_seg) = (n - 1, n - 2);
    let mut model = Vec::new();
    let mut data_off = 0u32;
    let mut kset_at = |seg: u32, from: u32, model: &mut Vec<(u64, Vec<u8>)>| -> u32 {
        let mut buf = KsetBuf::new();
        for i in from..from + HIGH_KEYS {
            let len = (i % 32 + 1) * 512;
            let off = u64::from(i) << 18;
            let data = high_data(i, len);
            m.write(layout::data_area_off(data_seg) + u64::from(data_off), &data)
                .unwrap();
            let key = Key {
                off,
                len,
                flags: 0,
                pos: CachePos::new(data_seg, data_off),
                seg_gen: 0,
                data_crc: 0,
            };
            assert!(buf.push(&key.to_raw()));
            data_off += len;
            model.push((off, data));
        }
        let bytes = buf.seal();
        let at = layout::data_area_off(seg);
        m.write(at + bytes.len() as u64, &[0; 24]).unwrap();
        m.write(at, bytes).unwrap();
        u32::try_from(bytes.len()).unwrap()
    };
    // The second kset first, so the log never points at garbage.
    let second = kset_at(log, HIGH_KEYS, &mut model);
    assert_eq!(second, 24 + 40 * HIGH_KEYS);
    let first = kset_at(0, 0, &mut model);
    m.write(
        layout::data_area_off(0) + u64::from(first),
        &encode_last_kset(log),
    )
    .unwrap();
    model.sort_by_key(|(off, _)| *off);
    model
}

/// Where [`high_log`]'s log ends.
fn high_head(n: u32) -> String {
    format!("{}:{}", n - 1, 24 + 40 * HIGH_KEYS)
}

/// A fresh image in memory is the same, page for page, whether `pcache-mkfs` wrote it or
/// [`FreshMedia`] computes it: what the tests at the maximum stand on.
#[test]
fn fresh_media_is_what_pcache_mkfs_writes() {
    let _serial = serial();
    for (len, data_crc) in [((512 << 20) + 12_345, false), (40 << 24, true)] {
        let mut written = SparseImage::new(len);
        let opts = MkfsOptions {
            data_crc,
            ..MkfsOptions::default()
        };
        mkfs::mkfs(&mut written, &opts, &mut |_| {}).unwrap();
        let fresh = FreshMedia::new(len, data_crc);
        let mut pages: Vec<u64> = written.pages().collect();
        for seg in 0..fresh.seg_num() {
            pages.extend((0..4).map(|p| layout::segment_base(seg) + p * 4096));
        }
        pages.extend((0..5).map(|p| p * 4096));
        let (mut a, mut b) = ([0; 4096], [0; 4096]);
        for p in pages {
            written.read_at(p, &mut a).unwrap();
            fresh.read(p, &mut b).unwrap();
            assert!(a == b, "page at {p} of a {len}-byte device differs");
        }
    }
}

#[test]
fn mkfs_plans_the_maximum_and_caps_beyond_it() {
    let opts = MkfsOptions::default();
    let g = mkfs::plan(MAX_DEVICE, &opts).unwrap();
    assert_eq!(
        (g.seg_num, g.capped, g.unused_tail),
        (CACHE_SEGS_MAX, false, 0)
    );
    let g = mkfs::plan(MAX_DEVICE - 1, &opts).unwrap();
    assert_eq!((g.seg_num, g.capped), (CACHE_SEGS_MAX - 1, false));
    let g = mkfs::plan(EXT4_MAX_FILE, &opts).unwrap();
    assert_eq!((g.seg_num, g.capped), (CACHE_SEGS_MAX - 1, false));
    let g = mkfs::plan(u64::MAX, &opts).unwrap();
    assert_eq!((g.seg_num, g.capped), (CACHE_SEGS_MAX, true));
    assert_eq!(g.unused_tail, u64::MAX - MAX_DEVICE);
}

/// Checks `pcache-dump --json --keys --segments N-4..` of a cache holding [`high_log`].
fn check_high_dump(v: &Value, n: u32) {
    assert_eq!(v["schema"], 1);
    assert_eq!(v["kernel_would_load"], true);
    assert_eq!(v["superblock"]["raw"]["seg_num"], n);
    let chain = &v["chain"];
    assert_eq!(
        (chain["n_segs"].as_u64(), chain["found"].as_u64()),
        (Some(n.into()), Some(n.into()))
    );
    assert_eq!(chain["complete"], true);
    let segs = chain["segments"].as_array().unwrap();
    let ids: Vec<u64> = segs
        .iter()
        .map(|s| s["cache_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (n - 4..n).map(u64::from).collect::<Vec<_>>());
    let role = |id: u32| {
        segs[(id + 4 - n) as usize]["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        (role(n - 3), role(n - 2), role(n - 1)),
        ("free".into(), "data".into(), "log".into())
    );
    assert_eq!(segs[2]["live_keys"], 2 * HIGH_KEYS);
    assert_eq!(segs[2]["dirty_keys"], 2 * HIGH_KEYS);
    let log = &v["log"];
    assert_eq!(log["ksets"], 3);
    assert_eq!(log["last_hops"], 1);
    assert_eq!(log["keys"], 2 * HIGH_KEYS);
    assert_eq!(log["live_keys"], 2 * HIGH_KEYS);
    assert_eq!(log["dirty_keys"], 2 * HIGH_KEYS);
    assert_eq!(
        (log["stale_keys"].as_u64(), log["invalid_keys"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(log["segs_used"], 3);
    assert_eq!(log["key_head"], high_head(n));
    // Listed: the kset in segment n − 1 (the others are in segment 0), with its keys.
    let listed = log["listed"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pos"], format!("{}:0", n - 1));
    assert_eq!(listed[0]["key_num"], HIGH_KEYS);
    assert_eq!(
        listed[0]["keys"].as_array().unwrap().len(),
        HIGH_KEYS as usize
    );
    assert_eq!(log["not_listed"], 2);
    assert_eq!(
        v["status_line"],
        format!("0 {n} {n} 3 70 1182 {} 0:0 0:0", high_head(n))
    );
}

/// `pcache-fsck`'s library, `pcache-dump`'s scan and JSON, and the strict open (what
/// `pcache-replay` and `pcache-fsck`'s second verdict run), at 1 048 576 segments.
#[test]
fn fsck_dump_and_open_at_the_maximum_segment_count() {
    let _serial = serial();
    let fresh = Arc::new(FreshMedia::new(MAX_DEVICE, false));
    let n = fresh.seg_num();
    assert_eq!(n, CACHE_SEGS_MAX);
    let model = high_log(&*fresh, n);
    let pages = fresh.pages_written();
    let m: &dyn CacheMedia = &*fresh;

    let opts = FsckOptions {
        backing_size: Some(HIGH_BACKING),
        ..FsckOptions::default()
    };
    let t = Instant::now();
    let (r, bytes) = measured(|| fsck::check(m, &opts).unwrap());
    println!(
        "fsck::check of {n} segments: {:?}, {bytes} bytes at the peak",
        t.elapsed()
    );
    assert_eq!(r.exit_code, exit::CLEAN, "{}", fsck::text(&r, "max"));
    assert_eq!((r.verdict, r.errors, r.warnings), (Verdict::Clean, 0, 0));
    let s = r.status.unwrap();
    assert_eq!((s.seg_num, s.n_segs, s.segs_used), (n, n, 3));
    assert_eq!(s.key_head.to_string(), high_head(n));
    assert!(bytes <= CHECK_PER_SEGMENT * u64::from(n), "{bytes} bytes");
    // pcache's verdict, the second half of `pcache-fsck`: its strict open loads it.
    assert_eq!(fsck::verdict::refuses(fresh.clone(), HIGH_BACKING), None);

    let dopts = DumpOptions {
        keys: true,
        segments: Some(n - 4..n),
        backing_size: Some(HIGH_BACKING),
        ..DumpOptions::default()
    };
    let t = Instant::now();
    let (scan, bytes) = measured(|| pcache_tools::scan(m, &dopts.scan_options()).unwrap());
    let json = dump::json(&scan, "max");
    println!(
        "dump of {n} segments: {:?}, {bytes} bytes at the peak",
        t.elapsed()
    );
    assert!(bytes <= CHECK_PER_SEGMENT * u64::from(n), "{bytes} bytes");
    check_high_dump(&serde_json::from_str(&json).unwrap(), n);
    assert!(dump::text(&scan, "max").contains(&high_head(n)));

    // The strict open replays the log and reads back every key.
    let backing = Arc::new(MemBacking::new(HIGH_BACKING));
    let cfg = CacheConfig {
        read_only: true,
        background: false,
        ..CacheConfig::default()
    };
    let t = Instant::now();
    let (cache, bytes) = measured(|| Cache::open(fresh.clone(), backing, cfg).unwrap());
    println!(
        "open of {n} segments: {:?}, {bytes} bytes at the peak",
        t.elapsed()
    );
    let st = cache.status();
    let r = &st.replay;
    let keys = u64::from(2 * HIGH_KEYS);
    // Replay counts normal ksets and LAST ones apart (dump's `ksets` is both).
    assert_eq!(
        (r.ksets, r.last_ksets, r.keys, r.stale_keys, r.extents),
        (2, 1, keys, 0, keys)
    );
    assert_eq!(st.kernel.key_head.to_string(), high_head(n));
    assert!(
        bytes <= OPEN_PER_SEGMENT * u64::from(n) + PER_KEY * keys,
        "{bytes} bytes"
    );
    for (off, data) in &model {
        let mut got = vec![0; data.len()];
        cache.read(0, *off, &mut got).unwrap();
        assert!(&got == data, "key at {off}");
    }
    drop(cache);
    assert_eq!(fresh.pages_written(), pages, "nothing was written");
}

/// `pcache-dump --json` of every segment at the maximum: what it costs.
#[test]
#[ignore = "1.3 GB of JSON and 3 GB of memory, about 10 s"]
fn the_whole_dump_at_the_maximum_segment_count() {
    let _serial = serial();
    let fresh = FreshMedia::new(MAX_DEVICE, false);
    let m: &dyn CacheMedia = &fresh;
    let t = Instant::now();
    let (scan, model) =
        measured(|| pcache_tools::scan(m, &DumpOptions::default().scan_options()).unwrap());
    let segs = scan.chain.as_ref().map_or(0, |c| c.segments.len());
    assert_eq!(segs, CACHE_SEGS_MAX as usize);
    let (json, peak) = measured(|| dump::json(&scan, "max"));
    let n = u64::from(CACHE_SEGS_MAX);
    println!(
        "dump of every segment: {:?}; the model {} bytes per segment at the peak, the JSON \
         {} bytes per segment, {} at the peak",
        t.elapsed(),
        model / n,
        json.len() as u64 / n,
        peak / n
    );
    assert!(model <= 1024 * n && json.len() as u64 <= 1536 * n && peak <= 4096 * n);
    assert_eq!(json.matches("\"cache_id\"").count(), segs);
}

/// The binaries on a sparse cache file of `len` bytes: `pcache-mkfs` formats it, then
/// `pcache-fsck`, `pcache-dump --json` and `pcache-replay` (report and `--export`) read
/// it fresh and with [`high_log`]'s log to the highest segment id, each leaving it byte
/// for byte as it was.
fn tools_on_a_cache_file(len: u64) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let [cache, backing, export] =
        ["cache.img", "backing.img", "export.img"].map(|f| dir.path().join(f));
    let [c, b, e] = [&cache, &backing, &export].map(|p| p.to_str().unwrap());
    let n = layout::seg_num_for_device(len).unwrap();
    let nu = u64::from(n);
    sparse(&cache, len);

    let r = run("mkfs", BINARY_BASE, &[c]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(" {n} segments ")),
        "{}",
        r.stdout
    );
    let fresh = digest(&cache);

    let r = run(
        "fsck",
        BINARY_BASE + BINARY_PER_SEGMENT * nu,
        &["--json", c],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let v = r.json();
    assert_eq!(
        (v["verdict"].as_str(), v["errors"].as_u64()),
        (Some("clean"), Some(0))
    );
    assert_eq!(v["status_line"], format!("0 {n} {n} 1 70 1182 0:0 0:0 0:0"));
    assert_eq!(digest(&cache), fresh, "pcache-fsck changed the cache");

    let r = run("dump", BINARY_BASE + DUMP_PER_SEGMENT * nu, &["--json", c]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let segs = v["chain"]["segments"].as_array().unwrap();
    assert_eq!(
        (v["chain"]["n_segs"].as_u64(), segs.len()),
        (Some(nu), n as usize)
    );
    assert_eq!(segs[n as usize - 1]["cache_id"], n - 1);
    assert_eq!(segs[0]["role"], "log");
    assert!(segs[1..].iter().all(|s| s["role"] == "free"));
    assert_eq!(v["log"]["ksets"], 0);
    drop(v);
    assert_eq!(digest(&cache), fresh, "pcache-dump changed the cache");

    // The log to the highest segment id, written as the kernel lays it out.
    let model = {
        let m = FileMedia::open(&cache, false).unwrap();
        let model = high_log(&m, n);
        m.flush(0, len);
        m.fence();
        m.check().unwrap();
        model
    };
    sparse(&backing, HIGH_BACKING);
    let (before, back) = (digest(&cache), digest(&backing));
    let unchanged = |tool: &str| {
        assert_eq!(digest(&cache), before, "{tool} changed the cache");
        assert_eq!(digest(&backing), back, "{tool} changed the backing device");
    };

    let heap = BINARY_BASE + BINARY_PER_SEGMENT * nu + BINARY_PER_KEY * 2 * u64::from(HIGH_KEYS);
    let r = run("fsck", heap, &["--json", "--backing", b, c]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["verdict"], "clean");
    assert_eq!(v["status"]["segs_used"], 3);
    assert_eq!(v["status"]["key_head"], high_head(n));
    // The summary: two normal ksets and the LAST one between them, every key live.
    let keys = 2 * HIGH_KEYS;
    assert_eq!(
        (
            &v["log"]["ksets"],
            &v["log"]["keys"],
            &v["log"]["live_keys"]
        ),
        (&3.into(), &keys.into(), &keys.into()),
        "{v:#}"
    );
    unchanged("pcache-fsck");

    let from = format!("{}..", n - 4);
    let r = run(
        "dump",
        heap,
        &["--json", "--keys", "--segments", &from, "--backing", b, c],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_high_dump(&r.json(), n);
    unchanged("pcache-dump");

    let r = run("replay", heap, &["--json", "--cache", c, "--backing", b]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let keys = u64::from(2 * HIGH_KEYS);
    let dirty: u64 = model.iter().map(|(_, d)| d.len() as u64).sum();
    for (k, want) in [
        // Normal ksets; dump's `ksets` counts the LAST one too.
        ("ksets", 2),
        ("last_ksets", 1),
        ("keys", keys),
        ("stale_keys", 0),
        ("live_extents", keys),
        ("cached_bytes", dirty),
        ("dirty_bytes", dirty),
        ("segs_used", 3),
    ] {
        assert_eq!(v[k].as_u64(), Some(want), "{k}: {v:#}");
    }
    assert_eq!(v["n_segs"], n);
    assert_eq!(v["key_head"], high_head(n));
    unchanged("pcache-replay");

    let r = run(
        "replay",
        heap,
        &["--cache", c, "--backing", b, "--export", e],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The text counts the LAST ksets among the ksets, as pcache-dump does.
    assert!(
        r.stdout.contains("replayed 3 ksets (1 LAST)"),
        "{}",
        r.stdout
    );
    unchanged("pcache-replay --export");
    let out = std::fs::read(&export).unwrap();
    assert_eq!(out.len() as u64, HIGH_BACKING);
    let mut expect = vec![0u8; out.len()];
    for (off, data) in &model {
        expect[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    assert!(
        out == expect,
        "the export is not the backing device overlaid with the keys"
    );
}

#[test]
fn tools_on_the_largest_practical_cache_file() {
    // 16 384 segments and 4 095 bytes past the last one.
    tools_on_a_cache_file(layout::segment_base(FILE_SEGS) + 4095);
}

/// As [`tools_on_the_largest_practical_cache_file`], on ext4's largest file (1 048 575
/// segments): formatting it writes 16 GiB, and a run needs about 8 GiB of page tables and
/// a quarter of an hour in a debug build (at 262 144 segments, measured: `pcache-mkfs`
/// 124 s, a cold `pcache-fsck` 56 s, each fault of the metadata a random 4 KiB read).
#[test]
#[ignore = "writes 16 GiB, needs 8 GiB of page tables, about 15 minutes"]
fn tools_on_the_largest_cache_file_ext4_holds() {
    tools_on_a_cache_file(EXT4_MAX_FILE);
}

/// One-key ksets a log segment holds: 64 bytes each, with room for a LAST kset after.
const ONE_KEY_KSETS_PER_SEG: u64 = (SEG_DATA_SIZE as u64 - 24) / 64;

/// The binaries on a 512 MiB cache whose log of one-key ksets fills it (writes of `len`
/// bytes), against the known answer: `n` writes are `n` ksets of one key over
/// `⌈n / 261 951⌉` log segments chained by LAST ksets, the data segments full, one
/// segment (the log's reserve) free.
fn tools_on_a_cache_filled_with_one_key_ksets(len: u32) {
    let _serial = serial();
    const CACHE: u64 = 512 << 20;
    let media = Arc::new(formatted(CACHE));
    let cfg = CacheConfig {
        background: false,
        ..CacheConfig::default()
    };
    let dev = FILL_BACKING;
    let cache = Cache::open(media.clone(), Arc::new(MemBacking::new(dev)), cfg).unwrap();
    let t = Instant::now();
    let n = fill_one_key_ksets(&cache, len, u64::MAX).unwrap();
    let written = cache.status();
    println!(
        "{n} one-key ksets of {len}-byte writes in {:?}",
        t.elapsed()
    );
    cache.close().unwrap();
    drop(cache);
    let log_segs = n.div_ceil(ONE_KEY_KSETS_PER_SEG);
    let lasts = log_segs - 1;
    assert_eq!(
        n,
        (30 - log_segs) * u64::from(SEG_DATA_SIZE / len),
        "the data segments are full"
    );
    assert_eq!(written.space_waits, 0, "nothing was reclaimed");
    let k = written.kernel;
    assert_eq!(
        (k.segs_used, k.key_tail, k.dirty_tail),
        (30, CachePos::new(0, 0), CachePos::new(0, 0))
    );
    assert_eq!(
        u64::from(k.key_head.off),
        64 * (n - lasts * ONE_KEY_KSETS_PER_SEG)
    );
    let head = k.key_head.to_string();

    // The library, counted: a check keeps nothing per kset; the strict open the index.
    let m: &dyn CacheMedia = &*media;
    let opts = FsckOptions {
        backing_size: Some(dev),
        ..FsckOptions::default()
    };
    let (r, bytes) = measured(|| fsck::check(m, &opts).unwrap());
    println!("fsck::check: {bytes} bytes at the peak");
    assert_eq!((r.exit_code, r.errors, r.warnings), (exit::CLEAN, 0, 0));
    // Its summary: every kset (the LAST ones too), one key in each normal one, all dirty.
    let log = r.log.unwrap();
    assert_eq!(
        (log.ksets, log.keys, log.live_keys, log.dirty_keys),
        (n + lasts, n, n, n)
    );
    assert!(
        bytes <= CHECK_PER_SEGMENT * 31 + PER_KEY * n,
        "{bytes} bytes"
    );
    let (scan, bytes) =
        measured(|| pcache_tools::scan(m, &DumpOptions::default().scan_options()).unwrap());
    println!(
        "dump's scan, every kset listed: {bytes} bytes at the peak ({} per kset)",
        bytes / n
    );
    assert_eq!(
        scan.log.as_ref().map(|l| l.listed.len() as u64),
        Some(n + lasts)
    );
    let bound = CHECK_PER_SEGMENT * 31 + SCAN_PER_KSET * (n + lasts);
    assert!(bytes <= bound, "{bytes} bytes");
    drop(scan);

    let dir = tempfile::tempdir().unwrap();
    let [cache, backing, export] =
        ["cache.img", "backing.img", "export.img"].map(|f| dir.path().join(f));
    let [c, b, e] = [&cache, &backing, &export].map(|p| p.to_str().unwrap());
    {
        let f = std::fs::File::create(&cache).unwrap();
        f.set_len(CACHE).unwrap();
        let mut buf = vec![0; 1 << 20];
        for off in (0..CACHE).step_by(buf.len()) {
            media.read(off, &mut buf).unwrap();
            if buf.iter().any(|&x| x != 0) {
                f.write_all_at(&buf, off).unwrap();
            }
        }
    }
    drop(media);
    sparse(&backing, dev);
    let (before, back) = (digest(&cache), digest(&backing));
    let unchanged = |tool: &str| {
        assert_eq!(digest(&cache), before, "{tool} changed the cache");
        assert_eq!(digest(&backing), back, "{tool} changed the backing device");
    };

    let heap = BINARY_BASE + BINARY_PER_SEGMENT * 31 + BINARY_PER_KEY * n;
    let r = run("fsck", heap, &["--json", "--backing", b, c]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let v = r.json();
    assert_eq!(
        (v["verdict"].as_str(), v["errors"].as_u64()),
        (Some("clean"), Some(0))
    );
    assert_eq!(
        v["status_line"],
        format!("0 31 31 30 70 1182 {head} 0:0 0:0")
    );
    unchanged("pcache-fsck");

    let dump_heap = BINARY_BASE + DUMP_PER_SEGMENT * 31 + DUMP_PER_KSET * (n + lasts);
    let r = run("dump", dump_heap, &["--json", "--backing", b, c]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let log = &v["log"];
    for (k, want) in [
        ("ksets", n + lasts),
        ("last_hops", lasts),
        ("keys", n),
        ("live_keys", n),
        ("dirty_keys", n),
        ("stale_keys", 0),
        ("invalid_keys", 0),
        ("segs_used", 30),
    ] {
        assert_eq!(log[k].as_u64(), Some(want), "{k}");
    }
    let listed = log["listed"].as_array().unwrap();
    assert_eq!(listed.len() as u64, n + lasts);
    let one_key = listed.iter().filter(|k| k["key_num"] == 1).count() as u64;
    assert_eq!(one_key, n, "every normal kset holds one key");
    let roles = |r: &str| {
        v["chain"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["role"] == r)
            .count() as u64
    };
    assert_eq!(
        (roles("log"), roles("data"), roles("free")),
        (log_segs, 30 - log_segs, 1)
    );
    drop(v);
    unchanged("pcache-dump");

    let r = run("replay", heap, &["--json", "--cache", c, "--backing", b]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let bytes = n * u64::from(len);
    for (k, want) in [
        ("ksets", n),
        ("last_ksets", lasts),
        ("keys", n),
        ("stale_keys", 0),
        ("live_extents", n),
        ("cached_bytes", bytes),
        ("dirty_bytes", bytes),
        ("segs_used", 30),
    ] {
        assert_eq!(v[k].as_u64(), Some(want), "{k}");
    }
    assert_eq!(v["key_head"], head);
    unchanged("pcache-replay");

    let r = run(
        "replay",
        heap,
        &["--cache", c, "--backing", b, "--export", e],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    unchanged("pcache-replay --export");
    let out = std::fs::File::open(&export).unwrap();
    assert_eq!(out.metadata().unwrap().len(), dev);
    let mut got = vec![0; 2 * len as usize];
    for i in (0..n).step_by(211).chain([n - 1]) {
        // The write, and the gap after it (never written).
        out.read_exact_at(&mut got, fill_offset(i, len)).unwrap();
        assert!(got[..len as usize] == fill_data(i, len), "write {i}");
        assert!(
            got[len as usize..].iter().all(|&x| x == 0),
            "after write {i}"
        );
    }
}

#[test]
fn tools_on_a_cache_filled_with_one_key_ksets_of_4k() {
    tools_on_a_cache_filled_with_one_key_ksets(4096);
}

/// The most ksets a 512 MiB cache holds: 851 344, over four log segments.
#[test]
#[ignore = "about 10 s in a debug build: 851 344 ksets, a 138 MB dump"]
fn tools_on_a_cache_filled_with_one_key_ksets_of_512_bytes() {
    tools_on_a_cache_filled_with_one_key_ksets(512);
}
