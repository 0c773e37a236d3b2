//! [`fill_one_key_ksets`]: a cache whose log fills it with ksets of one key each.

use crate::error::Result;
use crate::Cache;
use pcache_format::layout::SEG_DATA_SIZE;

/// The backing device [`fill_one_key_ksets`] writes to: 1 GiB, twice what a 512 MiB
/// cache holds.
pub const FILL_BACKING: u64 = 1 << 30;

/// Slots of `len` bytes the writes are spread over: one every `2 × len` bytes of
/// [`FILL_BACKING`].
#[must_use]
pub const fn fill_slots(len: u32) -> u64 {
    FILL_BACKING / (2 * len as u64)
}

/// The logical offset of write `i` of [`fill_one_key_ksets`] with writes of `len` bytes:
/// slot `i × 0x9E37_79B1 mod fill_slots(len)` (a permutation: the slot count is a power
/// of two and the multiplier odd), slots `2 × len` bytes apart, so no two extents touch
/// (none merges), none crosses a 4 MiB boundary (each write is one key), and the index
/// fills in a scattered order.
#[must_use]
pub const fn fill_offset(i: u64, len: u32) -> u64 {
    let slot = i.wrapping_mul(0x9E37_79B1) % fill_slots(len);
    slot * 2 * len as u64
}

/// The data of write `i`: `len` bytes, each sector different from every other write's.
#[must_use]
pub fn fill_data(i: u64, len: u32) -> Vec<u8> {
    (0..u64::from(len))
        .map(|b| {
            let x = ((i << 20) | (b / 8)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // The top byte.
            #[allow(clippy::cast_possible_truncation)]
            let byte = (x >> 56) as u8;
            byte
        })
        .collect()
}

/// Fills `cache` (opened read-write, without background workers, on queue 0 only) with
/// FUA writes of `len` bytes (a power of two that divides the 16 764 928-byte data area:
/// 512 to 4096), write `i` at [`fill_offset`] holding [`fill_data`]: each FUA closes the
/// open kset, so every kset holds one key, and no two keys touch. Stops when the cache is full, before
/// the write that would need a new data segment where only the log's reserve is left
/// (so nothing is ever reclaimed, written back or collected), or after `max` writes.
/// Returns the number of writes.
///
/// The data head fills one segment after the other, `SEG_DATA_SIZE / len` writes each:
/// the cache is full when that many have filled the segment taken last and a single
/// segment, the log's reserve, is free.
///
/// # Errors
/// A write failed.
///
/// # Panics
/// If `len` does not divide the data area or the slots run out.
pub fn fill_one_key_ksets(cache: &Cache, len: u32, max: u64) -> Result<u64> {
    assert!(
        len.is_power_of_two() && len >= 512 && SEG_DATA_SIZE.is_multiple_of(len),
        "{len} does not divide a data area"
    );
    let per_seg = u64::from(SEG_DATA_SIZE / len);
    let n_segs = cache.status().kernel.n_segs;
    let mut i = 0;
    while i < max {
        assert!(i < fill_slots(len), "out of slots after {i} writes");
        cache.write(0, fill_offset(i, len), &fill_data(i, len), true)?;
        i += 1;
        if i.is_multiple_of(per_seg) && cache.status().kernel.segs_used + 1 >= n_segs {
            break;
        }
    }
    Ok(i)
}
