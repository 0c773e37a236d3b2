//! `pcache-shared`: one cache device for several backing devices. The table and the
//! operations are the engine's ([`pcache_engine::shared`]); this module takes the claims,
//! identifies backing devices, and renders the table for people and for machines.
//!
//! Claims: `format` takes the whole device exclusively; `create` and `remove` take the
//! table's bytes exclusively (so table writers queue behind each other) and the range of
//! the cache they create or remove (so a cache being served is never removed); nothing
//! here touches another cache's range or entry.

use crate::device::{Access, Device, DeviceError};
use crate::probe;
use pcache_engine::claim::{range_writer, Holder, RangeClaim};
use pcache_engine::format::shared::{CacheTable, TableEntry, RANGES_OFF, TABLE_OFF};
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::shared::{self, identify, NewCache, SharedDevice, SharedError};
use pcache_engine::CacheMode;
use serde::Serialize;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Whether the device `m` (a whole device) is a shared cache device.
///
/// # Errors
/// The read failed.
pub fn is_shared<M: crate::Image + ?Sized>(m: &M) -> std::io::Result<bool> {
    use pcache_engine::format::shared::{SharedSuperblock, SHARED_SB_SIZE};
    if m.size() < pcache_engine::format::layout::SB_OFF + SHARED_SB_SIZE as u64 {
        return Ok(false);
    }
    let mut sb = [0; SHARED_SB_SIZE];
    m.read_at(pcache_engine::format::layout::SB_OFF, &mut sb)?;
    Ok(SharedSuperblock::has_magic(&sb))
}

