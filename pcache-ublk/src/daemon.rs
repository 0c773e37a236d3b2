//! The daemon: `add` and `recover`.
//!
//! Order of events (everything that can refuse comes before the first byte is written to
//! the cache, and before the ublk device exists):
//! 1. `recover` only: the ublk control device, and the old device is ours and QUIESCED;
//! 2. claim the cache and backing devices ([`claim_pair`], the claim every pcache writer
//!    takes);
//! 3. read the cache's format without writing ([`check_cache`]): formatted, and its
//!    data_crc setting (a `--data-crc` that contradicts it is refused);
//! 4. `add` only: the ublk control device is there and opens read-write, the requested
//!    id is free;
//! 5. open the target: the engine validates and replays the cache (its first write is
//!    the activation's cache_info, A1);
//! 6. create the ublk device (or, for `recover`, start user recovery on the old one), set
//!    its parameters and start the queue threads;
//! 7. once `/dev/ublkbN` is live: write the run record, open the control socket, report
//!    to whoever waits ([`Reporter`]);
//! 8. on SIGTERM/SIGINT or a `stop` request: stop the ublk device (the kernel drains the
//!    in-flight requests and the queue threads return), close the target (the engine
//!    closes its ksets and stops its workers: dirty data stays in the cache), delete the
//!    ublk device, remove the run files.
//!
//! A daemon that dies without step 8 leaves the device quiesced (`UBLK_F_USER_RECOVERY`):
//! I/O waits in the kernel until `recover` attaches a new daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{sys, UblkFlags};

use crate::cli::Backend;
use crate::engine::{EngineTarget, Tuning};
use crate::error::{describe_ublk, ublk, Error};
use crate::state::{self, CopyMode, RunRecord, TargetData};
use crate::target::{MemTarget, Target};
use crate::unflushed::{Guarded, Unflushed};
use crate::zero_copy;
use crate::{queue, rpc};
use pcache_engine::claim::{claim_pair, Claim, RangeClaim};
use pcache_engine::format::shared::TableEntry;
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::shared::{identify, BackingMismatch, SharedDevice, SharedError};
use pcache_engine::Cache;

pub use crate::lifecycle::{
    handle_signals, Lifecycle, PipeReporter, PrintReporter, Reporter, StartReport,
};

/// The ublk control device.
pub const UBLK_CONTROL: &str = "/dev/ublk-control";

/// Per-request buffer size, which is also the largest request the kernel sends.
pub const IO_BUF_BYTES: u32 = 512 << 10;

/// The largest discard / write-zeroes request we advertise, in sectors (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = (1 << 30) >> 9;

/// How long `recover` waits for the kernel to quiesce a device whose daemon is gone.
pub const QUIESCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this process should take on a new device or an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new device, with this id or one the driver picks.
    Add {
        /// The requested id.
        id: Option<u32>,
    },
    /// Re-attach to device `id`, whose daemon died.
    Recover {
        /// The device id.
        id: u32,
    },
}

/// A validated request to serve a device.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Add or recover.
    pub mode: Mode,
    /// What to serve.
    pub backend: Backend,
    /// ublk queues (for `recover`: replaced by what the device has).
    pub queues: u16,
    /// Queue depth (for `recover`: replaced by what the device has).
    pub depth: u16,
    /// Worker threads per queue for requests that may wait for the backing device
    /// ([`crate::offload`]); 0 serves everything on the queue threads.
    pub workers: u16,
    /// Do not ask for user copy (debug: exercises the copy-mode fallback).
    pub no_user_copy: bool,
    /// Ask for zero copy (`UBLK_F_AUTO_BUF_REG`) where the cache device allows it.
    pub zero_copy: bool,
    /// The cache mode and sequential cutoffs to set.
    pub tuning: Tuning,
}

/// `/dev/ublkbN`.
pub fn bdev_path(dev_id: u32) -> String {
    format!("/dev/ublkb{dev_id}")
}

/// Whether the ublk driver is there.
pub fn ublk_available() -> bool {
    Path::new(UBLK_CONTROL).exists()
}

