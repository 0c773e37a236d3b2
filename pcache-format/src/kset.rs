//! Ksets (the key log) and keys.
//!
//! A kset is a 24-byte header followed, unless it is a LAST kset, by `key_num` 40-byte keys.
//! Ksets are packed back to back from offset 0 of a segment's data area. The log runs from
//! key_tail to the first invalid kset (key_head); a LAST kset links to the next log segment.

use crate::crc::pcache_crc;
use crate::error::{FormatError, Reason, Result, Structure};
use crate::layout::{
    self, CachePos, KEY_SIZE, KSET_HEADER_SIZE, KSET_KEYS_MAX, KSET_SIZE_MAX, SECTOR_SIZE,
    SEG_DATA_SIZE,
};
use crate::raw::{RawKey, RawKsetHeader};
use zerocopy::{FromBytes, IntoBytes};

/// `PCACHE_KSET_MAGIC`.
pub const KSET_MAGIC: u64 = 0x6768_94a6_4e16_4f1a;
/// Kset flag: a LAST kset, linking to the next log segment.
pub const KSET_FLAG_LAST: u64 = 1;
/// Key flag EMPTY: an in-memory placeholder for a read miss; never persisted.
pub const KEY_FLAG_EMPTY: u32 = 1;
/// Key flag CLEAN: data that came from a read-miss fill; writeback skips it.
pub const KEY_FLAG_CLEAN: u32 = 1 << 1;

/// Why the log ends at a kset (not an error: replay and writeback stop there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// Fewer than 24 bytes before the end of the data area.
    NoRoom,
    /// The magic is not `PCACHE_KSET_MAGIC` (an end-of-log terminator has magic 0).
    BadMagic,
    /// A normal kset with more than 128 keys (7.x).
    TooManyKeys(u32),
    /// The CRC does not match.
    BadCrc,
}

/// What sits at a log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsetRead<'a> {
    /// A normal kset and its keys, `size` bytes in all.
    Keys {
        /// The raw keys (not yet validated; see [`Key::decode`]).
        keys: &'a [RawKey],
        /// On-media size, `24 + 40 × keys.len()`.
        size: u32,
    },
    /// A LAST kset: the log continues at `(next, 0)`.
    Last {
        /// Cache segment id of the next log segment (checked `< n_segs`).
        next: u32,
    },
    /// The end of the log.
    End(LogEnd),
}

/// Reads the kset at a log position.
///
/// `bytes` are the bytes from the position on: at least `min(5 144, room)` of them where
/// available. `room` is what is left of the data area from the position. `n_segs` bounds a
/// LAST kset's link, and `at` (the absolute offset) is for errors.
///
/// The order of checks is the kernel's: magic, then key count, then CRC (over the range
/// the untrusted LAST flag selects); a kset failing any of them is the end of the log.
/// A *valid* kset that cannot be right is an error (the 7.x hardening fails the load): a
/// LAST link out of range, or a normal kset that overruns its data area.
///
/// # Errors
/// [`Structure::Kset`] with [`Reason::OutOfRange`].
pub fn read_kset(bytes: &[u8], room: u32, n_segs: u32, at: u64) -> Result<KsetRead<'_>> {
    let room_bytes = usize::try_from(room).unwrap_or(usize::MAX);
    let bytes = &bytes[..bytes.len().min(room_bytes)];
    let Ok((hdr, _)) = RawKsetHeader::read_from_prefix(bytes) else {
        return Ok(KsetRead::End(LogEnd::NoRoom));
    };
    if hdr.magic.get() != KSET_MAGIC {
        return Ok(KsetRead::End(LogEnd::BadMagic));
    }
    if hdr.flags.get() & KSET_FLAG_LAST != 0 {
        if pcache_crc(&bytes[4..KSET_HEADER_SIZE as usize]) != hdr.crc.get() {
            return Ok(KsetRead::End(LogEnd::BadCrc));
        }
        let next = hdr.key_num.get();
        if next >= n_segs {
            return Err(FormatError::range(
                Structure::Kset,
                at,
                "next_cache_seg_id",
                u64::from(next),
                u64::from(n_segs),
            ));
        }
        return Ok(KsetRead::Last { next });
    }
    let key_num = hdr.key_num.get();
    if key_num > KSET_KEYS_MAX {
        return Ok(KsetRead::End(LogEnd::TooManyKeys(key_num)));
    }
    let size = layout::kset_size(key_num);
    let Some(body) = bytes.get(..size as usize) else {
        return Err(FormatError::range(
            Structure::Kset,
            at,
            "kset size (bytes left in the segment)",
            u64::from(size),
            u64::from(room),
        ));
    };
    if pcache_crc(&body[4..]) != hdr.crc.get() {
        return Ok(KsetRead::End(LogEnd::BadCrc));
    }
    let keys = <[RawKey]>::ref_from_bytes(&body[KSET_HEADER_SIZE as usize..])
        .map_err(|_| FormatError::new(Structure::Kset, at, Reason::Invalid("misaligned keys")))?;
    Ok(KsetRead::Keys { keys, size })
}

