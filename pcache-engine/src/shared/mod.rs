//! Shared cache devices: one device holding several caches, each in its own byte range in
//! the kernel's format, listed in a dual-copy cache table (`docs/format.md`, "Shared cache
//! devices"; the persistence steps SF1, SF2, TB1, CR1 and CR2 of `docs/design.md`).
//!
//! The functions here work on a media of the whole device and write only the table and
//! the range of the cache they create; taking the claims that keep other programs out
//! (the table lock, the cache's range lock: [`crate::claim::RangeClaim`]) is the
//! caller's part. A cache is then opened through a [`Window`] of the device, which no
//! access can leave.

mod identity;

pub use identity::{identify, stable_id, BackingMismatch};

use crate::backing::Backing;
use crate::media::{CacheMedia, MediaError, Window};
use crate::mutants::{skip, Step};
use crate::{Cache, CacheConfig, EngineError};
use pcache_format::layout::{cache_info_off, CACHE_CTRL_AREA, CACHE_CTRL_OFF, SB_OFF};
use pcache_format::shared::{
    check_name, table_slot_off, BackingRecord, CacheTable, NameError, SharedSuperblock,
    TableCopies, TableEntry, MAX_CACHES, RANGE_ALIGN, SHARED_DEV_SIZE_MIN, SHARED_SB_SIZE,
    TABLE_OFF, TABLE_SLOT_SIZE,
};
use pcache_format::{layout, CacheMode, FormatError, Superblock};
use std::io;
use std::sync::Arc;

/// Why an operation on a shared device failed. Except for [`SharedError::Media`] and
/// [`SharedError::Engine`] during a write, nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The device holds no shared superblock.
    #[error("not a shared cache device (no shared superblock)")]
    NotShared,
    /// The device is smaller than the smallest shared device.
    #[error("{size} bytes is too small for a shared cache device (the minimum is {min})")]
    TooSmall {
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The shared superblock or the table is damaged.
    #[error("{what}: {source}")]
    Damaged {
        /// Which part.
        what: &'static str,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// No cache has this name or id.
    #[error("no cache named {0:?} on this device (pcache-shared list shows them)")]
    NoSuchCache(String),
    /// A name that breaks the naming rule.
    #[error("bad cache name {name:?}: {source}")]
    BadName {
        /// The name.
        name: String,
        /// The rule.
        #[source]
        source: NameError,
    },
    /// A cache of this name exists.
    #[error("a cache named {0:?} exists already")]
    NameTaken(String),
    /// The backing device serves another cache of the device already.
    #[error("backing {path} is already the backing device of cache {name:?}")]
    BackingTaken {
        /// The backing path given.
        path: String,
        /// The cache it backs.
        name: String,
    },
    /// The table is full.
    #[error("the device holds {MAX_CACHES} caches, the most a table holds")]
    TableFull,
    /// No free range is large enough.
    #[error(
        "no free range of {want} bytes (the largest free range has {largest} bytes): pick a smaller --size or remove a cache"
    )]
    NoSpace {
        /// Bytes asked for.
        want: u64,
        /// The largest free range.
        largest: u64,
    },
    /// A size below the smallest cache.
    #[error("a cache needs at least {min} bytes ({size} asked)")]
    SizeTooSmall {
        /// Bytes asked for.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The cache holds dirty data and removal was not forced.
    #[error(
        "cache {name:?} holds {dirty} bytes of dirty data that its backing device does not have: write them back first (pcache-replay --writeback, or pcache-ublk flush), or remove with --force to lose them"
    )]
    Dirty {
        /// The cache.
        name: String,
        /// Dirty bytes.
        dirty: u64,
    },
    /// The backing device is not the one the cache was created for.
    #[error(transparent)]
    Mismatch(#[from] BackingMismatch),
    /// The media failed.
    #[error("{op}")]
    Media {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: MediaError,
    },
    /// The engine refused or failed on the cache inside the range.
    #[error("cache {name:?}: {source}")]
    Engine {
        /// The cache.
        name: String,
        /// Why.
        #[source]
        source: EngineError,
    },
}

fn media_err(op: &'static str) -> impl FnOnce(MediaError) -> SharedError {
    move |source| SharedError::Media { op, source }
}

fn damaged(what: &'static str) -> impl FnOnce(FormatError) -> SharedError {
    move |source| SharedError::Damaged { what, source }
}

fn read_bytes(m: &dyn CacheMedia, off: u64, len: u64) -> Result<Vec<u8>, SharedError> {
    // Callers read at most a table slot.
    #[allow(clippy::cast_possible_truncation)]
    let mut v = vec![0; len.min(m.len().saturating_sub(off)) as usize];
    m.read(off, &mut v)
        .map_err(media_err("read the cache table"))?;
    Ok(v)
}

