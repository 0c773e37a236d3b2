//! A shared cache device: one device holding several caches, each in its own byte range
//! and each in the kernel's format within that range (`docs/format.md`, "Shared cache
//! devices").
//!
//! ```text
//! offset        size       contents
//! 0             4 KiB      unused (as in the kernel format)
//! 4 096         64 B       shared superblock (magic "PCSHARED"; the kernel refuses it)
//! 65 536        64 KiB     cache table, slot 0
//! 131 072       64 KiB     cache table, slot 1
//! 2 MiB …       ranges     one cache per range, 2 MiB aligned, each a whole kernel image
//! ```
//!
//! The table is a dual-copy record like the kernel's: a writer writes the slot that does
//! not hold the latest valid copy, with `seq + 1` (a 64-bit sequence, never wrapping).
//! Its CRC is the pcache CRC over the header from byte 4 and the entries in use.

use crate::crc::pcache_crc;
use crate::error::{FormatError, Reason, Result, Structure};
use crate::layout::{CACHE_DEV_SIZE_MIN, SB_OFF, SECTOR_SIZE};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The shared superblock's magic: `"PCSHARED"` read as a little-endian u64. The kernel
/// sees a non-zero magic that is not its own and refuses the device as a whole.
pub const SHARED_MAGIC: u64 = u64::from_le_bytes(*b"PCSHARED");
/// The cache table's magic: `"PCTABLE1"`.
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"PCTABLE1");
/// The layout version this code writes and reads.
pub const SHARED_VERSION: u32 = 1;
/// Size of the shared superblock.
pub const SHARED_SB_SIZE: usize = 64;
/// Offset of table slot 0; slot 1 follows it.
pub const TABLE_OFF: u64 = 64 << 10;
/// Size of one table slot.
pub const TABLE_SLOT_SIZE: u64 = 64 << 10;
/// Size of the table header, before the entries.
pub const TABLE_HEADER_SIZE: usize = 64;
/// Size of one entry.
pub const ENTRY_SIZE: usize = 512;
/// The most caches one shared device holds (what fits in a slot).
pub const MAX_CACHES: usize = (TABLE_SLOT_SIZE as usize - TABLE_HEADER_SIZE) / ENTRY_SIZE;
/// Alignment (and size granularity) of every cache's range: a huge page, which device DAX
/// and dm-linear over DAX both map at.
pub const RANGE_ALIGN: u64 = 2 << 20;
/// Where the first range may start.
pub const RANGES_OFF: u64 = 2 << 20;
/// The smallest shared device: room for the table and one smallest cache.
pub const SHARED_DEV_SIZE_MIN: u64 = RANGES_OFF + CACHE_DEV_SIZE_MIN;
/// Entry state: the cache exists (the only state of version 1).
pub const ENTRY_ACTIVE: u32 = 1;
/// Longest cache name, in bytes.
pub const NAME_MAX: usize = 63;
/// Longest recorded backing identity, in bytes.
pub const BACKING_ID_MAX: usize = 191;
/// Longest recorded backing path, in bytes (a longer path is cut: it is only a hint).
pub const BACKING_PATH_MAX: usize = 191;

/// Offset of table slot `slot` (0 or 1).
#[must_use]
pub const fn table_slot_off(slot: usize) -> u64 {
    TABLE_OFF + slot as u64 * TABLE_SLOT_SIZE
}

/// The shared superblock, 64 bytes at 4 096.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSharedSuperblock {
    /// +0: CRC of bytes `[4, 64)`.
    pub crc: U32,
    /// +4: flags, 0.
    pub flags: U32,
    /// +8: [`SHARED_MAGIC`].
    pub magic: U64,
    /// +16: [`SHARED_VERSION`].
    pub version: U32,
    /// +20: reserved, 0.
    pub res: U32,
    /// +24: the device's identity, random at format.
    pub uuid: [u8; 16],
    /// +40: the device size at format, in bytes.
    pub device_bytes: U64,
    /// +48: reserved, 0.
    pub res2: [u8; 16],
}

