//! The CRC every dm-pcache checksum uses.
//!
//! dm-pcache calls the kernel's `crc32c(seed, buf, len)` with `seed = 0x3B15A`. That
//! function is a *raw* reflected CRC-32C register update: the register starts at the seed
//! as given, and there is neither an initial inversion nor a final XOR. The `crc32c`
//! crate's `crc32c_append(c, buf)` computes `!raw(!c, buf)`, so the kernel value is
//! `!crc32c_append(!seed, buf)`.

/// The seed dm-pcache passes to every `crc32c` call (`PCACHE_CRC_SEED`).
pub const PCACHE_CRC_SEED: u32 = 0x0003_B15A;

/// The kernel's raw `crc32c(seed, buf)`: no initial inversion, no final XOR.
#[must_use]
pub fn kernel_crc32c(seed: u32, buf: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, buf)
}

/// `crc32c(PCACHE_CRC_SEED, buf)`: the checksum of every dm-pcache record and of key data.
#[must_use]
pub fn pcache_crc(buf: &[u8]) -> u32 {
    kernel_crc32c(PCACHE_CRC_SEED, buf)
}

/// Continues a pcache CRC over more bytes: `pcache_crc_append(pcache_crc(a), b)` equals
/// `pcache_crc(a ++ b)`. Used for key data that is not contiguous in memory.
#[must_use]
pub fn pcache_crc_append(crc: u32, buf: &[u8]) -> u32 {
    kernel_crc32c(crc, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of upstream-format.md D.5, computed there by an independent table
    /// implementation of the kernel function.
    #[test]
    fn kernel_vectors() {
        assert_eq!(pcache_crc(b""), 0x0003_B15A);
        assert_eq!(pcache_crc(b"123456789"), 0xE586_8AB2);
        assert_eq!(pcache_crc(&[0; 12]), 0x5F84_0B80);
        assert_eq!(pcache_crc(&[0; 20]), 0xB9B6_9066);
        assert_eq!(pcache_crc(&[0; 4096]), 0x6035_71B1);
    }

    /// The standard CRC-32C check value: proves the polynomial is Castagnoli, not IEEE.
    #[test]
    fn standard_check_value() {
        assert_eq!(!kernel_crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn append_is_concatenation() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let (a, b) = data.split_at(333);
        assert_eq!(pcache_crc_append(pcache_crc(a), b), pcache_crc(&data));
    }
}