/// Whether `media` starts like a shared device (the shared superblock's magic).
///
/// # Errors
/// The media could not be read.
pub fn is_shared(media: &dyn CacheMedia) -> Result<bool, MediaError> {
    if media.len() < SB_OFF + SHARED_SB_SIZE as u64 {
        return Ok(false);
    }
    let mut sb = [0; SHARED_SB_SIZE];
    media.read(SB_OFF, &mut sb)?;
    Ok(SharedSuperblock::has_magic(&sb))
}

/// A shared device as read: its superblock and both copies of its table.
#[derive(Debug, Clone)]
pub struct SharedDevice {
    /// The shared superblock.
    pub sb: SharedSuperblock,
    /// Both table copies, parsed.
    pub copies: TableCopies,
    /// The device's size.
    pub device_bytes: u64,
}

impl SharedDevice {
    /// Reads the shared superblock and both table copies.
    ///
    /// # Errors
    /// [`SharedError::NotShared`], a damaged superblock, media errors. A damaged table is
    /// reported by [`SharedDevice::table`], so that a reader can still show both copies.
    pub fn read(media: &dyn CacheMedia) -> Result<Self, SharedError> {
        if !is_shared(media).map_err(media_err("read the shared superblock"))? {
            return Err(SharedError::NotShared);
        }
        let device_bytes = media.len();
        let sb = SharedSuperblock::parse(&read_bytes(media, SB_OFF, SHARED_SB_SIZE as u64)?)
            .map_err(damaged("shared superblock"))?;
        sb.check_device(device_bytes)
            .map_err(damaged("shared superblock"))?;
        let slot = |i| read_bytes(media, table_slot_off(i), TABLE_SLOT_SIZE);
        let copies = TableCopies::parse(&slot(0)?, &slot(1)?);
        Ok(Self {
            sb,
            copies,
            device_bytes,
        })
    }

    /// The latest valid table, checked against the device.
    ///
    /// # Errors
    /// [`SharedError::Damaged`]: no valid copy, two copies that disagree, a range past
    /// the end of the device, or a table of another device.
    pub fn table(&self) -> Result<&CacheTable, SharedError> {
        let slot = self.copies.latest().map_err(damaged("cache table"))?;
        let t = self.copies.table().map_err(damaged("cache table"))?;
        t.check_device(table_slot_off(slot), self.device_bytes)
            .map_err(damaged("cache table"))?;
        if t.uuid != self.sb.uuid {
            return Err(SharedError::Damaged {
                what: "cache table",
                source: FormatError::new(
                    pcache_format::Structure::CacheTable,
                    table_slot_off(slot) + 40,
                    pcache_format::Reason::Invalid("the table belongs to another shared device"),
                ),
            });
        }
        Ok(t)
    }

    /// The cache `sel` names (a name, or an id when all digits).
    ///
    /// # Errors
    /// As [`SharedDevice::table`]; [`SharedError::NoSuchCache`].
    pub fn entry(&self, sel: &str) -> Result<&TableEntry, SharedError> {
        self.table()?
            .find(sel)
            .ok_or_else(|| SharedError::NoSuchCache(sel.to_owned()))
    }

    /// The window of the device that holds cache `entry`.
    ///
    /// # Errors
    /// The range is not inside `device` (checked by the table already).
    pub fn window(device: &Arc<dyn CacheMedia>, entry: &TableEntry) -> Result<Window, SharedError> {
        Window::new(device.clone(), entry.start, entry.len).map_err(media_err("open the cache"))
    }
}

/// Formats `media` as an empty shared device with identity `uuid`.
///
/// Steps SF1 (the empty table in slot 0, slot 1's header and the kernel's metadata blocks
/// zeroed) and SF2 (the shared superblock, last): a cut before SF2 leaves the device as it
/// was as far as any reader can tell, or unformatted.
///
/// # Errors
/// [`SharedError::TooSmall`]; media errors.
pub fn format(media: &dyn CacheMedia, uuid: [u8; 16]) -> Result<SharedDevice, SharedError> {
    let size = media.len();
    if size < SHARED_DEV_SIZE_MIN {
        return Err(SharedError::TooSmall {
            size,
            min: SHARED_DEV_SIZE_MIN,
        });
    }
    let w = |off, bytes: &[u8], step| -> Result<(), SharedError> {
        media.write(off, bytes).map_err(media_err("format"))?;
        if !skip(step) {
            media.flush(off, bytes.len() as u64);
        }
        Ok(())
    };
    // SF1: whatever the kernel's format kept in the first 64 KiB (superblock, cache_info,
    // tails) is gone, the empty table is in slot 0, and slot 1 holds no table.
    media
        .zero(SB_OFF, TABLE_OFF - SB_OFF)
        .map_err(media_err("format"))?;
    media.flush(SB_OFF, TABLE_OFF - SB_OFF);
    let table = CacheTable::empty(uuid);
    w(table_slot_off(0), &table.encode(), Step::SF1)?;
    w(table_slot_off(1), &[0; 64], Step::SF1)?;
    // SF1 ends: the table is durable before the superblock that makes it reachable.
    if !skip(Step::SF1) {
        media.fence();
    }
    let sb = SharedSuperblock {
        uuid,
        device_bytes: size,
    };
    // SF2: the shared superblock.
    w(SB_OFF, &sb.encode(), Step::SF2)?;
    if !skip(Step::SF2) {
        media.fence();
    }
    media.check().map_err(media_err("format"))?;
    SharedDevice::read(media)
}