/// The table header, 64 bytes at the start of a slot.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawTableHeader {
    /// +0: CRC of the header from byte 4 and the `n_entries` entries.
    pub crc: U32,
    /// +4: flags, 0.
    pub flags: U32,
    /// +8: [`TABLE_MAGIC`].
    pub magic: U64,
    /// +16: update sequence; the valid copy with the larger one is the latest.
    pub seq: U64,
    /// +24: entries in use.
    pub n_entries: U32,
    /// +28: [`ENTRY_SIZE`].
    pub entry_size: U32,
    /// +32: the id the next cache gets.
    pub next_id: U32,
    /// +36: reserved, 0.
    pub res: U32,
    /// +40: the shared superblock's uuid (a table copied from another device is refused).
    pub uuid: [u8; 16],
    /// +56: reserved, 0.
    pub res2: U64,
}

/// One cache of the table, 512 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawEntry {
    /// +0: the cache's id (never reused on one device).
    pub id: U32,
    /// +4: [`ENTRY_ACTIVE`].
    pub state: U32,
    /// +8: first byte of the range.
    pub start: U64,
    /// +16: length of the range.
    pub len: U64,
    /// +24: the backing device's size in bytes when the cache was created.
    pub backing_size: U64,
    /// +32: creation time, seconds since the epoch.
    pub created: U64,
    /// +40: reserved, 0.
    pub res: [u8; 24],
    /// +64: the name, UTF-8, NUL-padded.
    pub name: [u8; 64],
    /// +128: the backing device's stable identity (`serial:…`, `wwid:…`, `dm-uuid:…`), or
    /// empty where it has none; NUL-padded.
    pub backing_id: [u8; 192],
    /// +320: the backing device's path when the cache was created (a hint); NUL-padded.
    pub backing_path: [u8; 192],
}

const _: () = {
    assert!(core::mem::size_of::<RawSharedSuperblock>() == SHARED_SB_SIZE);
    assert!(core::mem::size_of::<RawTableHeader>() == TABLE_HEADER_SIZE);
    assert!(core::mem::size_of::<RawEntry>() == ENTRY_SIZE);
    assert!(MAX_CACHES == 127);
    assert!(table_slot_off(1) + TABLE_SLOT_SIZE <= RANGES_OFF);
};

/// The parsed shared superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSuperblock {
    /// The device's identity.
    pub uuid: [u8; 16],
    /// The device size at format.
    pub device_bytes: u64,
}

impl SharedSuperblock {
    /// Whether `bytes` (at 4 096) start with the shared magic, whatever their CRC: the
    /// sign that the device is a shared one, to be read (or refused) as such.
    #[must_use]
    pub fn has_magic(bytes: &[u8]) -> bool {
        RawSharedSuperblock::read_from_prefix(bytes)
            .is_ok_and(|(raw, _)| raw.magic.get() == SHARED_MAGIC)
    }

    /// Parses and checks the shared superblock: magic, CRC, version.
    ///
    /// # Errors
    /// Truncated input, wrong magic, bad CRC, an unknown version or flags.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let at = SB_OFF;
        let s = Structure::SharedSuperblock;
        let raw = RawSharedSuperblock::read_from_prefix(bytes)
            .map(|(r, _)| r)
            .map_err(|_| truncated(s, at, SHARED_SB_SIZE, bytes.len()))?;
        if raw.magic.get() != SHARED_MAGIC {
            return Err(FormatError::new(
                s,
                at,
                Reason::BadMagic {
                    found: raw.magic.get(),
                },
            ));
        }
        let computed = pcache_crc(&raw.as_bytes()[4..]);
        if computed != raw.crc.get() {
            return Err(FormatError::new(
                s,
                at,
                Reason::BadCrc {
                    stored: raw.crc.get(),
                    computed,
                },
            ));
        }
        if raw.version.get() != SHARED_VERSION {
            return Err(FormatError::range(
                s,
                at + 16,
                "version (only 1)",
                u64::from(raw.version.get()),
                u64::from(SHARED_VERSION),
            ));
        }
        if raw.flags.get() != 0 {
            return Err(FormatError::new(
                s,
                at + 4,
                Reason::Invalid("unknown flags"),
            ));
        }
        Ok(Self {
            uuid: raw.uuid,
            device_bytes: raw.device_bytes.get(),
        })
    }

    /// The 64 on-media bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SHARED_SB_SIZE] {
        let mut raw = RawSharedSuperblock {
            magic: SHARED_MAGIC.into(),
            version: SHARED_VERSION.into(),
            uuid: self.uuid,
            device_bytes: self.device_bytes.into(),
            ..Default::default()
        };
        raw.crc = pcache_crc(&raw.as_bytes()[4..]).into();
        let mut out = [0; SHARED_SB_SIZE];
        out.copy_from_slice(raw.as_bytes());
        out
    }

    /// Checks the superblock against the device it was read from: a device smaller than
    /// at format has lost caches.
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] when the device is smaller than recorded.
    pub fn check_device(&self, device_bytes: u64) -> Result<()> {
        if device_bytes < self.device_bytes {
            return Err(FormatError::range(
                Structure::SharedSuperblock,
                SB_OFF + 40,
                "device_bytes (at most the device size)",
                self.device_bytes,
                device_bytes,
            ));
        }
        Ok(())
    }
}

