//! Tests of the daemon's pieces: device parameters, feature flags, the lifecycle, and
//! `serve` up to the point where it needs the ublk driver (and, where the driver is
//! loaded, a RAM device end to end).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use pcache_engine::format::fresh;
use pcache_engine::format::layout::{self, SB_OFF};

/// What a reporter saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Live(u32, String),
    Failed(String),
}

struct ChanReporter(mpsc::Sender<Seen>);

impl Reporter for ChanReporter {
    fn live(&mut self, dev_id: u32, path: &str) {
        let _ = self.0.send(Seen::Live(dev_id, path.to_owned()));
    }
    fn failed(&mut self, err: &Error) {
        let _ = self.0.send(Seen::Failed(crate::error::chain(err)));
    }
}

fn new_life() -> (Arc<Lifecycle>, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    (Lifecycle::new(Box::new(ChanReporter(tx))), rx)
}

const CACHE: u64 = 512 << 20;
const BACKING: u64 = 32 << 20;

/// A formatted (superblock only, as pcache-mkfs leaves it) sparse cache file and a
/// backing file.
fn devices(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let cache = dir.path().join("cache.img");
    let backing = dir.path().join("backing.img");
    let f = std::fs::File::create(&cache).unwrap();
    f.set_len(CACHE).unwrap();
    let n = layout::seg_num_for_device(CACHE).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &fresh::superblock(n), SB_OFF).unwrap();
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(BACKING)
        .unwrap();
    (cache, backing)
}

fn plan(cache: &Path, backing: &Path, data_crc: Option<bool>) -> Plan {
    Plan {
        mode: Mode::Add { id: None },
        backend: Backend::Cache {
            cache: cache.to_owned(),
            name: None,
            range: None,
            backing: backing.to_owned(),
            data_crc,
        },
        queues: 2,
        depth: 16,
        workers: 2,
        no_user_copy: false,
        zero_copy: false,
        tuning: Tuning::default(),
    }
}

fn skip_if_ublk(test: &str) -> bool {
    if ublk_available() {
        eprintln!("skipping {test}: the ublk driver is loaded, and this test expects it not to be");
        true
    } else {
        false
    }
}

#[test]
fn params_advertise_cache_fua_discard_and_block_sizes() {
    let p = device_params(10 << 30, IO_BUF_BYTES);
    assert_eq!(
        p.types,
        sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD
    );
    assert_ne!(p.basic.attrs & sys::UBLK_ATTR_VOLATILE_CACHE, 0);
    assert_ne!(p.basic.attrs & sys::UBLK_ATTR_FUA, 0);
    assert_eq!(p.basic.attrs & sys::UBLK_ATTR_READ_ONLY, 0);
    assert_eq!(
        (p.basic.logical_bs_shift, p.basic.physical_bs_shift),
        (9, 12)
    );
    assert_eq!(p.basic.dev_sectors, (10 << 30) / 512);
    assert_eq!(p.basic.max_sectors, IO_BUF_BYTES / 512);
    assert!(p.discard.max_discard_sectors > 0);
    assert!(p.discard.max_write_zeroes_sectors > 0);
    assert_eq!(p.discard.max_discard_segments, 1);
    assert_eq!(p.discard.discard_granularity, 4096);
}

#[test]
fn only_features_the_driver_has_are_asked_for() {
    assert_eq!(ctrl_flags(0), 0);
    let all = u64::from(
        sys::UBLK_F_USER_RECOVERY
            | sys::UBLK_F_USER_RECOVERY_REISSUE
            | sys::UBLK_F_USER_COPY
            | sys::UBLK_F_UNPRIVILEGED_DEV
            | sys::UBLK_F_ZONED,
    );
    let want = u64::from(
        sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE | sys::UBLK_F_USER_COPY,
    );
    assert_eq!(ctrl_flags(all), want);
    // An old driver without user copy: recovery only, copy mode.
    let old = u64::from(sys::UBLK_F_USER_RECOVERY);
    assert_eq!(ctrl_flags(old), old);
}

#[test]
fn state_names_cover_the_kernel_states() {
    assert_eq!(state_name(sys::UBLK_S_DEV_LIVE), "LIVE");
    assert_eq!(state_name(sys::UBLK_S_DEV_QUIESCED), "QUIESCED");
    assert_eq!(state_name(sys::UBLK_S_DEV_DEAD), "DEAD");
    assert_eq!(state_name(99), "UNKNOWN");
}