/// Writes `next` as the new table (step TB1, the M1 rule): into the slot that does not
/// hold the latest valid copy, flushed and fenced; `dev` is re-read after.
///
/// # Errors
/// A damaged table (nothing is written over a table that cannot be read), media errors.
pub fn commit(
    media: &dyn CacheMedia,
    dev: &mut SharedDevice,
    next: &CacheTable,
) -> Result<(), SharedError> {
    let latest = dev.copies.latest().map_err(damaged("cache table"))?;
    let slot = 1 - latest;
    let bytes = next.encode();
    let off = table_slot_off(slot);
    media
        .write(off, &bytes)
        .map_err(media_err("write the cache table"))?;
    // TB1: the new copy is durable before anything relies on it.
    if !skip(Step::TB1) {
        media.flush(off, bytes.len() as u64);
        media.fence();
    }
    media.check().map_err(media_err("write the cache table"))?;
    *dev = SharedDevice::read(media)?;
    Ok(())
}

/// What a new cache is.
#[derive(Debug, Clone)]
pub struct NewCache {
    /// Its name.
    pub name: String,
    /// Bytes of the range (rounded down to 2 MiB).
    pub size: u64,
    /// The backing device it serves.
    pub backing: BackingRecord,
    /// Keys carry data CRCs.
    pub data_crc: bool,
    /// gc_percent (the default when `None`).
    pub gc_percent: Option<u8>,
    /// The cache mode (writeback when `None`).
    pub cache_mode: Option<CacheMode>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// A backing device that is never read or written: a cache being formatted or inspected
/// has nothing to write back.
#[derive(Debug)]
struct Absent(u64);

impl Backing for Absent {
    fn size(&self) -> u64 {
        self.0
    }
    fn read_at(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
        Err(io::Error::other("no backing device"))
    }
    fn write_at(&self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no backing device"))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::other("no backing device"))
    }
    fn write_zeroes(&self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::other("no backing device"))
    }
}

/// Checks a new cache against the table: the name, the count, the backing device, the
/// size; returns the range it gets.
///
/// # Errors
/// The rule broken; nothing is written.
pub fn plan(dev: &SharedDevice, spec: &NewCache) -> Result<(u64, u64), SharedError> {
    let table = dev.table()?;
    check_name(&spec.name).map_err(|source| SharedError::BadName {
        name: spec.name.clone(),
        source,
    })?;
    if table.entries.iter().any(|e| e.name == spec.name) {
        return Err(SharedError::NameTaken(spec.name.clone()));
    }
    if let Some(e) = table
        .entries
        .iter()
        .find(|e| same_backing(&e.backing, &spec.backing))
    {
        return Err(SharedError::BackingTaken {
            path: spec.backing.path.clone(),
            name: e.name.clone(),
        });
    }
    if table.entries.len() >= MAX_CACHES {
        return Err(SharedError::TableFull);
    }
    let len = spec.size - spec.size % RANGE_ALIGN;
    if len < layout::CACHE_DEV_SIZE_MIN {
        return Err(SharedError::SizeTooSmall {
            size: spec.size,
            min: layout::CACHE_DEV_SIZE_MIN,
        });
    }
    let start = table
        .place(dev.device_bytes, len)
        .ok_or_else(|| SharedError::NoSpace {
            want: len,
            largest: table
                .free(dev.device_bytes)
                .iter()
                .map(|&(_, l)| l)
                .max()
                .unwrap_or(0),
        })?;
    Ok((start, len))
}

/// Whether two records name the same backing device: the same stable identity, or, where
/// neither has one, the same path.
#[must_use]
pub fn same_backing(a: &BackingRecord, b: &BackingRecord) -> bool {
    if !a.id.is_empty() || !b.id.is_empty() {
        a.id == b.id
    } else {
        !a.path.is_empty() && a.path == b.path
    }
}

