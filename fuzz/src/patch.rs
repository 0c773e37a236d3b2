//! The input of the structured image targets: which base image, on which device and
//! backing sizes, and a list of patches over it. A patch is raw bytes or a bit flip at a
//! place in one of the regions where metadata and data live, or a record (superblock,
//! dual-record copy, kset, LAST kset) with arbitrary fields and a *valid* CRC, so the
//! fuzzer gets past the CRC checks to the range checks, the chain walk and the log walk.
//!
//! The byte format is simple and documented here, so the seed generator can write
//! inputs ([`Input::encode`]):
//!
//! ```text
//! input  := base:u8 variant:u8 patch*
//! patch  := tag:u8 body            (tag % 6 selects the kind; a truncated patch is dropped)
//!   0 bytes   region:u8 off:u32 len:u8 data[len]
//!   1 record  which:u8 seg:u8 data[size - 4]     (the record's bytes after its CRC)
//!   2 kset    seg:u8 off:u32 n:u8 key[n % 17] (40 bytes each)
//!   3 last    seg:u8 off:u32 next:u32
//!   4 sb      flags:u32 seg_num:u32 pad[4]
//!   5 flip    region:u8 off:u32 bit:u8
//! ```
//!
//! Integers are little-endian. A region is the head of the device (`[0, 20 480)`: the
//! superblock, cache_info and the tails), a segment's metadata (its seg_info and gen
//! copies) or the first MiB of a segment's data area (ksets and key data); offsets wrap
//! inside it. Segments are taken modulo 31.

use crate::base::Base;
use pcache_format::kset::{encode_last_kset, KsetBuf};
use pcache_format::layout::{self, SEGMENTS_OFF, SEG_DATA_OFF};
use pcache_format::pcache_crc;
use pcache_format::raw::RawKey;
use pcache_format::Superblock;
use pcache_tools::testimg::SparseImage;
use pcache_tools::{Image, ImageMut};
use zerocopy::FromBytes;

/// Segments the patches address.
const SEGS: u32 = 31;
/// The part of a data area the patches address.
const DATA_SPAN: u32 = 1 << 20;

