//! Telling a kset damaged by one flipped bit from a torn write.
//!
//! Both end the log at a kset that fails its checks, and replay treats both as the end of
//! the log (as the kernel does). They differ in what they mean: a kset torn by a power cut
//! was the last write and was never promised, while a kset that is a valid kset with one
//! bit flipped was written whole (its CRC says so) and was damaged afterwards: the data it
//! indexes, and every kset behind it, were durable.
//!
//! A tear replaces whole words (8-byte stores) of a kset with old bytes, so it essentially
//! never looks like a single flipped bit: [`one_bit_damage`] finds the bit whose flip turns
//! the bytes into a valid kset, if there is one. Header bits are tried one by one; for the
//! keys, the CRC's linearity finds the bit from the CRC difference (the syndrome) in one
//! pass instead of one CRC per bit.

use crate::crc::pcache_crc;
use crate::kset::{read_kset, KsetRead, KSET_FLAG_LAST, KSET_MAGIC};
use crate::layout::{self, KSET_HEADER_SIZE, KSET_KEYS_MAX, KSET_SIZE_MAX};
use crate::raw::RawKsetHeader;
use zerocopy::FromBytes;

/// A bit that, flipped back, makes a valid kset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitFlip {
    /// The byte, from the start of the kset.
    pub byte: u32,
    /// The bit in it (0 = least significant).
    pub bit: u8,
    /// The kset it was.
    pub was: KsetShape,
}

/// What a repaired kset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsetShape {
    /// A normal kset of `key_num` keys, `size` bytes.
    Keys {
        /// Number of keys.
        key_num: u32,
        /// On-media size.
        size: u32,
    },
    /// A LAST kset linking to `next`.
    Last {
        /// The next log segment.
        next: u32,
    },
}

impl KsetShape {
    /// On-media size.
    #[must_use]
    pub fn size(&self) -> u32 {
        match *self {
            KsetShape::Keys { size, .. } => size,
            KsetShape::Last { .. } => KSET_HEADER_SIZE,
        }
    }
}