/// Creates a cache: places it ([`plan`]), formats its range (CR1) and adds it to the
/// table (CR2 = TB1). A cut before CR2 leaves the range free (its bytes are not
/// reachable); after it, the cache is complete.
///
/// # Errors
/// As [`plan`]; media and engine errors while formatting (the table is then unchanged).
pub fn create(
    device: &Arc<dyn CacheMedia>,
    dev: &mut SharedDevice,
    spec: NewCache,
) -> Result<TableEntry, SharedError> {
    let (start, len) = plan(dev, &spec)?;
    let window: Arc<dyn CacheMedia> =
        Arc::new(Window::new(device.clone(), start, len).map_err(media_err("format the cache"))?);
    format_cache(&window, &spec).map_err(|source| SharedError::Engine {
        name: spec.name.clone(),
        source,
    })?;
    let entry = TableEntry {
        id: 0,
        name: spec.name,
        start,
        len,
        backing: spec.backing,
        created: spec.created,
    };
    let (next, id) = dev
        .table()?
        .with_added(entry)
        .map_err(damaged("new cache table"))?;
    // CR2: the cache exists once the table that lists it is durable.
    commit(&**device, dev, &next)?;
    dev.entry(&id.to_string()).cloned()
}

/// CR1: formats the cache in `window` as mkfs and the kernel's first activation do: the
/// old cache_info copies and tails zeroed and the superblock written (both durable), then
/// the engine's activation (F1–F3, and A1 with the settings asked for).
fn format_cache(window: &Arc<dyn CacheMedia>, spec: &NewCache) -> Result<(), EngineError> {
    let m = &**window;
    let seg_num = layout::seg_num_for_device(m.len()).map_err(EngineError::corrupt("size"))?;
    let cr1 = !skip(Step::CR1);
    let clear = |off: u64, len: u64| -> Result<(), EngineError> {
        m.zero(off, len).map_err(EngineError::media("format"))?;
        if cr1 {
            m.flush(off, len);
        }
        Ok(())
    };
    clear(cache_info_off(0), 4096)?;
    clear(cache_info_off(1), 4096)?;
    clear(CACHE_CTRL_OFF, CACHE_CTRL_AREA)?;
    // CR1: no old cache_info or tail can be read behind the new superblock.
    if cr1 {
        m.fence();
    }
    let sb = Superblock::new(seg_num).encode();
    m.write(SB_OFF, &sb).map_err(EngineError::media("format"))?;
    if cr1 {
        // CR1: the superblock is durable before the activation formats behind it.
        m.flush(SB_OFF, sb.len() as u64);
        m.fence();
    }
    m.check().map_err(EngineError::media("format"))?;
    let cache = Cache::open(
        window.clone(),
        Arc::new(Absent(spec.backing.size)),
        CacheConfig {
            data_crc: spec.data_crc,
            gc_percent: spec.gc_percent,
            cache_mode: spec.cache_mode,
            background: false,
            ..CacheConfig::default()
        },
    )?;
    cache.close()
}

/// The dirty bytes of the cache in `entry`, from a read-only replay.
///
/// # Errors
/// The cache cannot be opened (damaged, or an engine error).
pub fn dirty_bytes(device: &Arc<dyn CacheMedia>, entry: &TableEntry) -> Result<u64, SharedError> {
    let engine = |source| SharedError::Engine {
        name: entry.name.clone(),
        source,
    };
    let window: Arc<dyn CacheMedia> = Arc::new(SharedDevice::window(device, entry)?);
    let info = Cache::peek_info(&*window).map_err(engine)?;
    let Some(info) = info else {
        // Never activated: nothing cached.
        return Ok(0);
    };
    let cache = Cache::open(
        window,
        Arc::new(Absent(entry.backing.size)),
        CacheConfig {
            data_crc: info.data_crc,
            read_only: true,
            background: false,
            ..CacheConfig::default()
        },
    )
    .map_err(engine)?;
    let dirty = cache.status().dirty_bytes;
    cache.close().map_err(engine)?;
    Ok(dirty)
}

/// Removes cache `sel` from the table (RM1 = TB1). Unless `force`, a cache that holds
/// dirty data (or cannot be read to tell) is refused. The range's bytes stay as they were
/// until a new cache takes them.
///
/// # Errors
/// [`SharedError::NoSuchCache`], [`SharedError::Dirty`], a damaged table or cache, media
/// errors; nothing is written then.
pub fn remove(
    device: &Arc<dyn CacheMedia>,
    dev: &mut SharedDevice,
    sel: &str,
    force: bool,
) -> Result<TableEntry, SharedError> {
    let entry = dev.entry(sel)?.clone();
    if !force {
        let dirty = dirty_bytes(device, &entry)?;
        if dirty > 0 {
            return Err(SharedError::Dirty {
                name: entry.name,
                dirty,
            });
        }
    }
    let next = dev
        .table()?
        .with_removed(entry.id)
        .map_err(damaged("new cache table"))?;
    // RM1: the cache is gone once the table without it is durable.
    commit(&**device, dev, &next)?;
    Ok(entry)
}

#[cfg(test)]
mod tests;
