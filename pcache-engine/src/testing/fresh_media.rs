//! [`FreshMedia`]: a freshly formatted cache of any size, computed rather than stored.

use crate::media::{CacheMedia, MediaError};
use parking_lot::Mutex;
use pcache_format::layout::{self, SEG_SIZE};
use pcache_format::record::{encode_meta, SegGen, SegInfo};
use pcache_format::{fresh, layout::SEGMENTS_OFF};
use std::collections::BTreeMap;
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;

/// Cache media that reads as a cache just formatted by `pcache-mkfs` (the kernel's first
/// activation; default settings, so cache_info is [`fresh::cache_info`] with `data_crc`
/// and gc_percent 70) on a device of any size, up to the format's maximum of 1 048 576
/// segments: the metadata of a segment is computed when it is read, and only the pages
/// written since cost memory (4 KiB each, copied on first write).
///
/// A fresh cache holds three metadata pages per segment, 12 GiB at the maximum segment
/// count, which neither memory nor a sparse file of a test can hold; this is how a test
/// gets a cache at the limit. The bytes are those of [`fresh`] (the unit tests compare
/// them with a formatted [`crate::media::MemMedia`], and `pcache-tools`' limit tests with
/// `pcache-mkfs`'s output).
#[derive(Debug)]
pub struct FreshMedia {
    len: u64,
    seg_num: u32,
    data_crc: bool,
    /// Pages written, by page number.
    pages: Mutex<BTreeMap<u64, Box<[u8; PAGE as usize]>>>,
}

impl FreshMedia {
    /// A device of `len` bytes holding a fresh cache of as many segments as fit (capped at
    /// the maximum, as `pcache-mkfs` does), with or without data CRCs.
    ///
    /// # Panics
    /// If `len` is under 512 MiB.
    #[must_use]
    pub fn new(len: u64, data_crc: bool) -> Self {
        Self {
            len,
            seg_num: layout::seg_num_for_device(len).expect("at least 512 MiB"),
            data_crc,
            pages: Mutex::new(BTreeMap::new()),
        }
    }

    /// The segment count of the cache.
    #[must_use]
    pub const fn seg_num(&self) -> u32 {
        self.seg_num
    }

    /// Pages written since the format (each costs 4 KiB of memory).
    #[must_use]
    pub fn pages_written(&self) -> usize {
        self.pages.lock().len()
    }

    /// The fresh image's bytes at `off` into `buf` (which must lie inside the device).
    fn fresh_bytes(&self, off: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = off + buf.len() as u64;
        let mut put = |at: u64, rec: &[u8]| {
            let (lo, hi) = (at.max(off), (at + rec.len() as u64).min(end));
            if lo < hi {
                // In range of both by the clamp above.
                #[allow(clippy::cast_possible_truncation)]
                buf[(lo - off) as usize..(hi - off) as usize]
                    .copy_from_slice(&rec[(lo - at) as usize..(hi - at) as usize]);
            }
        };
        if off < SEGMENTS_OFF {
            put(layout::SB_OFF, &fresh::superblock(self.seg_num));
            put(
                layout::cache_info_off(fresh::CACHE_INFO_SLOT),
                &fresh::cache_info(self.seg_num, self.data_crc, 70),
            );
            put(layout::CACHE_CTRL_OFF, &fresh::ctrl_block());
        }
        let first = off.saturating_sub(SEGMENTS_OFF) / SEG_SIZE;
        let last = end.saturating_sub(SEGMENTS_OFF).div_ceil(SEG_SIZE);
        for phys in first..last.min(u64::from(self.seg_num)) {
            // Below seg_num, a u32.
            #[allow(clippy::cast_possible_truncation)]
            let phys = phys as u32;
            if phys + 1 < self.seg_num {
                let linked = encode_meta(&SegInfo::data(Some(phys + 1)), 2);
                put(layout::seg_info_off(phys, 0), linked.as_bytes());
            }
            let last = encode_meta(&SegInfo::data(None), 1);
            put(layout::seg_info_off(phys, 1), last.as_bytes());
            put(
                layout::seg_gen_off(phys, 1),
                encode_meta(&SegGen(0), 1).as_bytes(),
            );
        }
    }
}