#[test]
fn recover_refuses_other_devices_than_those_served() {
    let old = TargetData {
        cache: Some("/dev/pmem0".into()),
        cache_name: None,
        backing: Some("/dev/vdb".into()),
        data_crc: true,
        queues: 2,
        depth: 64,
        copy_mode: CopyMode::Buffer,
        workers: 0,
        size: 1 << 30,
        ram_target: None,
        seq_cutoff_read: 0,
        seq_cutoff_write: 0,
        writeback_percent: 0,
    };
    let backend = |c: &str, b: &str| Backend::Cache {
        cache: c.into(),
        name: None,
        range: None,
        backing: b.into(),
        data_crc: None,
    };
    check_same_devices(Some(&old), &backend("/dev/pmem0", "/dev/vdb")).unwrap();
    let err = check_same_devices(Some(&old), &backend("/dev/pmem1", "/dev/vdb")).unwrap_err();
    assert!(err.to_string().contains("/dev/pmem0"), "{err}");
    assert!(check_same_devices(Some(&old), &backend("/dev/pmem0", "/dev/vdc")).is_err());
    // Without a record the command line is trusted.
    check_same_devices(None, &backend("/dev/x", "/dev/y")).unwrap();
}

#[test]
fn a_stop_before_the_device_exists_interrupts_the_start() {
    let (life, rx) = new_life();
    life.request_stop();
    assert!(life.stop_pending());
    life.report_failure(&Error::Interrupted);
    assert_eq!(
        rx.try_recv().unwrap(),
        Seen::Failed(Error::Interrupted.to_string())
    );
    // Reported once only.
    life.report_failure(&Error::NoUblkDriver);
    assert!(rx.try_recv().is_err());
}

#[test]
fn going_live_reports_the_device_once() {
    let (life, rx) = new_life();
    life.created(3);
    life.went_live(3, None);
    assert_eq!(rx.try_recv().unwrap(), Seen::Live(3, "/dev/ublkb3".into()));
    life.report_failure(&Error::NoUblkDriver);
    assert!(rx.try_recv().is_err());
}

/// A hash of the whole file, to show a refusal changed nothing.
fn hash_file(p: &Path) -> u64 {
    use std::hash::Hasher;
    use std::io::Read;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0_u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    h.finish()
}

/// Activates the superblock-only cache once (the engine formats it with `data_crc`) and
/// closes it, as a cache that has been served before.
fn activate(cache: &Path, backing: &Path, data_crc: bool) {
    let t = crate::engine::EngineTarget::open(cache, None, backing, data_crc, 1, Tuning::default())
        .unwrap();
    t.close().unwrap();
}

/// Serves `plan` where it must be refused: returns the error, after checking that the
/// refusal was reported and that neither device changed.
fn refused(plan: Plan, cache: &Path, backing: &Path) -> Error {
    let before = (hash_file(cache), hash_file(backing));
    let (life, rx) = new_life();
    let err = serve(plan, &life).unwrap_err();
    assert!(
        matches!(rx.try_recv().unwrap(), Seen::Failed(_)),
        "the refusal was not reported"
    );
    assert_eq!(
        (hash_file(cache), hash_file(backing)),
        before,
        "refused with {err}, but a device changed"
    );
    err
}

#[test]
fn without_the_driver_add_is_refused_before_anything_is_written() {
    if skip_if_ublk("without_the_driver_add_is_refused_before_anything_is_written") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(&dir);
    for data_crc in [None, Some(true), None] {
        // Claims and the format check pass; the driver is missing; the cache (only a
        // superblock here, which the engine's open would format) is not touched. The
        // later rounds prove the claims were released.
        let err = refused(plan(&cache, &backing, data_crc), &cache, &backing);
        assert!(matches!(err, Error::NoUblkDriver), "{err}");
        assert!(err.to_string().contains("ublk-control"), "{err}");
    }
    activate(&cache, &backing, true);
    let err = refused(plan(&cache, &backing, None), &cache, &backing);
    assert!(matches!(err, Error::NoUblkDriver), "{err}");
}

#[test]
fn data_crc_is_read_from_the_cache_and_a_contradiction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(&dir);
    // A superblock only: nothing is settled yet, the command line decides.
    assert!(!check_cache(&cache, None).unwrap());
    assert!(check_cache(&cache, Some(true)).unwrap());
    activate(&cache, &backing, false);
    assert!(!check_cache(&cache, None).unwrap());
    assert!(!check_cache(&cache, Some(false)).unwrap());
    let err = refused(plan(&cache, &backing, Some(true)), &cache, &backing);
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("holds data_crc off"), "{msg}");

    let dir2 = tempfile::tempdir().unwrap();
    let (cache2, backing2) = devices(&dir2);
    activate(&cache2, &backing2, true);
    assert!(check_cache(&cache2, None).unwrap());
    let err = refused(plan(&cache2, &backing2, Some(false)), &cache2, &backing2);
    assert!(err.to_string().contains("holds data_crc on"), "{err}");
}