/// One patch, in the form it is encoded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch {
    /// Raw bytes.
    Bytes {
        /// Region selector.
        region: u8,
        /// Offset in the region (wraps).
        off: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A dual-record copy with a valid CRC.
    Record {
        /// `which % 5`: cache_info, key_tail, dirty_tail, seg_info, gen; bit 3: slot.
        which: u8,
        /// The segment of a seg_info or gen copy.
        seg: u8,
        /// The record's bytes after the CRC (16 - 4 or 24 - 4 of them).
        data: Vec<u8>,
    },
    /// A kset of these keys, sealed.
    Kset {
        /// Segment.
        seg: u8,
        /// Offset in the data area (wraps in its first MiB; rounded down to 8).
        off: u32,
        /// The keys' raw bytes.
        keys: Vec<[u8; 40]>,
    },
    /// A LAST kset.
    Last {
        /// Segment.
        seg: u8,
        /// Offset in the data area (as for a kset).
        off: u32,
        /// Its link.
        next: u32,
    },
    /// A superblock with a valid CRC.
    Superblock {
        /// Flags.
        flags: u32,
        /// Segment count.
        seg_num: u32,
        /// Padding.
        pad: [u8; 4],
    },
    /// One bit flipped.
    Flip {
        /// Region selector.
        region: u8,
        /// Offset in the region (wraps).
        off: u32,
        /// Bit (mod 8).
        bit: u8,
    },
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Input {
    /// Base image selector (modulo the number of bases).
    pub base: u8,
    /// Bits 0-1: the device size; bits 2-3: the backing size.
    pub variant: u8,
    /// The patches, in order.
    pub patches: Vec<Patch>,
}

struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn record_size(which: u8) -> usize {
    if which.is_multiple_of(5) {
        24
    } else {
        16
    }
}

impl Input {
    /// Decodes an input; what cannot be decoded at the end is ignored.
    #[must_use]
    pub fn decode(data: &[u8]) -> Self {
        let mut r = Rd(data);
        let mut out = Self {
            base: r.u8().unwrap_or(0),
            variant: r.u8().unwrap_or(0),
            patches: Vec::new(),
        };
        while let Some(p) = Self::patch(&mut r) {
            out.patches.push(p);
        }
        out
    }

    fn patch(r: &mut Rd<'_>) -> Option<Patch> {
        Some(match r.u8()? % 6 {
            0 => {
                let (region, off, len) = (r.u8()?, r.u32()?, r.u8()?);
                let data = r.take(usize::from(len))?.to_vec();
                Patch::Bytes { region, off, data }
            }
            1 => {
                let (which, seg) = (r.u8()?, r.u8()?);
                let data = r.take(record_size(which) - 4)?.to_vec();
                Patch::Record { which, seg, data }
            }
            2 => {
                let (seg, off, n) = (r.u8()?, r.u32()?, r.u8()?);
                let mut keys = Vec::new();
                for _ in 0..n % 17 {
                    let mut k = [0u8; 40];
                    k.copy_from_slice(r.take(40)?);
                    keys.push(k);
                }
                Patch::Kset { seg, off, keys }
            }
            3 => Patch::Last {
                seg: r.u8()?,
                off: r.u32()?,
                next: r.u32()?,
            },
            4 => {
                let (flags, seg_num) = (r.u32()?, r.u32()?);
                let mut pad = [0; 4];
                pad.copy_from_slice(r.take(4)?);
                Patch::Superblock {
                    flags,
                    seg_num,
                    pad,
                }
            }
            _ => Patch::Flip {
                region: r.u8()?,
                off: r.u32()?,
                bit: r.u8()?,
            },
        })
    }

    /// The bytes that decode to this input.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.base, self.variant];
        for p in &self.patches {
            match p {
                Patch::Bytes { region, off, data } => {
                    out.push(0);
                    out.push(*region);
                    out.extend_from_slice(&off.to_le_bytes());
                    let data = &data[..data.len().min(255)];
                    out.push(data.len() as u8);
                    out.extend_from_slice(data);
                }
                Patch::Record { which, seg, data } => {
                    out.extend_from_slice(&[1, *which, *seg]);
                    let mut d = data.clone();
                    d.resize(record_size(*which) - 4, 0);
                    out.extend_from_slice(&d);
                }
                Patch::Kset { seg, off, keys } => {
                    out.extend_from_slice(&[2, *seg]);
                    out.extend_from_slice(&off.to_le_bytes());
                    let keys = &keys[..keys.len().min(16)];
                    out.push(keys.len() as u8);
                    for k in keys {
                        out.extend_from_slice(k);
                    }
                }
                Patch::Last { seg, off, next } => {
                    out.extend_from_slice(&[3, *seg]);
                    out.extend_from_slice(&off.to_le_bytes());
                    out.extend_from_slice(&next.to_le_bytes());
                }
                Patch::Superblock {
                    flags,
                    seg_num,
                    pad,
                } => {
                    out.push(4);
                    out.extend_from_slice(&flags.to_le_bytes());
                    out.extend_from_slice(&seg_num.to_le_bytes());
                    out.extend_from_slice(pad);
                }
                Patch::Flip { region, off, bit } => {
                    out.extend_from_slice(&[5, *region]);
                    out.extend_from_slice(&off.to_le_bytes());
                    out.push(*bit);
                }
            }
        }
        out
    }

    /// The device size: 512 MiB (31 segments) mostly; a device with room for one more
    /// segment than the superblock says; 1 GiB; and one too small for a cache.
    #[must_use]
    pub fn device_size(&self) -> u64 {
        match self.variant & 3 {
            0 | 1 => crate::DEVICE,
            2 => crate::DEVICE + layout::SEG_SIZE + 4096,
            _ => 100 << 20,
        }
    }

    /// The backing size: the base's, a small one (keys fall outside it), or one that is
    /// not a multiple of 4 KiB.
    #[must_use]
    pub fn backing_size(&self, base: &Base) -> u64 {
        match (self.variant >> 2) & 3 {
            0 | 1 => base.backing_size,
            2 => 1 << 20,
            _ => base.backing_size - 512,
        }
    }

    /// The base image, resized and patched.
    #[must_use]
    pub fn build<'b>(&self, bases: &'b [Base]) -> (&'b Base, SparseImage) {
        let base = &bases[usize::from(self.base) % bases.len()];
        let size = self.device_size();
        let mut img = if size == base.image.size() {
            base.image.clone()
        } else {
            base.image.resized(size)
        };
        for p in &self.patches {
            apply(&mut img, p);
        }
        (base, img)
    }
}