/// The 24 bytes of a LAST kset linking to cache segment `next`.
#[must_use]
pub fn encode_last_kset(next: u32) -> [u8; 24] {
    let mut hdr = RawKsetHeader {
        crc: 0.into(),
        key_num: next.into(),
        magic: KSET_MAGIC.into(),
        flags: KSET_FLAG_LAST.into(),
    };
    hdr.crc = pcache_crc(&hdr.as_bytes()[4..]).into();
    let mut out = [0; 24];
    out.copy_from_slice(hdr.as_bytes());
    out
}

/// An open kset being filled with keys, in its on-media encoding.
#[derive(Clone)]
pub struct KsetBuf {
    buf: [u8; KSET_SIZE_MAX as usize],
    key_num: u32,
}

impl core::fmt::Debug for KsetBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KsetBuf")
            .field("key_num", &self.key_num)
            .finish()
    }
}

impl Default for KsetBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl KsetBuf {
    /// An empty kset.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buf: [0; KSET_SIZE_MAX as usize],
            key_num: 0,
        }
    }

    /// Keys in the kset.
    #[must_use]
    pub const fn key_num(&self) -> u32 {
        self.key_num
    }

    /// Whether the kset holds no key.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.key_num == 0
    }

    /// Whether the kset holds 128 keys.
    #[must_use]
    pub const fn is_full(&self) -> bool {
        self.key_num >= KSET_KEYS_MAX
    }

    /// On-media size once sealed.
    #[must_use]
    pub const fn size(&self) -> u32 {
        layout::kset_size(self.key_num)
    }

    /// Appends a key. Returns false (and changes nothing) when the kset is full.
    pub fn push(&mut self, key: &RawKey) -> bool {
        if self.is_full() {
            return false;
        }
        let at = layout::kset_size(self.key_num) as usize;
        self.buf[at..at + KEY_SIZE as usize].copy_from_slice(key.as_bytes());
        self.key_num += 1;
        true
    }

    /// Removes the last key (used when closing the kset fails and its key is withdrawn).
    pub fn pop(&mut self) -> Option<RawKey> {
        let last = self.key_num.checked_sub(1)?;
        let at = layout::kset_size(last) as usize;
        let key = RawKey::read_from_bytes(&self.buf[at..at + KEY_SIZE as usize]).ok()?;
        self.key_num = last;
        Some(key)
    }

    /// The keys appended so far.
    #[must_use]
    pub fn keys(&self) -> &[RawKey] {
        let end = self.size() as usize;
        <[RawKey]>::ref_from_bytes(&self.buf[KSET_HEADER_SIZE as usize..end]).unwrap_or(&[])
    }

    /// Fills in the header (key count, magic, flags 0, CRC) and returns the on-media bytes.
    #[must_use]
    pub fn seal(&mut self) -> &[u8] {
        let size = self.size() as usize;
        self.buf[4..8].copy_from_slice(&self.key_num.to_le_bytes());
        self.buf[8..16].copy_from_slice(&KSET_MAGIC.to_le_bytes());
        self.buf[16..24].copy_from_slice(&0u64.to_le_bytes());
        let crc = pcache_crc(&self.buf[4..size]);
        self.buf[..4].copy_from_slice(&crc.to_le_bytes());
        &self.buf[..size]
    }

    /// Empties the kset.
    pub fn clear(&mut self) {
        self.key_num = 0;
    }
}

/// What a decoded key may point at: the backing device's size and the number of cache
/// segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBounds {
    /// Bytes on the backing device.
    pub backing_size: u64,
    /// Number of cache segments.
    pub n_segs: u32,
}

/// A validated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Logical byte offset on the backing device.
    pub off: u64,
    /// Length in bytes.
    pub len: u32,
    /// Flags ([`KEY_FLAG_CLEAN`]).
    pub flags: u32,
    /// Where the data is.
    pub pos: CachePos,
    /// Generation of the data segment at allocation.
    pub seg_gen: u64,
    /// CRC of the data (0 unless the cache has DATA_CRC).
    pub data_crc: u32,
}

