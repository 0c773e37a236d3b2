//! What the image targets check on an image.
//!
//! [`open`] (targets `open_raw`, `open_patch`): pcache's strict open (read-only, as
//! `pcache-ublk add` and fsck's second verdict open it), reads of everything it indexed,
//! a salvage open, the report-mode load, and a read-write open with a small workload.
//! Properties: nothing panics; whatever a strict open accepts reads back without error,
//! a salvage of it loses nothing and presents the same data, and a read-write open of it
//! works like a block device.
//!
//! [`fsck`] (targets `fsck_raw`, `fsck_patch`): fsck and dump, against the strict open.
//! Properties: fsck never exits 0 on an image the strict open refuses for damage (as the
//! `pcache-fsck` binary composes its two verdicts, and — bar the divergences
//! `docs/tools.md` documents — from the findings alone); the strict open never accepts an
//! image whose findings say the kernel refuses it, bar the same; scan and fsck agree;
//! dump's JSON is JSON; a repair settles, never adds errors, and never changes what the
//! strict open presents.

use crate::backing::SparseBacking;
use crate::media_of;
use pcache_engine::backing::Backing;
use pcache_engine::media::MemMedia;
use pcache_engine::{Cache, CacheConfig, EngineError};
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::testimg::SparseImage;
use pcache_tools::ScanOptions;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::Arc;

/// Bytes read back after an open, at most.
const READ_BUDGET: u64 = 16 << 20;

/// Opens the cache read-only the way `pcache-fsck` asks whether pcache would load it
/// (`fsck::verdict::refuses`): data_crc as cache_info says, one queue, no workers.
///
/// # Errors
/// Why pcache refuses the cache.
pub fn open_ro(
    media: Arc<MemMedia>,
    backing: Arc<dyn Backing>,
    salvage: bool,
) -> pcache_engine::Result<Cache> {
    let data_crc = Cache::peek_info(&*media)?.is_some_and(|i| i.data_crc);
    let cfg = CacheConfig {
        data_crc,
        queues: 1,
        background: false,
        read_only: true,
        salvage,
        ..CacheConfig::default()
    };
    Cache::open(media, backing, cfg)
}

/// What an open cache presents: its dirty extents and a hash of their bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented {
    /// The dirty extents.
    pub extents: Vec<(u64, u32)>,
    /// A hash of the extents and their bytes (as far as the read budget goes).
    pub hash: u64,
}

/// Reads what the cache indexed (the dirty extents, up to [`READ_BUDGET`] bytes) and a
/// few ranges of the logical device, through `read` and `read_with`.
///
/// # Panics
/// A read fails: the open accepted the cache, so everything it indexed must read.
#[must_use]
pub fn presented(c: &Cache, what: &str) -> Presented {
    let extents = c.dirty_extents();
    let mut h = DefaultHasher::new();
    let mut budget = READ_BUDGET;
    let size = c.size();
    let fixed = [
        (0, 8192),
        ((size / 2) & !511, 4096),
        (size.saturating_sub(4096), 4096),
    ];
    // Keys need not be sector-aligned (the kernel accepts them, fsck warns); requests
    // must be: the sectors around each extent.
    let ranges = extents
        .iter()
        .map(|&(off, len)| {
            let start = off & !511;
            let end = (off + u64::from(len)).next_multiple_of(512).min(size);
            (start, end.saturating_sub(start))
        })
        .chain(fixed.into_iter().filter(|&(o, l)| o + l <= size));
    for (off, len) in ranges {
        if len > budget {
            break;
        }
        budget -= len;
        let n = usize::try_from(len).expect("a small read");
        let mut buf = vec![0u8; n];
        if let Err(e) = c.read(0, off, &mut buf) {
            panic!(
                "{what}: reading {off:#x}+{len:#x} of an accepted cache: {}",
                chain(&e)
            );
        }
        let mut pieced = vec![0u8; n];
        let res = c.read_with(0, off, n, &mut |at, bytes| {
            let at = usize::try_from(at).expect("small");
            pieced[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        });
        if let Err(e) = res {
            panic!("{what}: read_with {off:#x}+{len:#x}: {}", chain(&e));
        }
        assert!(
            pieced == buf,
            "{what}: read and read_with differ at {off:#x}+{len:#x}"
        );
        h.write_u64(off);
        h.write(&buf);
    }
    let _ = format!("{:?}", c.status());
    let _ = c.is_cached(0, 4096);
    Presented {
        extents,
        hash: h.finish(),
    }
}

/// An error and its causes, on one line.
#[must_use]
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The strict open's verdict: what it presents, or why it refuses.
fn strict(img: &SparseImage, backing_size: u64) -> Result<Presented, EngineError> {
    let backing: Arc<dyn Backing> = Arc::new(SparseBacking::new(backing_size));
    let c = open_ro(media_of(img), backing, false)?;
    let p = presented(&c, "strict open");
    c.close().expect("closing a read-only cache");
    Ok(p)
}

/// A refusal that says the image is damaged (not merely unformatted: a read-only open of
/// a superblock with no cache behind it refuses, the kernel and a read-write open format
/// it).
fn damaged(e: &EngineError) -> bool {
    !matches!(e, EngineError::NotFormatted)
}

/// The `open_*` targets' checks.
pub fn open(img: &SparseImage, backing_size: u64) {
    let strict = strict(img, backing_size);
    // Salvage: everything a strict open accepts, it accepts, whole, with the same data.
    let backing: Arc<dyn Backing> = Arc::new(SparseBacking::new(backing_size));
    match open_ro(media_of(img), backing, true) {
        Ok(c) => {
            let salvaged = presented(&c, "salvage open");
            if let Ok(p) = &strict {
                // A damaged kset at the end of the log, which a strict open takes for a
                // torn write, a salvage repairs or skips, and goes on with the log behind
                // it (whose keys may fail): then the two replay different logs.
                let r = c.salvage_report();
                if r.damaged_ksets.is_empty() {
                    assert!(
                        r.skipped_keys.is_empty(),
                        "salvage skips keys of a log strict open accepts: {r:?}"
                    );
                    assert_eq!(&salvaged, p, "salvage presents other data than strict open");
                }
            }
        }
        Err(e) => {
            if strict.is_ok() {
                panic!("salvage refuses what strict open accepts: {}", chain(&e));
            }
        }
    }
    // Report mode: never fails on an in-memory image, never panics.
    let opts = ScanOptions {
        keys: true,
        backing_size: Some(backing_size),
        ..ScanOptions::default()
    };
    let scan = pcache_engine::report::scan(img, &opts).expect("an in-memory image reads");
    let _ = serde_json::to_string(&scan).expect("a scan serialises");
    read_write(img, backing_size, strict.is_ok());
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 512) as u8).wrapping_mul(31) ^ (i as u8) | 1)
        .collect()
}