fn truncated(structure: Structure, at: u64, need: usize, have: usize) -> FormatError {
    FormatError::new(
        structure,
        at,
        Reason::Truncated {
            need: need as u64,
            have: have as u64,
        },
    )
}

/// What identifies a backing device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackingRecord {
    /// Size in bytes.
    pub size: u64,
    /// A stable identity (`serial:…`, `wwid:…`, `dm-uuid:…`, `md-uuid:…`), empty where the
    /// device has none (a regular file).
    pub id: String,
    /// The path it had when the cache was created: only a hint for people.
    pub path: String,
}

/// One cache of a shared device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Never reused on one device.
    pub id: u32,
    /// Unique on the device; see [`check_name`].
    pub name: String,
    /// First byte of the range.
    pub start: u64,
    /// Length of the range: the cache sees a device of this size.
    pub len: u64,
    /// The backing device it was created for.
    pub backing: BackingRecord,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

impl TableEntry {
    /// One past the last byte of the range.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// The dm-linear table line that shows this range as a device of its own, for the
    /// kernel's dm-pcache: `0 <sectors> linear <dev> <start sector>`.
    #[must_use]
    pub fn dm_linear(&self, device: &str) -> String {
        let sector = u64::from(SECTOR_SIZE);
        format!(
            "0 {} linear {device} {}",
            self.len / sector,
            self.start / sector
        )
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty.
    #[error("a cache name cannot be empty")]
    Empty,
    /// Over [`NAME_MAX`] bytes.
    #[error("a cache name has at most 63 characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("a cache name holds only letters, digits, '.', '_' and '-'")]
    BadChar,
    /// Starts with `-` (it would read as an option).
    #[error("a cache name cannot start with '-'")]
    LeadingDash,
    /// Only digits (those select a cache by id).
    #[error("a cache name cannot be all digits (a number selects a cache by id)")]
    Numeric,
}

/// Checks a cache name: 1..=63 characters of `[A-Za-z0-9._-]`, not starting with `-`, not
/// all digits.
///
/// # Errors
/// The rule broken.
pub fn check_name(name: &str) -> core::result::Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadChar);
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingDash);
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::Numeric);
    }
    Ok(())
}

/// The cache table: every cache of a shared device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheTable {
    /// Update sequence of the copy this was read from (or is to be written with).
    pub seq: u64,
    /// The id the next cache gets.
    pub next_id: u32,
    /// The shared superblock's uuid.
    pub uuid: [u8; 16],
    /// The caches, in the order of their ranges.
    pub entries: Vec<TableEntry>,
}