impl Key {
    /// Whether the key came from a read-miss fill (writeback skips it).
    #[must_use]
    pub const fn is_clean(&self) -> bool {
        self.flags & KEY_FLAG_CLEAN != 0
    }

    /// One past the last logical byte.
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.off + self.len as u64
    }

    /// Validates a raw key: every check of the kernel's 7.x decode except the data CRC
    /// (which needs the data; see [`crate::crc::pcache_crc`]): `len ≠ 0`,
    /// `off + len ≤ backing size`, `cache_seg_id < n_segs`,
    /// `cache_seg_off + len ≤ data size`. It also refuses what no kernel writes and pcache
    /// could not serve: a key that crosses a 4 MiB logical boundary (the index could not
    /// hold it), and one whose `off`, `len` or `cache_seg_off` is not a multiple of 512
    /// (block I/O is in sectors: writeback could not write it back).
    ///
    /// # Errors
    /// [`Structure::Key`] with the failed bound.
    pub fn decode(raw: &RawKey, bounds: &KeyBounds, at: u64) -> Result<Self> {
        let key = Self::decode_kernel(raw, bounds, at)?;
        key.check_alignment(at)?;
        if u64::from(key.len) > layout::bytes_to_subtree_end(key.off) {
            return Err(FormatError::range(
                Structure::Key,
                at,
                "len (to the 4 MiB boundary)",
                u64::from(key.len),
                layout::bytes_to_subtree_end(key.off),
            ));
        }
        Ok(key)
    }

    /// pcache's sector check of a decoded key: `off`, `len` and `cache_seg_off` are
    /// multiples of 512, as every key the kernel or pcache writes.
    ///
    /// # Errors
    /// [`Reason::Misaligned`] naming the first field that is not.
    pub fn check_alignment(&self, at: u64) -> Result<()> {
        let sector = u64::from(SECTOR_SIZE);
        for (field, value) in [
            ("off", self.off),
            ("len", u64::from(self.len)),
            ("cache_seg_off", u64::from(self.pos.off)),
        ] {
            if !value.is_multiple_of(sector) {
                return Err(FormatError::new(
                    Structure::Key,
                    at,
                    Reason::Misaligned {
                        field,
                        value,
                        align: sector,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Exactly the kernel's 7.x checks, no more: [`Key::decode`] without the 4 MiB rule.
    /// A checker uses it to tell what the kernel would refuse (an error) from what it
    /// would accept although no kernel writes it (a key crossing a 4 MiB boundary).
    ///
    /// # Errors
    /// [`Structure::Key`] with the failed bound.
    pub fn decode_kernel(raw: &RawKey, bounds: &KeyBounds, at: u64) -> Result<Self> {
        let key = Self {
            off: raw.off.get(),
            len: raw.len.get(),
            flags: raw.flags.get(),
            pos: CachePos::new(raw.cache_seg_id.get(), raw.cache_seg_off.get()),
            seg_gen: raw.seg_gen.get(),
            data_crc: raw.data_crc.get(),
        };
        let bad = |field, value: u64, limit: u64| {
            Err(FormatError::range(Structure::Key, at, field, value, limit))
        };
        if key.len == 0 {
            return bad("len (minimum, inclusive)", 0, 1);
        }
        match key.off.checked_add(u64::from(key.len)) {
            Some(end) if end <= bounds.backing_size => {}
            _ => {
                return bad(
                    "off + len",
                    key.off.saturating_add(u64::from(key.len)),
                    bounds.backing_size,
                )
            }
        }
        if key.pos.seg >= bounds.n_segs {
            return bad(
                "cache_seg_id",
                u64::from(key.pos.seg),
                u64::from(bounds.n_segs),
            );
        }
        if u64::from(key.pos.off) + u64::from(key.len) > u64::from(SEG_DATA_SIZE) {
            return bad(
                "cache_seg_off + len",
                u64::from(key.pos.off) + u64::from(key.len),
                u64::from(SEG_DATA_SIZE),
            );
        }
        Ok(key)
    }

    /// The on-media key (reserved 0; the EMPTY flag is never persisted).
    #[must_use]
    pub fn to_raw(&self) -> RawKey {
        RawKey {
            off: self.off.into(),
            len: self.len.into(),
            flags: (self.flags & !KEY_FLAG_EMPTY).into(),
            cache_seg_id: self.pos.seg.into(),
            cache_seg_off: self.pos.off.into(),
            seg_gen: self.seg_gen.into(),
            data_crc: self.data_crc.into(),
            reserved: 0.into(),
        }
    }
}

#[cfg(test)]
mod tests;