/// A read-write open: formats an unformatted cache, replays a formatted one. Where a
/// read-only open accepted the image, this must too, and then work like a block device.
fn read_write(img: &SparseImage, backing_size: u64, ro_accepted: bool) {
    let media = media_of(img);
    let backing = Arc::new(SparseBacking::new(backing_size));
    let info = Cache::peek_info(&*media);
    let data_crc = info
        .as_ref()
        .ok()
        .and_then(|i| i.as_ref())
        .is_some_and(|i| i.data_crc);
    let cfg = CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        ..CacheConfig::default()
    };
    let c = match Cache::open(media.clone(), backing.clone(), cfg) {
        Ok(c) => c,
        Err(e) => {
            // A cache too small to cache writes opens read-only only.
            let too_small = matches!(e, EngineError::TooFewSegments { .. });
            assert!(
                !ro_accepted || too_small,
                "a read-write open refuses what a read-only open accepts: {}",
                chain(&e)
            );
            return;
        }
    };
    let size = c.size();
    let mut writes = Vec::new();
    for (i, (off, len)) in [
        (0, 8192u64),
        ((size / 3) & !4095, 4096),
        ((size / 2) & !511, 512),
    ]
    .into_iter()
    .enumerate()
    {
        if off + len > size {
            continue;
        }
        let data = pattern(i as u8, len as usize);
        if let Err(e) = c.write(i as u32, off, &data, i == 1) {
            panic!("write {off:#x}+{len:#x}: {}", chain(&e));
        }
        writes.push((off, data));
    }
    let verify = |c: &Cache, when: &str| {
        for (off, data) in &writes {
            let mut buf = vec![0u8; data.len()];
            if let Err(e) = c.read(0, *off, &mut buf) {
                panic!("{when}: reading back {off:#x}: {}", chain(&e));
            }
            assert!(
                &buf == data,
                "{when}: {off:#x} does not read back what was written"
            );
        }
    };
    verify(&c, "after the writes");
    if let Err(e) = c.flush() {
        panic!("flush: {}", chain(&e));
    }
    if let Err(e) = c.writeback_all() {
        panic!("writeback: {}", chain(&e));
    }
    verify(&c, "after writeback");
    c.close().expect("close");
    drop(c);
    // What the backing device holds now is what was written.
    for (off, data) in &writes {
        let mut buf = vec![0u8; data.len()];
        backing.read_at(*off, &mut buf).expect("backing read");
        assert!(
            &buf == data,
            "the backing device lacks the write at {off:#x} after writeback"
        );
    }
    let c = match open_ro(media, backing, false) {
        Ok(c) => c,
        Err(e) => panic!("reopening what the engine closed: {}", chain(&e)),
    };
    verify(&c, "after reopening");
    let _ = presented(&c, "reopened");
}