fn put_str(dst: &mut [u8], s: &str) {
    // Cut at a character boundary so the stored bytes stay UTF-8.
    let mut n = s.len().min(dst.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(src: &[u8], at: u64, what: &'static str) -> Result<String> {
    let n = src.iter().position(|&b| b == 0).unwrap_or(src.len());
    if n == src.len() || src[n..].iter().any(|&b| b != 0) {
        return Err(FormatError::new(
            Structure::TableEntry,
            at,
            Reason::Invalid(what),
        ));
    }
    core::str::from_utf8(&src[..n])
        .map(str::to_owned)
        .map_err(|_| FormatError::new(Structure::TableEntry, at, Reason::Invalid(what)))
}

impl CacheTable {
    /// An empty table for the device with `uuid` (seq 1, ids from 1).
    #[must_use]
    pub fn empty(uuid: [u8; 16]) -> Self {
        Self {
            seq: 1,
            next_id: 1,
            uuid,
            entries: Vec::new(),
        }
    }

    /// The bytes of this table as one slot holds them (header and entries in use).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; TABLE_HEADER_SIZE + self.entries.len() * ENTRY_SIZE];
        for (i, e) in self.entries.iter().enumerate() {
            let mut raw = RawEntry::new_zeroed();
            raw.id = e.id.into();
            raw.state = ENTRY_ACTIVE.into();
            raw.start = e.start.into();
            raw.len = e.len.into();
            raw.backing_size = e.backing.size.into();
            raw.created = e.created.into();
            put_str(&mut raw.name, &e.name);
            put_str(&mut raw.backing_id, &e.backing.id);
            put_str(&mut raw.backing_path, &e.backing.path);
            let at = TABLE_HEADER_SIZE + i * ENTRY_SIZE;
            out[at..at + ENTRY_SIZE].copy_from_slice(raw.as_bytes());
        }
        let header = RawTableHeader {
            magic: TABLE_MAGIC.into(),
            seq: self.seq.into(),
            // At most MAX_CACHES entries are ever added (`check` refuses more).
            #[allow(clippy::cast_possible_truncation)]
            n_entries: (self.entries.len() as u32).into(),
            #[allow(clippy::cast_possible_truncation)]
            entry_size: (ENTRY_SIZE as u32).into(),
            next_id: self.next_id.into(),
            uuid: self.uuid,
            ..Default::default()
        };
        out[..TABLE_HEADER_SIZE].copy_from_slice(header.as_bytes());
        let crc = pcache_crc(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses one slot's bytes (at least the header; `at` is the slot's offset, for
    /// errors) and checks every entry and the table as a whole ([`CacheTable::check`]).
    ///
    /// # Errors
    /// Truncated input, wrong magic, entry size or count, bad CRC, a bad entry, or a
    /// table that breaks a rule.
    pub fn parse(bytes: &[u8], at: u64) -> Result<Self> {
        let s = Structure::CacheTable;
        let header = RawTableHeader::read_from_prefix(bytes)
            .map(|(r, _)| r)
            .map_err(|_| truncated(s, at, TABLE_HEADER_SIZE, bytes.len()))?;
        if header.magic.get() != TABLE_MAGIC {
            return Err(FormatError::new(
                s,
                at + 8,
                Reason::BadMagic {
                    found: header.magic.get(),
                },
            ));
        }
        if header.entry_size.get() as usize != ENTRY_SIZE {
            return Err(FormatError::range(
                s,
                at + 28,
                "entry_size (only 512)",
                u64::from(header.entry_size.get()),
                ENTRY_SIZE as u64,
            ));
        }
        let n = header.n_entries.get() as usize;
        if n > MAX_CACHES {
            return Err(FormatError::range(
                s,
                at + 24,
                "n_entries",
                n as u64,
                MAX_CACHES as u64,
            ));
        }
        let used = TABLE_HEADER_SIZE + n * ENTRY_SIZE;
        let Some(body) = bytes.get(..used) else {
            return Err(truncated(s, at, used, bytes.len()));
        };
        let computed = pcache_crc(&body[4..]);
        if computed != header.crc.get() {
            return Err(FormatError::new(
                s,
                at,
                Reason::BadCrc {
                    stored: header.crc.get(),
                    computed,
                },
            ));
        }
        if header.flags.get() != 0 {
            return Err(FormatError::new(
                s,
                at + 4,
                Reason::Invalid("unknown flags"),
            ));
        }
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let off = TABLE_HEADER_SIZE + i * ENTRY_SIZE;
            let eat = at + off as u64;
            let raw = RawEntry::read_from_bytes(&body[off..off + ENTRY_SIZE])
                .map_err(|_| truncated(Structure::TableEntry, eat, ENTRY_SIZE, 0))?;
            if raw.state.get() != ENTRY_ACTIVE {
                return Err(FormatError::range(
                    Structure::TableEntry,
                    eat + 4,
                    "state (only 1)",
                    u64::from(raw.state.get()),
                    u64::from(ENTRY_ACTIVE),
                ));
            }
            let name = get_str(&raw.name, eat + 64, "name is not NUL-terminated UTF-8")?;
            let backing_id = get_str(
                &raw.backing_id,
                eat + 128,
                "backing id is not NUL-terminated UTF-8",
            )?;
            let backing_path = get_str(
                &raw.backing_path,
                eat + 320,
                "backing path is not NUL-terminated UTF-8",
            )?;
            entries.push(TableEntry {
                id: raw.id.get(),
                name,
                start: raw.start.get(),
                len: raw.len.get(),
                backing: BackingRecord {
                    size: raw.backing_size.get(),
                    id: backing_id,
                    path: backing_path,
                },
                created: raw.created.get(),
            });
        }
        let table = Self {
            seq: header.seq.get(),
            next_id: header.next_id.get(),
            uuid: header.uuid,
            entries,
        };
        table.check(at)?;
        Ok(table)
    }

    /// The rules every table keeps, whatever the device: valid unique names, unique ids
    /// below `next_id`, ranges aligned, at least the kernel's smallest cache, starting
    /// after the table, in order and not overlapping; a backing size of whole sectors.
    ///
    /// # Errors
    /// The first rule broken (`at` is the slot's offset).
    pub fn check(&self, at: u64) -> Result<()> {
        let bad = |i: usize, field: u64, what: &'static str| {
            FormatError::new(
                Structure::TableEntry,
                at + (TABLE_HEADER_SIZE + i * ENTRY_SIZE) as u64 + field,
                Reason::Invalid(what),
            )
        };
        if self.entries.len() > MAX_CACHES {
            return Err(FormatError::range(
                Structure::CacheTable,
                at + 24,
                "n_entries",
                self.entries.len() as u64,
                MAX_CACHES as u64,
            ));
        }
        let mut prev_end = RANGES_OFF;
        for (i, e) in self.entries.iter().enumerate() {
            if e.id == 0 || e.id >= self.next_id {
                return Err(bad(i, 0, "id is 0 or not below next_id"));
            }
            if check_name(&e.name).is_err() {
                return Err(bad(i, 64, "name breaks the naming rule"));
            }
            if self.entries[..i]
                .iter()
                .any(|o| o.id == e.id || o.name == e.name)
            {
                return Err(bad(i, 0, "id or name used twice"));
            }
            if e.start % RANGE_ALIGN != 0 || e.len % RANGE_ALIGN != 0 {
                return Err(bad(i, 8, "range not aligned to 2 MiB"));
            }
            if e.len < CACHE_DEV_SIZE_MIN {
                return Err(bad(
                    i,
                    16,
                    "range smaller than the smallest cache (512 MiB)",
                ));
            }
            if e.start < prev_end {
                return Err(bad(
                    i,
                    8,
                    "range overlaps the table or the range before it (or is out of order)",
                ));
            }
            let Some(end) = e.start.checked_add(e.len) else {
                return Err(bad(i, 16, "range ends past 2^64"));
            };
            if e.backing.size == 0 || e.backing.size % u64::from(SECTOR_SIZE) != 0 {
                return Err(bad(i, 24, "backing size is 0 or not whole sectors"));
            }
            prev_end = end;
        }
        Ok(())
    }

    /// Checks every range against the size of the device.
    ///
    /// # Errors
    /// [`Reason::OutOfRange`] naming the first range that runs past the end.
    pub fn check_device(&self, at: u64, device_bytes: u64) -> Result<()> {
        for (i, e) in self.entries.iter().enumerate() {
            if e.end() > device_bytes {
                return Err(FormatError::range(
                    Structure::TableEntry,
                    at + (TABLE_HEADER_SIZE + i * ENTRY_SIZE) as u64 + 16,
                    "range end (at most the device size)",
                    e.end(),
                    device_bytes,
                ));
            }
        }
        Ok(())
    }

    /// The entry named `sel`, or with id `sel` when it is all digits.
    #[must_use]
    pub fn find(&self, sel: &str) -> Option<&TableEntry> {
        match sel.parse::<u32>() {
            Ok(id) => self.entries.iter().find(|e| e.id == id),
            Err(_) => self.entries.iter().find(|e| e.name == sel),
        }
    }

    /// The free gaps of a device of `device_bytes`, as `(start, len)`, 2 MiB aligned.
    #[must_use]
    pub fn free(&self, device_bytes: u64) -> Vec<(u64, u64)> {
        let limit = device_bytes - device_bytes % RANGE_ALIGN;
        let mut out = Vec::new();
        let mut at = RANGES_OFF;
        for e in &self.entries {
            if e.start > at {
                out.push((at, e.start - at));
            }
            at = at.max(e.end());
        }
        if limit > at {
            out.push((at, limit - at));
        }
        out
    }

    /// Where a new range of `len` bytes (a multiple of 2 MiB) goes: the first gap that
    /// holds it.
    #[must_use]
    pub fn place(&self, device_bytes: u64, len: u64) -> Option<u64> {
        self.free(device_bytes)
            .into_iter()
            .find(|&(_, gap)| gap >= len)
            .map(|(start, _)| start)
    }

    /// The table with `entry` added in range order and `seq`/`next_id` advanced; the
    /// entry gets the next id.
    ///
    /// # Errors
    /// The result breaks a rule of [`CacheTable::check`].
    pub fn with_added(&self, mut entry: TableEntry) -> Result<(Self, u32)> {
        let mut next = self.clone();
        entry.id = self.next_id;
        let id = entry.id;
        next.next_id = self.next_id.checked_add(1).ok_or_else(|| {
            FormatError::new(Structure::CacheTable, 32, Reason::Invalid("ids exhausted"))
        })?;
        next.seq = self.next_seq()?;
        let pos = next.entries.partition_point(|e| e.start < entry.start);
        next.entries.insert(pos, entry);
        next.check(0)?;
        Ok((next, id))
    }

    /// The table without the cache with id `id`, `seq` advanced.
    ///
    /// # Errors
    /// The sequence number is exhausted.
    pub fn with_removed(&self, id: u32) -> Result<Self> {
        let mut next = self.clone();
        next.entries.retain(|e| e.id != id);
        next.seq = self.next_seq()?;
        Ok(next)
    }

    fn next_seq(&self) -> Result<u64> {
        self.seq.checked_add(1).ok_or_else(|| {
            FormatError::new(Structure::CacheTable, 16, Reason::Invalid("seq exhausted"))
        })
    }
}

/// Both copies of the table as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopies {
    /// Slot 0 and slot 1: parsed, or why not.
    pub slots: [Result<CacheTable>; 2],
}