/// The reflected CRC-32C table (Castagnoli, 0x82F63B78).
const TABLE: [u32; 256] = {
    let mut t = [0_u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The single flipped bit that explains the invalid kset at the start of `bytes` (the
/// bytes from its log position on, as many as the segment has up to 5 144), or `None`:
/// then it is a torn write, the zero terminator, or damage of more than one bit. `room`
/// and `n_segs` are as for [`read_kset`].
#[must_use]
pub fn one_bit_damage(bytes: &[u8], room: u32, n_segs: u32) -> Option<BitFlip> {
    let len = bytes.len().min(room as usize).min(KSET_SIZE_MAX as usize);
    let bytes = &bytes[..len];
    if len < KSET_HEADER_SIZE as usize || is_valid(bytes, room, n_segs).is_some() {
        return None;
    }
    let mut buf = bytes.to_vec();
    // Header bits: each changes how the kset is read (magic, LAST, key count, CRC).
    for byte in 0..KSET_HEADER_SIZE as usize {
        for bit in 0..8 {
            buf[byte] ^= 1 << bit;
            let valid = is_valid(&buf, room, n_segs);
            buf[byte] ^= 1 << bit;
            if let Some(was) = valid {
                return Some(BitFlip {
                    byte: byte as u32,
                    bit,
                    was,
                });
            }
        }
    }
    // Key bits: the header is intact, so the CRC covers [4, size) and differs from the
    // stored one by the syndrome of the flipped bit.
    let (hdr, _) = RawKsetHeader::read_from_prefix(bytes).ok()?;
    if hdr.magic.get() != KSET_MAGIC || hdr.flags.get() & KSET_FLAG_LAST != 0 {
        return None;
    }
    let key_num = hdr.key_num.get();
    if key_num > KSET_KEYS_MAX {
        return None;
    }
    let size = layout::kset_size(key_num);
    let covered = bytes.get(4..size as usize)?;
    let syndrome = pcache_crc(covered) ^ hdr.crc.get();
    // The CRC is affine in the message: flipping bit `b` of byte `j` of an `n`-byte message
    // changes it by TABLE[1 << b] advanced through the n - 1 - j bytes after it.
    let mut v: [u32; 8] = std::array::from_fn(|b| TABLE[1 << b]);
    for j in (0..covered.len()).rev() {
        if let Some(bit) = v.iter().position(|&x| x == syndrome) {
            let byte = 4 + j as u32;
            // Only key bytes are left to explain (header bytes were tried above).
            if byte >= KSET_HEADER_SIZE {
                let was = KsetShape::Keys { key_num, size };
                return Some(BitFlip {
                    byte,
                    bit: bit as u8,
                    was,
                });
            }
            return None;
        }
        for x in &mut v {
            *x = (*x >> 8) ^ TABLE[(*x & 0xff) as usize];
        }
    }
    None
}

fn is_valid(bytes: &[u8], room: u32, n_segs: u32) -> Option<KsetShape> {
    match read_kset(bytes, room, n_segs, 0) {
        Ok(KsetRead::Keys { keys, size }) => Some(KsetShape::Keys {
            key_num: keys.len() as u32,
            size,
        }),
        Ok(KsetRead::Last { next }) => Some(KsetShape::Last { next }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kset::{encode_last_kset, KsetBuf};
    use crate::layout::CachePos;
    use crate::Key;

    fn kset(n: u32) -> Vec<u8> {
        let mut b = KsetBuf::default();
        for i in 0..n {
            let k = Key {
                off: u64::from(i) * 8192,
                len: 4096 + 512 * i,
                flags: i & 2,
                pos: CachePos::new(i % 7, i * 4096),
                seg_gen: u64::from(i) * 3,
                data_crc: i.wrapping_mul(0x9E37_79B9),
            };
            assert!(b.push(&k.to_raw()));
        }
        let mut v = b.seal().to_vec();
        // What follows on the media: the terminator, then old bytes.
        v.extend_from_slice(&[0; 24]);
        v.extend((0..200_u32).map(|i| (i * 37) as u8));
        v
    }

    #[test]
    fn the_table_is_crc32c() {
        // Raw update of the seed over one byte, against the crate.
        let seed = crate::crc::PCACHE_CRC_SEED;
        let byte = 0xA5_u8;
        let by_table = (seed >> 8) ^ TABLE[((seed ^ u32::from(byte)) & 0xff) as usize];
        assert_eq!(by_table, pcache_crc(&[byte]));
    }

    #[test]
    fn every_single_bit_flip_of_a_kset_is_found_and_located() {
        for n in [0_u32, 1, 3, 128] {
            let good = kset(n);
            let size = layout::kset_size(n) as usize;
            for byte in 0..size {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[byte] ^= 1 << bit;
                    let room = 1 << 20;
                    match one_bit_damage(&bad, room, 8) {
                        Some(f) => {
                            // Flipping it back gives a valid kset (usually the very bit).
                            bad[f.byte as usize] ^= 1 << f.bit;
                            assert!(is_valid(&bad, room, 8).is_some());
                            if byte >= 24 {
                                assert_eq!((f.byte as usize, f.bit), (byte, bit));
                                assert_eq!(
                                    f.was,
                                    KsetShape::Keys {
                                        key_num: n,
                                        size: size as u32
                                    }
                                );
                            }
                        }
                        None => panic!("{n} keys: flip of byte {byte} bit {bit} not found"),
                    }
                }
            }
        }
    }

    #[test]
    fn last_ksets_too() {
        let mut v = encode_last_kset(3).to_vec();
        v[18] ^= 1 << 4; // a flags bit
        let f = one_bit_damage(&v, 1 << 20, 8).unwrap();
        assert_eq!((f.byte, f.bit, f.was), (18, 4, KsetShape::Last { next: 3 }));
    }

    #[test]
    fn torn_writes_the_terminator_and_valid_ksets_are_not_bit_flips() {
        let good = kset(5);
        assert_eq!(one_bit_damage(&good, 1 << 20, 8), None, "a valid kset");
        assert_eq!(one_bit_damage(&[0; 64], 1 << 20, 8), None, "the terminator");
        // Tears: the kset with its second half (or one word) still the old bytes.
        let size = layout::kset_size(5) as usize;
        let mut old: Vec<u8> = (0..good.len()).map(|i| (i * 91 + 7) as u8).collect();
        old[..24].fill(0);
        for cut in (8..size).step_by(8) {
            let mut torn = good.clone();
            torn[cut..size].copy_from_slice(&old[cut..size]);
            if is_valid(&torn, 1 << 20, 8).is_none() {
                assert_eq!(one_bit_damage(&torn, 1 << 20, 8), None, "torn at {cut}");
            }
            let mut word = good.clone();
            word[cut..cut + 8].copy_from_slice(&old[cut..cut + 8]);
            if is_valid(&word, 1 << 20, 8).is_none() {
                assert_eq!(one_bit_damage(&word, 1 << 20, 8), None, "word at {cut}");
            }
        }
        // Two flipped bits are not one.
        let mut two = good.clone();
        two[40] ^= 1;
        two[100] ^= 4;
        assert_eq!(one_bit_damage(&two, 1 << 20, 8), None);
    }
}