#[test]
fn bad_devices_are_refused_before_the_driver_is_looked_for_and_change_nothing() {
    use pcache_engine::claim::ClaimError;
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(&dir);
    let missing = dir.path().join("missing.img");

    let (life, rx) = new_life();
    let err = serve(plan(&cache, &missing, None), &life).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Claim(ClaimError::Device {
                role: "backing",
                ..
            })
        ),
        "{err}"
    );
    assert!(matches!(rx.try_recv().unwrap(), Seen::Failed(m) if m.contains("missing.img")));
    let (life, _rx) = new_life();
    let err = serve(plan(&missing, &backing, None), &life).unwrap_err();
    assert!(
        matches!(err, Error::Claim(ClaimError::Device { role: "cache", .. })),
        "{err}"
    );
    assert!(!missing.exists(), "a missing device was created");

    // An unformatted cache: refused, with how to format it.
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(CACHE)
        .unwrap();
    let err = refused(plan(&blank, &backing, None), &blank, &backing);
    assert!(matches!(err, Error::Unusable { .. }), "{err}");
    assert!(err.to_string().contains("pcache-mkfs"), "{err}");

    // A damaged superblock.
    let bad = dir.path().join("bad.img");
    std::fs::copy(&cache, &bad).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff; 8], SB_OFF + 8).unwrap();
    let err = refused(plan(&bad, &backing, None), &bad, &backing);
    assert!(matches!(err, Error::Open { .. }), "{err}");
    // The engine's error is kept with its own cause: the chain says what is wrong.
    let msg = crate::error::chain(&err);
    assert!(
        msg.starts_with(&format!("cache engine: {}: ", bad.display())),
        "{msg}"
    );
    assert!(msg.ends_with("bad magic 0xffffffffffffffff"), "{msg}");

    // The same file as cache and backing.
    let err = refused(plan(&cache, &cache, None), &cache, &backing);
    assert!(
        matches!(err, Error::Claim(ClaimError::SameDevice { .. })),
        "{err}"
    );
}

#[test]
fn a_device_held_by_another_writer_is_refused_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(&dir);
    // Another writer's claim (another daemon, or pcache-fsck --repair).
    let held = pcache_engine::claim::Claim::exclusive("cache", &cache).unwrap();
    let err = refused(plan(&cache, &backing, None), &cache, &backing);
    let msg = err.to_string();
    assert!(msg.contains("is in use by"), "{msg}");
    assert!(
        msg.contains(&format!("(pid {})", std::process::id())),
        "{msg}"
    );
    drop(held);
    // A reader (pcache-dump) holds it: a writer may not start under it either.
    let _reader = pcache_engine::claim::Claim::shared("backing", &backing).unwrap();
    let err = refused(plan(&cache, &backing, None), &cache, &backing);
    assert!(err.to_string().contains("reading it"), "{err}");
}

#[test]
fn ram_device_end_to_end_through_ublk() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    if !ublk_available() {
        eprintln!("skipping ram_device_end_to_end_through_ublk: {UBLK_CONTROL} is absent");
        return;
    }
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        eprintln!("skipping ram_device_end_to_end_through_ublk: needs root for {UBLK_CONTROL}");
        return;
    }
    let (life, rx) = new_life();
    let plan = Plan {
        mode: Mode::Add { id: None },
        backend: Backend::Ram { size: 64 << 20 },
        queues: 2,
        depth: 32,
        workers: 2,
        no_user_copy: false,
        zero_copy: false,
        tuning: Tuning::default(),
    };
    let l2 = Arc::clone(&life);
    let server = std::thread::spawn(move || serve(plan, &l2));
    let path = match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        Seen::Live(_, path) => path,
        Seen::Failed(m) => panic!("device did not start: {m}"),
    };
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    // An O_DIRECT buffer: 4 KiB aligned inside a larger allocation.
    let mut raw = vec![0_u8; 3 * 4096];
    let off = raw.as_ptr().align_offset(4096);
    let data: Vec<u8> = (0..4096_u32).map(|i| (i % 253) as u8).collect();
    raw[off..off + 4096].copy_from_slice(&data);
    dev.write_all_at(&raw[off..off + 4096], 1 << 20).unwrap();
    dev.sync_all().unwrap();
    raw[off..off + 4096].fill(0);
    dev.read_exact_at(&mut raw[off..off + 4096], 1 << 20)
        .unwrap();
    assert_eq!(&raw[off..off + 4096], &data[..]);
    drop(dev);
    life.request_stop();
    server.join().unwrap().unwrap();
}