impl TableCopies {
    /// Parses both slots (each at least the slot's bytes, or as many as there are).
    #[must_use]
    pub fn parse(slot0: &[u8], slot1: &[u8]) -> Self {
        Self {
            slots: [
                CacheTable::parse(slot0, table_slot_off(0)),
                CacheTable::parse(slot1, table_slot_off(1)),
            ],
        }
    }

    /// The slot holding the latest valid copy: the larger `seq`. Two valid copies with the
    /// same `seq` must be equal.
    ///
    /// # Errors
    /// [`Reason::NoValidCopy`] (the error of slot 0 is not kept: the caller has both), or
    /// two copies with one `seq` that disagree.
    pub fn latest(&self) -> Result<usize> {
        match (&self.slots[0], &self.slots[1]) {
            (Ok(a), Ok(b)) if a.seq == b.seq && a != b => Err(FormatError::new(
                Structure::CacheTable,
                TABLE_OFF + 16,
                Reason::Invalid("both copies have the same seq but differ"),
            )),
            (Ok(a), Ok(b)) => Ok(usize::from(b.seq > a.seq)),
            (Ok(_), Err(_)) => Ok(0),
            (Err(_), Ok(_)) => Ok(1),
            (Err(_), Err(_)) => Err(FormatError::new(
                Structure::CacheTable,
                TABLE_OFF,
                Reason::NoValidCopy,
            )),
        }
    }

    /// The latest valid copy.
    ///
    /// # Errors
    /// As [`TableCopies::latest`].
    pub fn table(&self) -> Result<&CacheTable> {
        let slot = self.latest()?;
        match &self.slots[slot] {
            Ok(t) => Ok(t),
            Err(e) => Err(*e),
        }
    }
}

#[cfg(test)]
mod tests;