impl CacheMedia for FreshMedia {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        crate::media::check_range(off, buf.len(), self.len)?;
        self.fresh_bytes(off, buf);
        let end = off + buf.len() as u64;
        let pages = self.pages.lock();
        for (&n, page) in pages.range(off / PAGE..end.div_ceil(PAGE)) {
            let at = n * PAGE;
            let (lo, hi) = (at.max(off), (at + PAGE).min(end));
            // Inside the buffer and the page by the clamp above.
            #[allow(clippy::cast_possible_truncation)]
            buf[(lo - off) as usize..(hi - off) as usize]
                .copy_from_slice(&page[(lo - at) as usize..(hi - at) as usize]);
        }
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        crate::media::check_range(off, data.len(), self.len)?;
        let end = off + data.len() as u64;
        let mut pages = self.pages.lock();
        for n in off / PAGE..end.div_ceil(PAGE) {
            let at = n * PAGE;
            let page = pages.entry(n).or_insert_with(|| {
                let mut p = Box::new([0; PAGE as usize]);
                let len = (self.len - at).min(PAGE);
                // At most a page.
                #[allow(clippy::cast_possible_truncation)]
                self.fresh_bytes(at, &mut p[..len as usize]);
                p
            });
            let (lo, hi) = (at.max(off), (at + PAGE).min(end));
            // Inside the page and the data by the clamp above.
            #[allow(clippy::cast_possible_truncation)]
            page[(lo - at) as usize..(hi - at) as usize]
                .copy_from_slice(&data[(lo - off) as usize..(hi - off) as usize]);
        }
        Ok(())
    }

    fn flush(&self, _off: u64, _len: u64) {}

    fn fence(&self) {}

    fn describe(&self) -> String {
        format!("computed fresh cache ({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte equals the engine's own format of the same device (the kernel's), read
    /// in pieces that straddle records, pages and segments; and writes land on top.
    #[test]
    fn reads_as_the_engine_formats() {
        let len = (512 << 20) + (40 << 20) + 12_345;
        let fresh = FreshMedia::new(len, false);
        let mem = crate::testing::formatted(len);
        let media: std::sync::Arc<dyn CacheMedia> = std::sync::Arc::new(mem);
        let c = crate::Cache::open(
            media.clone(),
            std::sync::Arc::new(crate::backing::MemBacking::new(1 << 20)),
            crate::CacheConfig {
                background: false,
                ..crate::CacheConfig::default()
            },
        )
        .unwrap();
        c.close().unwrap();
        drop(c);
        // The open persisted cache_info again (slot 0, seq 2): compare it apart.
        let ci0 = layout::cache_info_off(0);
        let mut a = vec![0; 1 << 20];
        let mut b = vec![0; 1 << 20];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(a.len() as u64 - 4099) as usize;
            fresh.read(off, &mut a[..n]).unwrap();
            media.read(off, &mut b[..n]).unwrap();
            if off == 0 {
                b[ci0 as usize..ci0 as usize + 24].fill(0);
            }
            assert!(a[..n] == b[..n], "differs in [{off}, +{n})");
            off += n as u64;
        }
        fresh.write(PAGE * 5 - 2, &[7; 6]).unwrap();
        let mut got = [0; 8];
        fresh.read(PAGE * 5 - 3, &mut got).unwrap();
        let s1 = encode_meta(&SegInfo::data(Some(1)), 2);
        assert_eq!(got[..1], [0]);
        assert_eq!(got[1..7], [7; 6]);
        assert_eq!(got[7..], s1.as_bytes()[4..5]);
        assert_eq!(fresh.pages_written(), 2);
        assert_eq!(FreshMedia::new(u64::MAX >> 8, false).seg_num(), 1 << 20);
    }
}