/// A shared cache device file with caches `a` and `b`, for the backing files
/// `backing-a.img` and `backing-b.img`.
fn shared_devices(dir: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let path = dir.path().join("shared.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len((2 << 20) + 2 * CACHE)
        .unwrap();
    let media: Arc<dyn CacheMedia> = Arc::new(DaxMedia::open(&path, false).unwrap());
    let mut dev = pcache_engine::shared::format(&*media, [1; 16]).unwrap();
    let mut backings = Vec::new();
    for name in ["a", "b"] {
        let b = dir.path().join(format!("backing-{name}.img"));
        std::fs::File::create(&b).unwrap().set_len(BACKING).unwrap();
        let spec = pcache_engine::shared::NewCache {
            name: name.into(),
            size: CACHE,
            backing: identify(&b).unwrap(),
            data_crc: name == "b",
            gc_percent: None,
            cache_mode: None,
            created: 0,
        };
        pcache_engine::shared::create(&media, &mut dev, spec).unwrap();
        backings.push(b);
    }
    (path, backings.remove(0), backings.remove(0))
}

fn shared_plan(cache: &Path, name: &str, backing: &Path) -> Plan {
    let mut p = plan(cache, backing, None);
    if let Backend::Cache { name: n, .. } = &mut p.backend {
        *n = Some(name.into());
    }
    p
}

#[test]
fn one_cache_of_a_shared_device_is_claimed_alone_and_checked_against_its_backing() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, ba, bb) = shared_devices(&dir);
    let mut a = shared_plan(&shared, "a", &ba).backend;
    let held_a = claim(&mut a).unwrap();
    let Backend::Cache {
        range, data_crc, ..
    } = &a
    else {
        unreachable!()
    };
    assert_eq!(*range, Some((2 << 20, CACHE)));
    assert_eq!(*data_crc, Some(false));
    // The other cache is claimed beside it, with its own data_crc.
    let mut b = shared_plan(&shared, "2", &bb).backend;
    let held_b = claim(&mut b).unwrap();
    assert!(matches!(
        &b,
        Backend::Cache {
            data_crc: Some(true),
            ..
        }
    ));
    drop(held_b);
    // The same cache twice: refused, and nothing changes.
    let err = refused(shared_plan(&shared, "a", &ba), &shared, &ba);
    assert!(err.to_string().starts_with("cache a of "), "{err}");
    drop(held_a);
    // The wrong backing device: refused, saying what differs.
    let other = dir.path().join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(2 * BACKING)
        .unwrap();
    let err = refused(shared_plan(&shared, "a", &other), &shared, &other);
    assert!(
        err.to_string()
            .contains("is not the device cache \"a\" was created for: its size is"),
        "{err}"
    );
    // No such cache; a device that is not shared.
    let err = refused(shared_plan(&shared, "c", &ba), &shared, &ba);
    assert!(err.to_string().contains("no cache named \"c\""), "{err}");
    let (plain, pb) = devices(&dir);
    let err = refused(shared_plan(&plain, "a", &pb), &plain, &pb);
    assert!(
        err.to_string().contains("not a shared cache device"),
        "{err}"
    );
}

#[test]
fn a_cache_of_a_shared_device_writes_only_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, ba, _) = shared_devices(&dir);
    let before_b = {
        let f = std::fs::read(&shared).unwrap();
        pcache_engine::format::pcache_crc(&f[(2 << 20) + CACHE as usize..])
    };
    let target = crate::engine::EngineTarget::open(
        &shared,
        Some((2 << 20, CACHE)),
        &ba,
        false,
        1,
        Tuning::default(),
    )
    .unwrap()
    .named(Some("a".into()));
    let status = crate::target::Target::status(&target);
    assert_eq!(status["cache_name"], "a");
    assert_eq!(status["cache"], shared.display().to_string());
    target.cache().write(0, 0, &[0xA5; 65536], true).unwrap();
    target.cache().close().unwrap();
    drop(target);
    let f = std::fs::read(&shared).unwrap();
    assert_eq!(
        pcache_engine::format::pcache_crc(&f[(2 << 20) + CACHE as usize..]),
        before_b
    );
    // The cache reads back through the tools' window as a kernel cache.
    let media: Arc<dyn CacheMedia> = Arc::new(DaxMedia::open(&shared, true).unwrap());
    let dev = SharedDevice::read(&*media).unwrap();
    let w = SharedDevice::window(&media, dev.entry("a").unwrap()).unwrap();
    assert!(Cache::peek_info(&w).unwrap().is_some());
}