/// Absolute offset of `off` in region `region`.
fn region(region: u8, off: u32) -> u64 {
    let r = u32::from(region) % (1 + 2 * SEGS);
    if r == 0 {
        return u64::from(off) % SEGMENTS_OFF;
    }
    let seg = (r - 1) / 2;
    if r % 2 == 1 {
        layout::segment_base(seg) + u64::from(off) % SEG_DATA_OFF
    } else {
        layout::data_area_off(seg) + u64::from(off % DATA_SPAN)
    }
}

/// Absolute offset of a kset at `off` in segment `seg`'s data area.
fn log_at(seg: u8, off: u32) -> u64 {
    layout::data_area_off(u32::from(seg) % SEGS) + u64::from((off % DATA_SPAN) & !7)
}

fn apply(img: &mut SparseImage, p: &Patch) {
    // A patch beyond a small device is lost, as it would be on the device.
    let _ = match p {
        Patch::Bytes {
            region: r,
            off,
            data,
        } => img.write_at(region(*r, *off), data),
        Patch::Record { which, seg, data } => {
            let slot = usize::from(which >> 3 & 1);
            let seg = u32::from(*seg) % SEGS;
            let at = match which % 5 {
                0 => layout::cache_info_off(slot),
                1 => layout::key_tail_off(slot),
                2 => layout::dirty_tail_off(slot),
                3 => layout::seg_info_off(seg, slot),
                _ => layout::seg_gen_off(seg, slot),
            };
            let mut rec = pcache_crc(data).to_le_bytes().to_vec();
            rec.extend_from_slice(data);
            img.write_at(at, &rec)
        }
        Patch::Kset { seg, off, keys } => {
            let mut buf = KsetBuf::new();
            for k in keys {
                if let Ok(raw) = RawKey::read_from_bytes(k) {
                    buf.push(&raw);
                }
            }
            img.write_at(log_at(*seg, *off), buf.seal())
        }
        Patch::Last { seg, off, next } => {
            img.write_at(log_at(*seg, *off), &encode_last_kset(*next))
        }
        Patch::Superblock {
            flags,
            seg_num,
            pad,
        } => {
            let sb = Superblock {
                flags: *flags,
                seg_num: *seg_num,
                pad: *pad,
            };
            img.write_at(layout::SB_OFF, &sb.encode())
        }
        Patch::Flip {
            region: r,
            off,
            bit,
        } => {
            let at = region(*r, *off);
            if at < img.size() {
                img.flip(at, *bit % 8);
            }
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let input = Input {
            base: 3,
            variant: 6,
            patches: vec![
                Patch::Bytes {
                    region: 7,
                    off: 99,
                    data: vec![1, 2, 3],
                },
                Patch::Record {
                    which: 8 + 3,
                    seg: 4,
                    data: vec![9; 12],
                },
                Patch::Kset {
                    seg: 1,
                    off: 4096,
                    keys: vec![[7; 40]; 2],
                },
                Patch::Last {
                    seg: 0,
                    off: 64,
                    next: 5,
                },
                Patch::Superblock {
                    flags: 0,
                    seg_num: 31,
                    pad: [0; 4],
                },
                Patch::Flip {
                    region: 0,
                    off: 4100,
                    bit: 3,
                },
            ],
        };
        assert_eq!(Input::decode(&input.encode()), input);
        assert_eq!(Input::decode(&[]), Input::default());
    }
}
