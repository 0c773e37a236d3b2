//! Recognising what a device already holds, so that `pcache-mkfs` does not destroy it by
//! accident: a pcache superblock, common filesystem, swap, encryption and partition-table
//! signatures, or simply non-zero bytes near the start.

use crate::device::Image;
use pcache_format::layout::SB_OFF;
use pcache_format::record::PCACHE_MAGIC;
use std::fmt;
use std::io;

/// How many bytes from the start are checked for non-zero content.
pub const PROBE_BYTES: u64 = 1 << 20;

/// Something found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A pcache superblock magic at 4 096 (valid or not).
    Pcache {
        /// Whether the superblock passes its checks.
        valid: bool,
        /// Its `seg_num`.
        seg_num: u32,
    },
    /// A known signature.
    Signature {
        /// What it is, e.g. `"an ext2/3/4 filesystem"`.
        what: &'static str,
        /// Where its magic is.
        offset: u64,
    },
    /// Non-zero bytes in the first [`PROBE_BYTES`] that match no known signature.
    Data {
        /// Offset of the first non-zero byte.
        first: u64,
        /// How many bytes were looked at.
        checked: u64,
    },
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pcache {
                valid: true,
                seg_num,
            } => {
                write!(f, "a pcache cache ({seg_num} segments)")
            }
            Self::Pcache { valid: false, .. } => {
                f.write_str("a damaged pcache superblock (magic at byte 4096)")
            }
            Self::Signature { what, offset } => write!(f, "{what} (signature at byte {offset})"),
            Self::Data { first, checked } => write!(
                f,
                "non-zero data in the first {checked} bytes (the first at byte {first})"
            ),
        }
    }
}

/// `(offset, magic, description)` of the signatures checked.
const SIGNATURES: &[(u64, &[u8], &str)] = &[
    (4104, b"PCSHARED", "a pcache shared cache device"),
    (1080, &[0x53, 0xEF], "an ext2/3/4 filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (65_600, b"_BHRfS_M", "a btrfs filesystem"),
    (4086, b"SWAPSPACE2", "a swap area"),
    (4086, b"SWAP-SPACE", "a swap area"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (512, b"EFI PART", "a GPT partition table"),
    (510, &[0x55, 0xAA], "an MBR partition table or boot sector"),
    (536, b"LVM2 001", "an LVM2 physical volume"),
    (
        4096,
        &[0xFC, 0x4E, 0x2B, 0xA9],
        "a Linux MD RAID member (v1.2)",
    ),
    (3, b"NTFS    ", "an NTFS filesystem"),
    (32_769, b"CD001", "an ISO 9660 filesystem"),
    (0, b"hsqs", "a squashfs filesystem"),
    (1024, &[0x10, 0x20, 0xF5, 0xF2], "an F2FS filesystem"),
];

/// What the device holds, most specific first; empty for a device whose first
/// [`PROBE_BYTES`] are zero. Reads only.
///
/// # Errors
/// A read failed.
pub fn probe<M: Image + ?Sized>(m: &M) -> io::Result<Vec<Found>> {
    let len = m.size().min(PROBE_BYTES);
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(0)];
    m.read_at(0, &mut head)?;
    let mut found = Vec::new();
    let at = |off: u64, n: usize| {
        usize::try_from(off)
            .ok()
            .and_then(|o| head.get(o..o.checked_add(n)?))
    };
    if let Some(sb) = at(SB_OFF, 24) {
        if sb[8..16] == PCACHE_MAGIC.to_le_bytes() {
            let parsed = pcache_format::Superblock::parse(sb);
            found.push(Found::Pcache {
                valid: parsed.is_ok_and(|s| s.check_device(m.size()).is_ok()),
                seg_num: u32::from_le_bytes([sb[16], sb[17], sb[18], sb[19]]),
            });
        }
    }
    for &(offset, magic, what) in SIGNATURES {
        if at(offset, magic.len()) == Some(magic) {
            found.push(Found::Signature { what, offset });
        }
    }
    if found.is_empty() {
        if let Some(first) = head.iter().position(|&b| b != 0) {
            found.push(Found::Data {
                first: first as u64,
                checked: len,
            });
        }
    }
    Ok(found)
}

/// Whether `found` is only a pcache cache that `pcache-mkfs` itself could have written.
#[must_use]
pub fn is_pcache(found: &[Found]) -> bool {
    !found.is_empty() && found.iter().all(|f| matches!(f, Found::Pcache { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_data() {
        let mut img = vec![0u8; 2 << 20];
        assert_eq!(probe(&img).unwrap(), vec![]);
        img[1080] = 0x53;
        img[1081] = 0xEF;
        let f = probe(&img).unwrap();
        assert_eq!(
            f,
            vec![Found::Signature {
                what: "an ext2/3/4 filesystem",
                offset: 1080
            }]
        );
        assert!(f[0].to_string().contains("ext2/3/4"), "{}", f[0]);
        let mut img = vec![0u8; 2 << 20];
        img[(1 << 20) - 1] = 7;
        assert_eq!(
            probe(&img).unwrap(),
            vec![Found::Data {
                first: (1 << 20) - 1,
                checked: 1 << 20
            }]
        );
        // Beyond the probed range: not looked at.
        let mut img = vec![0u8; 2 << 20];
        img[1 << 20] = 7;
        assert!(probe(&img).unwrap().is_empty());
        // A device shorter than the signatures' offsets.
        assert!(probe(&vec![0u8; 100]).unwrap().is_empty());
        assert_eq!(
            probe(&vec![1u8; 100]).unwrap(),
            vec![Found::Data {
                first: 0,
                checked: 100
            }]
        );
    }

    #[test]
    fn pcache_superblock() {
        let mut img = vec![0u8; 2 << 20];
        img[4096..4120].copy_from_slice(&pcache_format::fresh::superblock(31));
        let f = probe(&img).unwrap();
        // Valid as a superblock, but the 2 MiB image cannot hold 31 segments.
        assert_eq!(
            f,
            vec![Found::Pcache {
                valid: false,
                seg_num: 31
            }]
        );
        assert!(is_pcache(&f));
        assert!(!is_pcache(&[]));
    }
}