/// The control device is there and this process can use it (it is opened read-write to
/// add a device, which needs root).
fn require_ublk() -> Result<(), Error> {
    if !ublk_available() {
        return Err(Error::NoUblkDriver);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(UBLK_CONTROL)
        .map(drop)
        .map_err(Error::ControlDevice)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// The ublk feature flags we ask for, given what the driver supports.
pub fn ctrl_flags(driver_features: u64) -> u64 {
    let mut flags = 0;
    for f in [
        sys::UBLK_F_USER_RECOVERY,
        sys::UBLK_F_USER_RECOVERY_REISSUE,
        sys::UBLK_F_USER_COPY,
    ] {
        if driver_features & u64::from(f) != 0 {
            flags |= u64::from(f);
        }
    }
    flags
}

/// The device parameters: the backing device's size, 512-byte logical and 4 KiB physical
/// blocks, a volatile write cache with FUA, discard and write-zeroes.
pub fn device_params(dev_size: u64, max_io_bytes: u32) -> sys::ublk_params {
    sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD,
        basic: sys::ublk_param_basic {
            attrs: sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA,
            logical_bs_shift: 9,
            physical_bs_shift: 12,
            io_opt_shift: 12,
            io_min_shift: 12,
            max_sectors: max_io_bytes >> 9,
            dev_sectors: dev_size >> 9,
            ..Default::default()
        },
        discard: sys::ublk_param_discard {
            discard_alignment: 0,
            discard_granularity: 4096,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
            max_discard_segments: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An open target and the claims on its devices (held until the target is closed).
pub struct Opened {
    /// The target.
    pub target: Arc<dyn Target>,
    /// The cache and backing claims (none for the RAM target).
    pub claims: Option<(CacheClaim, Claim)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("size", &self.target.size())
            .field("claims", &self.claims)
            .finish()
    }
}

/// Claims what `backend` names (the writer's claim: no other pcache-ublk, tool or kernel
/// user may hold the cache or the backing device) and checks the cache's format without
/// writing to it, settling its data_crc setting from the media ([`check_cache`]).
///
/// # Errors
/// [`Error::Claim`] for a missing, wrong or busy device; as [`check_cache`].
pub fn claim(backend: &mut Backend) -> Result<Option<(CacheClaim, Claim)>, Error> {
    match backend {
        Backend::Ram { .. } => Ok(None),
        Backend::Cache {
            cache,
            name: None,
            backing,
            data_crc,
            ..
        } => {
            let (c, b) = claim_pair(cache, backing, true)?;
            *data_crc = Some(check_cache(cache, *data_crc)?);
            Ok(Some((CacheClaim::Whole(c), b)))
        }
        Backend::Cache {
            cache,
            name: Some(name),
            range,
            backing,
            data_crc,
        } => {
            let (claims, entry) = claim_shared(cache, name, backing)?;
            let media: Arc<dyn CacheMedia> = Arc::new(map_cache(cache)?);
            let window =
                SharedDevice::window(&media, &entry).map_err(|e| shared_error(cache, &e))?;
            *data_crc = Some(check_cache_on(&window, cache, *data_crc)?);
            *range = Some((entry.start, entry.len));
            Ok(Some(claims))
        }
    }
}

/// A claim on the cache: the whole device, or one cache's range of a shared device.
#[derive(Debug)]
pub enum CacheClaim {
    /// The whole device ([`Claim::exclusive`]).
    Whole(Claim),
    /// One cache of a shared device ([`RangeClaim`]).
    Range(RangeClaim),
}

fn shared_error(cache: &Path, e: &SharedError) -> Error {
    Error::Invalid(format!("{}: {e}", cache.display()))
}

fn map_cache(cache: &Path) -> Result<DaxMedia, Error> {
    DaxMedia::open(cache, true).map_err(|source| Error::CacheMedia {
        path: cache.to_owned(),
        source,
    })
}

/// Claims cache `name` of the shared device `cache` (its range, exclusively) and the
/// backing device, and checks that the backing device is the one the cache was created
/// for (size and stable identity), all before anything is written.
fn claim_shared(
    cache: &Path,
    name: &str,
    backing: &Path,
) -> Result<((CacheClaim, Claim), TableEntry), Error> {
    let read_entry = || -> Result<TableEntry, Error> {
        let media = map_cache(cache)?;
        let dev = SharedDevice::read(&media).map_err(|e| shared_error(cache, &e))?;
        dev.entry(name)
            .cloned()
            .map_err(|e| shared_error(cache, &e))
    };
    let entry = read_entry()?;
    let range = RangeClaim::take(cache, &entry.name, entry.start, entry.len, true)?;
    // Under the claim, the table must still say the same.
    if read_entry()? != entry {
        return Err(Error::Invalid(format!(
            "{}: cache {name} changed while it was being claimed",
            cache.display()
        )));
    }
    let b = Claim::exclusive("backing", backing)?;
    let found = identify(backing).map_err(|source| Error::Device {
        role: "backing",
        path: backing.to_owned(),
        source,
    })?;
    BackingMismatch::check(&entry.name, &entry.backing, &found, backing)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(((CacheClaim::Range(range), b), entry))
}

/// Reads the cache's format through a read-only mapping and returns its data_crc setting:
/// the media's, which `asked` (a `--data-crc` given on the command line) must match. A
/// cache whose superblock has no initialised cache_info yet (the kernel's first
/// activation formats it) takes `asked`, off by default.
///
/// # Errors
/// [`Error::CacheMedia`] if the cache cannot be mapped, [`Error::Unusable`] if it is not
/// formatted, [`Error::Open`] if its metadata is damaged, [`Error::Invalid`] if `asked`
/// contradicts it.
pub fn check_cache(cache: &Path, asked: Option<bool>) -> Result<bool, Error> {
    check_cache_on(&map_cache(cache)?, cache, asked)
}

/// As [`check_cache`], on media already mapped (`cache` names it in messages).
///
/// # Errors
/// As [`check_cache`].
pub fn check_cache_on(
    media: &dyn CacheMedia,
    cache: &Path,
    asked: Option<bool>,
) -> Result<bool, Error> {
    let info = Cache::peek_info(media).map_err(|e| crate::engine::open_error(cache, e))?;
    let on_off = |b: bool| if b { "on" } else { "off" };
    match (info.map(|i| i.data_crc), asked) {
        (Some(held), Some(asked)) if held != asked => Err(Error::Invalid(format!(
            "cache {} holds data_crc {} (set when it was formatted), not {}: drop --data-crc, \
             the cache's own setting is used",
            cache.display(),
            on_off(held),
            on_off(asked)
        ))),
        (Some(held), _) => Ok(held),
        (None, asked) => Ok(asked.unwrap_or(false)),
    }
}

/// Opens what `backend` names (claimed and checked by [`claim`]); the engine's open is
/// the first write to the cache.
///
/// # Errors
/// As [`EngineTarget::open`].
pub fn open_target(
    backend: &Backend,
    queues: u16,
    tuning: Tuning,
    claims: Option<(CacheClaim, Claim)>,
) -> Result<Opened, Error> {
    match backend {
        Backend::Ram { size } => Ok(Opened {
            target: Arc::new(MemTarget::new(*size)),
            claims,
        }),
        Backend::Cache {
            cache,
            name,
            range,
            backing,
            data_crc,
        } => {
            let data_crc = data_crc.unwrap_or(false);
            tracing::info!(cache = %cache.display(), backing = %backing.display(), data_crc, "opening the cache (replay)");
            let target =
                EngineTarget::open(cache, *range, backing, data_crc, u32::from(queues), tuning)?
                    .named(name.clone());
            Ok(Opened {
                target: Arc::new(target),
                claims,
            })
        }
    }
}

fn target_data(plan: &Plan, copy_mode: CopyMode, size: u64) -> TargetData {
    let (cache, cache_name, backing, data_crc, ram) = match &plan.backend {
        Backend::Cache {
            cache,
            name,
            backing,
            data_crc,
            ..
        } => (
            Some(absolute(cache)),
            name.clone(),
            Some(absolute(backing)),
            data_crc.unwrap_or(false),
            None,
        ),
        Backend::Ram { size } => (None, None, None, false, Some(*size)),
    };
    TargetData {
        cache,
        cache_name,
        backing,
        data_crc,
        queues: plan.queues,
        depth: plan.depth,
        copy_mode,
        workers: plan.workers,
        size,
        ram_target: ram,
        seq_cutoff_read: plan.tuning.seq_cutoff.read,
        seq_cutoff_write: plan.tuning.seq_cutoff.write,
        writeback_percent: plan.tuning.writeback_percent,
    }
}

/// What `recover` learns about the old device before touching anything.
#[derive(Debug, Clone)]
pub struct OldDevice {
    /// Queues and depth of the device.
    pub queues: u16,
    /// Queue depth.
    pub depth: u16,
    /// What it served, from libublk's JSON or our run record.
    pub served: Option<TargetData>,
}

/// Checks that device `id` exists, is one of ours, and waits for a new daemon.
///
/// # Errors
/// [`Error::NotOurs`] otherwise.
pub fn inspect_for_recovery(id: u32) -> Result<OldDevice, Error> {
    let sid = i32::try_from(id).map_err(|_| Error::Invalid(format!("bad device id {id}")))?;
    let record = state::read_record(&state::run_dir(), id).ok().flatten();
    let daemon_alive = record
        .as_ref()
        .is_some_and(|r| crate::client::pid_alive(r.pid));
    // Right after a daemon is killed the kernel may not have quiesced the device yet:
    // give it a moment while nobody serves it.
    let deadline = std::time::Instant::now() + QUIESCE_WAIT;
    let (ctrl, info) = loop {
        let ctrl = UblkCtrl::new_simple(sid).map_err(|e| Error::NotOurs {
            id,
            why: format!("cannot open it: {}", describe_ublk(&e)),
        })?;
        let info = ctrl.dev_info();
        let state = u32::from(info.state);
        if state == sys::UBLK_S_DEV_LIVE && !daemon_alive && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        break (ctrl, info);
    };
    if info.flags & u64::from(sys::UBLK_F_USER_RECOVERY) == 0 {
        return Err(Error::NotOurs {
            id,
            why: "it was created without user recovery".into(),
        });
    }
    let state = u32::from(info.state);
    if state != sys::UBLK_S_DEV_QUIESCED {
        let why = match record.as_ref().filter(|_| daemon_alive) {
            Some(r) => format!(
                "it is {} and its daemon (pid {}) is running",
                state_name(state),
                r.pid
            ),
            None => format!(
                "it is {}, not QUIESCED: only a device whose daemon died can be recovered",
                state_name(state)
            ),
        };
        return Err(Error::NotOurs { id, why });
    }
    let served = ctrl
        .get_target_data_from_json()
        .and_then(|v| TargetData::from_target_json(&v))
        .or_else(|| record.map(|r| r.target));
    Ok(OldDevice {
        queues: info.nr_hw_queues,
        depth: info.queue_depth,
        served,
    })
}

/// Refuses to attach `backend` to a device that served something else.
///
/// # Errors
/// [`Error::Invalid`] naming the mismatch.
pub fn check_same_devices(old: Option<&TargetData>, backend: &Backend) -> Result<(), Error> {
    let Some(old) = old else {
        tracing::warn!("no record of what the device served; trusting the command line");
        return Ok(());
    };
    let Backend::Cache {
        cache,
        name,
        backing,
        ..
    } = backend
    else {
        return Err(Error::Invalid("recover needs --cache and --backing".into()));
    };
    if old.cache_name != *name {
        return Err(Error::Invalid(format!(
            "the device served cache {}, not {}",
            old.cache_name.as_deref().unwrap_or("(the whole device)"),
            name.as_deref().unwrap_or("the whole device")
        )));
    }
    let same = |recorded: Option<&PathBuf>, given: &Path| match recorded {
        None => false,
        Some(r) => {
            r == &absolute(given)
                || match (std::fs::canonicalize(r), std::fs::canonicalize(given)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                }
        }
    };
    for (role, recorded, given) in [
        ("cache", old.cache.as_ref(), cache),
        ("backing", old.backing.as_ref(), backing),
    ] {
        if !same(recorded, given) {
            return Err(Error::Invalid(format!(
                "the device served {role} {}, not {}",
                recorded.map_or_else(|| "(none)".into(), |p| p.display().to_string()),
                given.display()
            )));
        }
    }
    Ok(())
}

/// A kernel device state's name.
pub fn state_name(state: u32) -> &'static str {
    match state {
        sys::UBLK_S_DEV_DEAD => "DEAD",
        sys::UBLK_S_DEV_LIVE => "LIVE",
        sys::UBLK_S_DEV_QUIESCED => "QUIESCED",
        sys::UBLK_S_DEV_FAIL_IO => "FAIL_IO",
        _ => "UNKNOWN",
    }
}

/// Serves `plan` until the device is stopped. Reports through `life` once live (or on
/// failure). Returns an error only for failures; a clean shutdown is `Ok`.
///
/// # Errors
/// Anything that stops the device from starting, or a failure to close the target.
pub fn serve(mut plan: Plan, life: &Arc<Lifecycle>) -> Result<(), Error> {
    let res = serve_inner(&mut plan, life);
    if let Err(e) = &res {
        life.report_failure(e);
    }
    res
}

fn serve_inner(plan: &mut Plan, life: &Arc<Lifecycle>) -> Result<(), Error> {
    let old = match plan.mode {
        Mode::Recover { id } => {
            require_ublk()?;
            let old = inspect_for_recovery(id)?;
            // The dead daemon's claims go with its last file descriptors; let it finish
            // exiting before claiming the devices.
            let record = state::read_record(&state::run_dir(), id).ok().flatten();
            if let Some(rec) = &record {
                if !crate::client::wait_for_exit(rec.pid, QUIESCE_WAIT) {
                    return Err(Error::NotOurs {
                        id,
                        why: format!("its daemon (pid {}) is still running", rec.pid),
                    });
                }
            }
            check_same_devices(old.served.as_ref(), &plan.backend)?;
            plan.queues = old.queues;
            plan.depth = old.depth;
            // The cutoffs and pace in effect when the daemon died: `set` keeps them in the run
            // record, `add` in both records (the mode is in the cache).
            if let Some(t) = record.as_ref().map(|r| &r.target).or(old.served.as_ref()) {
                plan.tuning.seq_cutoff = pcache_engine::SeqCutoff {
                    read: t.seq_cutoff_read,
                    write: t.seq_cutoff_write,
                };
                plan.tuning.writeback_percent = t.writeback_percent;
            }
            Some(old)
        }
        Mode::Add { .. } => None,
    };
    let claims = claim(&mut plan.backend)?;
    if let Mode::Add { id } = plan.mode {
        require_ublk()?;
        if let Some(id) = id {
            if Path::new(&format!("/dev/ublkc{id}")).exists() {
                return Err(Error::Invalid(format!(
                    "ublk device {id} already exists (see pcache-ublk list)"
                )));
            }
        }
    }
    let Opened { target, claims } = open_target(&plan.backend, plan.queues, plan.tuning, claims)?;
    let res = serve_target(plan, &target, life, old.is_some());
    life.drop_server();
    tracing::info!("closing the target");
    let closed = target.close().map_err(Error::Engine);
    drop(claims);
    match (res, closed) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => {
            tracing::info!("closed cleanly");
            Ok(())
        }
    }
}

fn build_ctrl(plan: &Plan, flags: u64) -> Result<UblkCtrl, Error> {
    let (id, dev_flags) = match plan.mode {
        Mode::Add { id } => (
            id.and_then(|i| i32::try_from(i).ok()).unwrap_or(-1),
            UblkFlags::UBLK_DEV_F_ADD_DEV,
        ),
        Mode::Recover { id } => (
            i32::try_from(id).map_err(|_| Error::Invalid(format!("bad device id {id}")))?,
            UblkFlags::UBLK_DEV_F_RECOVER_DEV,
        ),
    };
    UblkCtrlBuilder::default()
        .name(state::TARGET_TYPE)
        .id(id)
        .nr_queues(plan.queues)
        .depth(plan.depth)
        .io_buf_bytes(IO_BUF_BYTES)
        .ctrl_flags(flags)
        .dev_flags(dev_flags)
        .build()
        .map_err(ublk(match plan.mode {
            Mode::Add { .. } => "add device",
            Mode::Recover { .. } => "open device for recovery",
        }))
}

fn serve_target(
    plan: &Plan,
    target: &Arc<dyn Target>,
    life: &Arc<Lifecycle>,
    recovering: bool,
) -> Result<(), Error> {
    require_ublk()?;
    if life.stop_pending() {
        return Err(Error::Interrupted);
    }
    let size = target.size() & !511;
    if size == 0 {
        return Err(Error::Invalid(
            "the backing device is smaller than 512 bytes".into(),
        ));
    }
    // GET_FEATURES exists since Linux 6.5; older drivers have user recovery (6.0) but
    // not user copy.
    let features = UblkCtrl::get_features().unwrap_or(u64::from(
        sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE,
    ));
    let mut flags = ctrl_flags(features);
    if plan.no_user_copy {
        flags &= !u64::from(sys::UBLK_F_USER_COPY);
    }
    // Zero copy: only with user copy (everything but a staged write takes that path),
    // and only where the cache device can be written from the ring.
    let direct_fd = target.direct_fd();
    if plan.zero_copy
        && direct_fd.is_some()
        && flags & u64::from(sys::UBLK_F_USER_COPY) != 0
        && features & u64::from(sys::UBLK_F_AUTO_BUF_REG) != 0
    {
        flags |= u64::from(sys::UBLK_F_AUTO_BUF_REG);
    }
    if flags & u64::from(sys::UBLK_F_USER_RECOVERY) == 0 {
        tracing::warn!(
            "the ublk driver has no user recovery: a crashed daemon cannot be recovered"
        );
    }
    if recovering {
        let id = match plan.mode {
            Mode::Recover { id } => id,
            Mode::Add { .. } => 0,
        };
        let sid = i32::try_from(id).map_err(|_| Error::Invalid(format!("bad device id {id}")))?;
        let old = UblkCtrl::new_simple(sid).map_err(ublk("open device"))?;
        let r = old
            .start_user_recover()
            .map_err(ublk("start user recovery"))?;
        if r < 0 {
            return Err(ublk("start user recovery")(libublk::UblkError::OtherError(
                r,
            )));
        }
    }
    let ctrl = build_ctrl(plan, flags)?;
    let info = ctrl.dev_info();
    let dev_id = info.dev_id;
    life.created(dev_id);
    let mode = queue::copy_mode_of(info.flags);
    tracing::info!(dev_id, queues = info.nr_hw_queues, depth = info.queue_depth, copy_mode = %mode, size, "ublk device created");
    let data = target_data(plan, mode, size);
    let tgt_json = data.to_target_json();
    let tgt_init = move |dev: &mut UblkDev| {
        dev.set_default_params(size);
        dev.tgt.params = device_params(size, dev.dev_info.max_io_buf_bytes);
        // One more completion than requests: the poll of the workers' mailbox.
        dev.tgt.cq_depth = dev.tgt.cq_depth.saturating_add(1);
        dev.tgt.sq_depth = dev.tgt.sq_depth.saturating_add(1);
        if mode == CopyMode::ZeroCopy {
            // The cache device, for the pieces' WRITE_FIXED (crate::zero_copy), and room
            // for two pieces per request.
            if let Some(fd) = direct_fd {
                dev.tgt.fds[zero_copy::DEVICE_SLOT as usize] = fd;
                dev.tgt.nr_fds = dev.tgt.nr_fds.max(zero_copy::DEVICE_SLOT as i32 + 1);
            }
            let more = dev.dev_info.queue_depth.saturating_mul(2);
            dev.tgt.cq_depth = dev.tgt.cq_depth.saturating_add(more);
            dev.tgt.sq_depth = dev.tgt.sq_depth.saturating_add(more);
        }
        dev.set_target_json(tgt_json);
        Ok(())
    };
    // Volatile writes no FLUSH has covered yet, kept where a recovering daemon finds them.
    let run_dir = state::run_dir();
    let marker = std::fs::create_dir_all(&run_dir)
        .and_then(|()| Unflushed::open(&run_dir, dev_id, recovering))
        .map_err(|source| Error::RunDir {
            path: crate::unflushed::marker_path(&run_dir, dev_id),
            source,
        })?;
    let marker = Arc::new(marker);
    let q_target: Arc<dyn Target> = Arc::new(Guarded::new(Arc::clone(target), marker.clone()));
    let workers = usize::from(plan.workers);
    let q_fn = move |qid: u16, dev: &UblkDev| queue::serve(qid, dev, &q_target, workers);
    let live_target = Arc::clone(target);
    let live_life = Arc::clone(life);
    let live_dir = run_dir.clone();
    let on_live = move |ctrl: &UblkCtrl| {
        let dev_id = ctrl.dev_info().dev_id;
        let server = publish(&live_dir, dev_id, &data, &live_target, &live_life);
        tracing::info!(dev_id, path = %bdev_path(dev_id), "device is live");
        live_life.went_live(dev_id, server);
    };
    let res = ctrl.run_target(tgt_init, q_fn, on_live);
    state::remove_record(&run_dir, dev_id);
    if let Err(e) = res {
        marker.remove();
        let err = ublk("start device")(e);
        tracing::error!(dev_id, error = %err, "the device did not start");
        life.report_failure(&err);
        // Queue threads may still hold /dev/ublkcN open, and a synchronous DEL_DEV waits
        // for its release: ask for an asynchronous delete, which completes when this
        // process exits, and keep the control's drop from sending a blocking one.
        let _ = ctrl.kill_dev();
        if let Err(e) = ctrl.del_dev_async() {
            tracing::warn!(dev_id, error = %describe_ublk(&e), "cannot delete the device; run `pcache-ublk del -n {dev_id}` once this process is gone");
        }
        ctrl.disown();
        return Err(err);
    }
    tracing::info!(dev_id, "queues stopped");
    // A graceful stop deletes the device (dropping an "add" control would do it too, but
    // a "recover" one would not).
    match ctrl.del_dev() {
        Ok(r) if r < 0 && r != -libc::ENOENT => {
            tracing::warn!(dev_id, errno = -r, "deleting the ublk device failed");
        }
        Ok(_) => {
            // No daemon will recover a deleted device: its marker has no reader left.
            marker.remove();
            tracing::info!(dev_id, "ublk device deleted");
        }
        Err(e) => {
            tracing::warn!(dev_id, error = %describe_ublk(&e), "deleting the ublk device failed");
        }
    }
    Ok(())
}

/// Writes the run record and opens the control socket. Failures are logged: the device
/// serves I/O regardless.
fn publish(
    dir: &Path,
    dev_id: u32,
    data: &TargetData,
    target: &Arc<dyn Target>,
    life: &Arc<Lifecycle>,
) -> Option<rpc::Server> {
    let socket = state::socket_path(dir, dev_id);
    let rec = RunRecord {
        dev_id,
        pid: std::process::id(),
        socket: socket.clone(),
        target: data.clone(),
    };
    if let Err(e) = state::write_record(dir, &rec) {
        tracing::error!(error = %crate::error::chain(&e), "cannot write the run record");
    }
    let stop_life = Arc::clone(life);
    match rpc::Server::start(
        &socket,
        Arc::clone(target),
        Arc::new(move || stop_life.request_stop()),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %crate::error::chain(&e), "cannot open the control socket");
            None
        }
    }
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