/// The `fsck_*` targets' checks.
pub fn fsck(img: &SparseImage, backing_size: u64) {
    let opts = FsckOptions {
        backing_size: Some(backing_size),
        ..FsckOptions::default()
    };
    let r = fsck::check(img, &opts).expect("an in-memory image reads");
    let _ = fsck::text(&r, "fuzz");
    json_ok(&fsck::json(&r, "fuzz"));
    // Dump: everything, and a window of it.
    for d in [
        DumpOptions {
            keys: true,
            backing_size: Some(backing_size),
            ..DumpOptions::default()
        },
        DumpOptions {
            keys: true,
            segments: Some(1..3),
            max_ksets: Some(2),
            backing_size: None,
        },
    ] {
        let s = pcache_tools::scan(img, &d.scan_options()).expect("an in-memory image reads");
        if d.segments.is_none() {
            assert_eq!(
                s.findings.errors(),
                r.errors,
                "dump and fsck count other errors"
            );
            assert_eq!(s.findings.kernel_refuses(), r.kernel_refuses);
        }
        let _ = dump::text(&s, "fuzz");
        json_ok(&dump::json(&s, "fuzz"));
    }
    let strict = strict(img, backing_size);
    verdicts(&r, strict.as_ref().err());
    if !r.findings.repairs().is_empty() {
        repair(img, &opts, &r, strict.as_ref().ok());
    }
}

fn json_ok(s: &str) {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(s) {
        panic!("not JSON ({e}): {s}");
    }
}

/// A documented difference between the kernel's verdict (the findings) and pcache's
/// (`docs/tools.md`, "Two verdicts"): pcache is stricter about a key that crosses a 4 MiB
/// boundary (the findings only warn of it).
fn pcache_stricter(r: &fsck::Report) -> bool {
    r.findings
        .list
        .iter()
        .any(|f| f.code == "key_odd" && f.message.contains("4 MiB"))
}

/// The other documented difference: pcache is more tolerant of a stale key with bad data
/// (the kernel checks the CRC before the generation). True when every refusal in the
/// findings is that.
fn pcache_more_tolerant(r: &fsck::Report) -> bool {
    r.findings.omitted.keys().all(|c| *c == "key_data_crc")
        && r.findings
            .list
            .iter()
            .filter(|f| f.kernel_refuses)
            .all(|f| f.code == "key_data_crc" && f.message.contains("stale"))
}

/// fsck's exit and pcache's strict open agree.
fn verdicts(r: &fsck::Report, refusal: Option<&EngineError>) {
    let mut binary = r.clone();
    // As the binary composes its verdicts (pcache-fsck.rs).
    if r.status.is_some() || r.kernel_refuses {
        fsck::verdict::apply(&mut binary, refusal.map(|e| chain(e)));
    }
    if let Some(e) = refusal.filter(|e| damaged(e)) {
        assert_ne!(
            binary.exit_code,
            exit::CLEAN,
            "pcache-fsck exits 0 on an image pcache refuses: {}\n{}",
            chain(e),
            fsck::text(r, "fuzz")
        );
        if !pcache_stricter(r) {
            assert_ne!(
                r.exit_code,
                exit::CLEAN,
                "the findings call clean an image pcache refuses: {}\n{}",
                chain(e),
                fsck::text(r, "fuzz")
            );
        }
    }
    if r.kernel_refuses && refusal.is_none() && !pcache_more_tolerant(r) {
        panic!(
            "pcache loads an image the findings say the kernel refuses:\n{}",
            fsck::text(r, "fuzz")
        );
    }
}

/// `--repair` settles in one pass, never adds errors, and never changes what pcache's
/// strict open presents.
fn repair(img: &SparseImage, opts: &FsckOptions, r: &fsck::Report, before: Option<&Presented>) {
    let mut fixed = img.clone();
    let opts = FsckOptions {
        repair: true,
        ..*opts
    };
    let r1 = fsck::check_and_repair(&mut fixed, &opts).expect("an in-memory image");
    assert!(
        r1.exit_code & exit::CORRECTED != 0,
        "a repair was offered and not made"
    );
    assert!(
        r1.findings.repairs().is_empty(),
        "repairs left after repairing: {:?}",
        r1.findings.list
    );
    // A check that found no valid cache_info (missing, or never initialised) stops
    // there: a repair that moves the copy kernels 6.18.0-6.18.3 misplaced lets it read
    // what lies behind, damage included.
    let moved = r
        .findings
        .find("old_618_stride")
        .is_some_and(|f| f.repair.is_some());
    assert!(r1.errors <= r.errors || moved, "a repair added errors");
    let after = strict(&fixed, opts.backing_size.unwrap_or(0));
    if let Some(p) = before {
        match after {
            Ok(q) => assert_eq!(&q, p, "a repair changed what pcache presents"),
            Err(e) => panic!("pcache refuses a repaired image it accepted: {}", chain(&e)),
        }
    }
}