/// Why a `pcache-shared` command failed. Nothing was written unless said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedToolError {
    /// Opening or claiming the device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The engine refused.
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// The device holds something `format` would destroy.
    #[error("the device holds {0}; nothing was written (--force formats it anyway)")]
    NotEmpty(String),
    /// The backing device cannot be opened.
    #[error("backing {path}")]
    Backing {
        /// As given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backing device is the shared device.
    #[error("the backing device cannot be the shared cache device itself")]
    SameDevice,
    /// The device could not be mapped.
    #[error("cannot map the device")]
    Map(#[source] pcache_engine::media::MediaError),
    /// Another program holds the table or the cache.
    #[error(transparent)]
    Claim(#[from] pcache_engine::claim::ClaimError),
}

type Result<T> = std::result::Result<T, SharedToolError>;

fn uuid() -> [u8; 16] {
    let mut u = [0; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut u));
    if random.is_err() {
        // No /dev/urandom: the time and pid still tell devices apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        u = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    u
}

fn map(path: &Path, writable: bool) -> Result<Arc<dyn CacheMedia>> {
    Ok(Arc::new(
        DaxMedia::open(path, !writable).map_err(SharedToolError::Map)?,
    ))
}

/// Formats `path` as an empty shared device. Refuses a device that holds anything
/// recognisable unless `force`; takes the device exclusively.
///
/// # Errors
/// See [`SharedToolError`].
pub fn format(path: &Path, force: bool) -> Result<SharedDevice> {
    let dev = Device::open(path, Access::ReadWrite)?;
    if !force {
        let found = probe::probe(&dev).map_err(DeviceError::Open)?;
        if !found.is_empty() {
            let what: Vec<String> = found.iter().map(ToString::to_string).collect();
            return Err(SharedToolError::NotEmpty(what.join("; ")));
        }
    }
    let media = map(path, true)?;
    let d = shared::format(&*media, uuid())?;
    drop(dev);
    Ok(d)
}

/// What `create` is asked for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The cache's name.
    pub name: String,
    /// Bytes of its range (rounded down to 2 MiB).
    pub size: u64,
    /// Data CRCs.
    pub data_crc: bool,
    /// gc_percent.
    pub gc_percent: u8,
    /// The cache mode.
    pub cache_mode: CacheMode,
}

/// Creates a cache for the backing device `backing` on the shared device `path`, while
/// the other caches go on serving.
///
/// # Errors
/// See [`SharedToolError`]; nothing is written on a refusal.
pub fn create(path: &Path, backing: &Path, opts: &CreateOptions) -> Result<TableEntry> {
    if same_file(path, backing) {
        return Err(SharedToolError::SameDevice);
    }
    let record = identify(backing).map_err(|source| SharedToolError::Backing {
        path: backing.display().to_string(),
        source,
    })?;
    let _table = lock_table(path)?;
    let media = map(path, true)?;
    let mut dev = SharedDevice::read(&*media)?;
    let spec = NewCache {
        name: opts.name.clone(),
        size: opts.size,
        backing: record,
        data_crc: opts.data_crc,
        gc_percent: Some(opts.gc_percent),
        cache_mode: Some(opts.cache_mode),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // The range is free, but a program may hold it still (a cache removed under a
    // reader): claim it before writing.
    let (start, len) = shared::plan(&dev, &spec)?;
    let _range = RangeClaim::take(path, &spec.name, start, len, true)?;
    Ok(shared::create(&media, &mut dev, spec)?)
}

/// Removes cache `sel` from the shared device `path`: refused while a program holds it,
/// and while it holds dirty data unless `force`.
///
/// # Errors
/// See [`SharedToolError`]; nothing is written on a refusal.
pub fn remove(path: &Path, sel: &str, force: bool) -> Result<TableEntry> {
    let _table = lock_table(path)?;
    let media = map(path, true)?;
    let mut dev = SharedDevice::read(&*media)?;
    let entry = dev.entry(sel)?.clone();
    let _range = RangeClaim::take(path, &entry.name, entry.start, entry.len, true)?;
    Ok(shared::remove(&media, &mut dev, sel, force)?)
}

/// Writes the latest table again (TB1), into the other slot: what `pcache-fsck -y` does
/// when one copy is damaged. Takes the table's lock.
///
/// # Errors
/// See [`SharedToolError`]; a table with no valid copy is not touched.
pub fn rewrite_table(path: &Path) -> Result<()> {
    let _table = lock_table(path)?;
    let media = map(path, true)?;
    let mut dev = SharedDevice::read(&*media)?;
    let mut next = dev.table()?.clone();
    next.seq = next.seq.saturating_add(1);
    shared::commit(&*media, &mut dev, &next)?;
    Ok(())
}

/// The table writers' lock: the table's bytes, exclusively (writers of one device queue
/// behind each other; the caches' programs are not affected).
fn lock_table(path: &Path) -> Result<RangeClaim> {
    Ok(RangeClaim::take(
        path,
        "the cache table",
        TABLE_OFF,
        RANGES_OFF - TABLE_OFF,
        true,
    )?)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev(), x.ino()) == (y.dev(), y.ino()) || (x.rdev() != 0 && x.rdev() == y.rdev())
        }
        _ => false,
    }
}

/// One cache as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// First byte of its range.
    pub start: u64,
    /// Bytes of its range.
    pub len: u64,
    /// The backing device's recorded size.
    pub backing_size: u64,
    /// Its recorded stable identity ("" if none).
    pub backing_id: String,
    /// The backing path recorded at creation.
    pub backing_path: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The dm-linear table line for the kernel.
    pub dm_linear: String,
    /// Who serves it now, if anyone.
    pub in_use_by: Option<String>,
}

/// A shared device's table as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// `"schema": 1`.
    pub schema: u32,
    /// The device path.
    pub device: String,
    /// Its size.
    pub device_bytes: u64,
    /// Its uuid, as hex.
    pub uuid: String,
    /// The table's sequence number.
    pub seq: u64,
    /// The caches.
    pub caches: Vec<Listed>,
    /// The free ranges, `[start, len]`.
    pub free: Vec<(u64, u64)>,
    /// Problems with the table copies that did not stop the listing.
    pub warnings: Vec<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads the table of `path` for a listing (a reader: no claim beyond a look at who holds
/// each cache).
///
/// # Errors
/// See [`SharedToolError`].
pub fn list(path: &Path) -> Result<Listing> {
    let media = map(path, false)?;
    let dev = SharedDevice::read(&*media)?;
    listing(path, &dev)
}

/// The listing of a shared device already read.
///
/// # Errors
/// A damaged table.
pub fn listing(path: &Path, dev: &SharedDevice) -> Result<Listing> {
    let t: &CacheTable = dev.table()?;
    let shown = path.display().to_string();
    let mut warnings = Vec::new();
    for (i, slot) in dev.copies.slots.iter().enumerate() {
        if let Err(e) = slot {
            warnings.push(format!(
                "table copy {i} is damaged ({e}); the other one is used"
            ));
        }
    }
    Ok(Listing {
        schema: 1,
        device: shown.clone(),
        device_bytes: dev.device_bytes,
        uuid: hex(&dev.sb.uuid),
        seq: t.seq,
        caches: t
            .entries
            .iter()
            .map(|e| Listed {
                id: e.id,
                name: e.name.clone(),
                start: e.start,
                len: e.len,
                backing_size: e.backing.size,
                backing_id: e.backing.id.clone(),
                backing_path: e.backing.path.clone(),
                created: e.created,
                dm_linear: e.dm_linear(&shown),
                in_use_by: range_writer(path, &e.name, e.start, e.len)
                    .map(|h: Holder| h.to_string()),
            })
            .collect(),
        free: t.free(dev.device_bytes),
        warnings,
    })
}

fn size(n: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if n.is_multiple_of(G) {
        format!("{} GiB", n / G)
    } else {
        format!("{} MiB", n / M)
    }
}

/// The listing as text: one line per cache, then the free space.
#[must_use]
pub fn text(l: &Listing) -> String {
    let mut out = format!(
        "{}: shared cache device, {} bytes, uuid {}, table seq {}, {} cache{}\n",
        l.device,
        l.device_bytes,
        l.uuid,
        l.seq,
        l.caches.len(),
        if l.caches.len() == 1 { "" } else { "s" }
    );
    for w in &l.warnings {
        out += &format!("warning: {w}\n");
    }
    if !l.caches.is_empty() {
        out += &format!(
            "{:>3}  {:<16} {:>14} {:>9}  {:<28} {}\n",
            "ID", "NAME", "START", "SIZE", "BACKING", "STATE"
        );
    }
    for c in &l.caches {
        let backing = if c.backing_id.is_empty() {
            c.backing_path.clone()
        } else {
            format!("{} ({})", c.backing_path, c.backing_id)
        };
        out += &format!(
            "{:>3}  {:<16} {:>14} {:>9}  {:<28} {}\n",
            c.id,
            c.name,
            format!("{:#x}", c.start),
            size(c.len),
            backing,
            c.in_use_by
                .as_ref()
                .map_or_else(|| "idle".to_owned(), |h| format!("in use by {h}"))
        );
    }
    let free: u64 = l.free.iter().map(|&(_, n)| n).sum();
    let largest = l.free.iter().map(|&(_, n)| n).max().unwrap_or(0);
    out += &format!(
        "free: {} in {} range{} (largest {})\n",
        size(free),
        l.free.len(),
        if l.free.len() == 1 { "" } else { "s" },
        size(largest)
    );
    out
}

/// What the kernel needs to open cache `e` of `device`: the dm-linear table and the
/// dm-pcache table over it (`backing` is the backing device's path).
#[must_use]
pub fn dm_tables(device: &str, e: &TableEntry, backing: &str, data_crc: bool) -> String {
    let linear = format!("pcache-{}", e.name);
    format!(
        "# cache {name} (id {id}) of {device}: bytes {start:#x}..{end:#x}\n\
         dmsetup create {linear} --table '{table}'\n\
         dmsetup create {name}-pcache --table \"0 $(blockdev --getsz {backing}) pcache /dev/mapper/{linear} {backing} 4 cache_mode writeback data_crc {crc}\"\n",
        name = e.name,
        id = e.id,
        start = e.start,
        end = e.end(),
        table = e.dm_linear(device),
        crc = data_crc,
    )
}
