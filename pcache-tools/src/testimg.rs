//! A typed builder of cache images, for tests (this crate's and others'): a fresh cache as
//! `pcache-mkfs` writes it, then ksets of keys with their data, LAST links, tail moves and
//! generation bumps, written exactly as the kernel lays them out.
//!
//! Images live in a [`SparseImage`], an in-memory device that stores only the 4 KiB pages
//! written, so a 512 MiB cache costs a few hundred KiB and clones cheaply.
//!
//! Compiled only for this crate's own unit tests and with the `test-utils` feature, which
//! only dev-dependencies enable.
//!
//! This is test support: misuse (a kset that does not fit, a segment out of range) panics
//! with a message instead of returning an error.

use crate::device::{Image, ImageMut};
use crate::mkfs::{self, Geometry, MkfsOptions};
use pcache_format::kset::{encode_last_kset, KsetBuf, KEY_FLAG_CLEAN};
use pcache_format::layout::{self, CachePos, KSET_HEADER_SIZE, SEG_DATA_SIZE};
use pcache_format::record::{encode_meta, SegGen, TailPos};
use pcache_format::{pcache_crc, Key};
use std::collections::BTreeMap;
use std::io;
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;

/// An in-memory device of any size that stores only the pages written; the rest reads as
/// zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseImage {
    size: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
}

impl SparseImage {
    /// A zeroed device of `size` bytes.
    #[must_use]
    pub fn new(size: u64) -> Self {
        Self {
            size,
            pages: BTreeMap::new(),
        }
    }

    /// The same content on a device of `size` bytes (truncated or extended with zeros).
    #[must_use]
    pub fn resized(&self, size: u64) -> Self {
        let mut out = Self::new(size);
        for (&n, page) in &self.pages {
            let start = n * PAGE;
            if start >= size {
                break;
            }
            let len = usize::try_from((size - start).min(PAGE)).unwrap_or(0);
            // In range by construction.
            let _ = out.write_at(start, &page[..len]);
        }
        out
    }

    /// One byte.
    #[must_use]
    pub fn byte(&self, off: u64) -> u8 {
        self.pages
            .get(&(off / PAGE))
            .map_or(0, |p| p[(off % PAGE) as usize])
    }

    /// Flips bit `bit` (0..8) of the byte at `off`.
    pub fn flip(&mut self, off: u64, bit: u8) {
        let page = self
            .pages
            .entry(off / PAGE)
            .or_insert_with(|| Box::new([0; PAGE as usize]));
        page[(off % PAGE) as usize] ^= 1 << (bit % 8);
    }

    /// Bytes `[off, off + len)`; out-of-range bytes read as zero.
    #[must_use]
    pub fn bytes(&self, off: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| self.byte(off + i)).collect()
    }

    /// The whole image as a vector (only for small images).
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes(0, usize::try_from(self.size).unwrap_or(0))
    }

    /// Offsets of the pages holding anything written.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().map(|n| n * PAGE)
    }

    /// Writes the image to a (sparse) file at `path`, created or truncated to the image's
    /// size: only the pages holding data are written.
    ///
    /// # Errors
    /// Creating or writing the file failed.
    pub fn write_to_file(&self, path: &std::path::Path) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(path)?;
        f.set_len(self.size)?;
        for (&n, page) in &self.pages {
            let off = n * PAGE;
            let len = usize::try_from((self.size - off).min(PAGE)).unwrap_or(0);
            f.write_all_at(&page[..len], off)?;
        }
        f.sync_all()
    }
}

fn check(off: u64, len: usize, size: u64) -> io::Result<()> {
    match off.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bytes {off}..+{len} are beyond the end of the device ({size} bytes)"),
        )),
    }
}

impl Image for SparseImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        check(off, buf.len(), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            match self.pages.get(&(at / PAGE)) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[in_page..in_page + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }
}

impl ImageMut for SparseImage {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        check(off, buf.len(), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            let chunk = &buf[done..done + n];
            let page = self.pages.get_mut(&(at / PAGE));
            match page {
                Some(p) => p[in_page..in_page + n].copy_from_slice(chunk),
                None if chunk.iter().all(|&b| b == 0) => {}
                None => {
                    let mut p = Box::new([0; PAGE as usize]);
                    p[in_page..in_page + n].copy_from_slice(chunk);
                    self.pages.insert(at / PAGE, p);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A key to log: where on the backing device, how long, where its data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Logical offset on the backing device.
    pub off: u64,
    /// Length in bytes.
    pub len: u32,
    /// Where the data goes (cache segment, offset in its data area).
    pub data: CachePos,
    /// A read-miss fill (CLEAN) rather than a write.
    pub clean: bool,
    /// The generation recorded; the segment's current one when `None`.
    pub seg_gen: Option<u64>,
}

impl KeySpec {
    /// A dirty write key of `len` bytes at `off`, its data at `seg:seg_off`.
    #[must_use]
    pub const fn new(off: u64, len: u32, seg: u32, seg_off: u32) -> Self {
        Self {
            off,
            len,
            data: CachePos::new(seg, seg_off),
            clean: false,
            seg_gen: None,
        }
    }

    /// The same key, CLEAN.
    #[must_use]
    pub const fn clean(mut self) -> Self {
        self.clean = true;
        self
    }

    /// The same key with an explicit generation.
    #[must_use]
    pub const fn gen(mut self, gen: u64) -> Self {
        self.seg_gen = Some(gen);
        self
    }
}

/// A labelled byte range of metadata, for corruption tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// What it is.
    pub what: String,
    /// Absolute offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// Builds a [`TestImage`].
#[derive(Debug, Clone, Copy)]
pub struct ImageBuilder {
    size: u64,
    opts: MkfsOptions,
}

impl ImageBuilder {
    /// A cache on a device of `size` bytes (at least 512 MiB).
    #[must_use]
    pub fn new(size: u64) -> Self {
        Self {
            size,
            opts: MkfsOptions::default(),
        }
    }

    /// With or without DATA_CRC.
    #[must_use]
    pub const fn data_crc(mut self, on: bool) -> Self {
        self.opts.data_crc = on;
        self
    }

    /// With this gc_percent.
    #[must_use]
    pub const fn gc_percent(mut self, pct: u8) -> Self {
        self.opts.gc_percent = pct;
        self
    }

    /// The fresh cache, written by [`mkfs::mkfs`].
    ///
    /// # Panics
    /// When the size cannot be formatted.
    #[must_use]
    pub fn build(self) -> TestImage {
        let mut media = SparseImage::new(self.size);
        let geometry = match mkfs::mkfs(&mut media, &self.opts, &mut |_| {}) {
            Ok(g) => g,
            Err(e) => panic!("test image of {} bytes: {e}", self.size),
        };
        let n = geometry.seg_num as usize;
        TestImage {
            media,
            geometry,
            key_head: CachePos::new(0, 0),
            key_tail: (CachePos::new(0, 0), 0, 1),
            dirty_tail: (CachePos::new(0, 0), 0, 1),
            gens: vec![(0, 1, 1); n],
            ksets: Vec::new(),
            log_segs: vec![0],
        }
    }
}

/// A cache image under construction. Cache segment ids equal physical ids (the identity
/// chain mkfs writes).
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The device.
    pub media: SparseImage,
    /// What mkfs wrote.
    pub geometry: Geometry,
    key_head: CachePos,
    /// Position, slot of the newest copy, its seq.
    key_tail: (CachePos, usize, u8),
    dirty_tail: (CachePos, usize, u8),
    /// Per segment: gen, slot of the newest copy, its seq.
    gens: Vec<(u64, usize, u8)>,
    /// Ksets written: position and size.
    ksets: Vec<(CachePos, u32)>,
    log_segs: Vec<u32>,
}

impl TestImage {
    /// Where the next kset goes.
    #[must_use]
    pub const fn key_head(&self) -> CachePos {
        self.key_head
    }

    /// The current generation of segment `seg`.
    #[must_use]
    pub fn gen_of(&self, seg: u32) -> u64 {
        self.gens[seg as usize].0
    }

    /// The data bytes a key at `off` of `len` bytes carries (a pattern of its offset).
    #[must_use]
    pub fn pattern(off: u64, len: u32) -> Vec<u8> {
        (0..u64::from(len))
            .map(|i| {
                let x = (off + i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (x >> 56) as u8
            })
            .collect()
    }

    fn abs(&self, pos: CachePos) -> u64 {
        assert!(
            pos.seg < self.geometry.seg_num,
            "segment {} out of range",
            pos.seg
        );
        layout::data_area_off(pos.seg) + u64::from(pos.off)
    }

    fn write(&mut self, off: u64, bytes: &[u8]) {
        if let Err(e) = self.media.write_at(off, bytes) {
            panic!("test image write at {off}: {e}");
        }
    }

    /// Writes each key's data ([`TestImage::pattern`]) and then a kset of the keys at
    /// key_head, with the end-of-log terminator after it. Returns the kset's position.
    ///
    /// # Panics
    /// More than 128 keys, or a kset that leaves no room for a LAST kset after it.
    pub fn kset(&mut self, keys: &[KeySpec]) -> CachePos {
        let mut buf = KsetBuf::new();
        for k in keys {
            let data = Self::pattern(k.off, k.len);
            let at = self.abs(k.data);
            self.write(at, &data);
            let key = Key {
                off: k.off,
                len: k.len,
                flags: if k.clean { KEY_FLAG_CLEAN } else { 0 },
                pos: k.data,
                seg_gen: k.seg_gen.unwrap_or_else(|| self.gen_of(k.data.seg)),
                data_crc: if self.geometry.data_crc {
                    pcache_crc(&data)
                } else {
                    0
                },
            };
            assert!(buf.push(&key.to_raw()), "more than 128 keys in a kset");
        }
        self.raw_kset(buf.seal())
    }

    /// Writes `bytes` as a kset at key_head (the caller built it), with the terminator
    /// after it, and advances key_head by its length.
    ///
    /// # Panics
    /// When it leaves no room for a LAST kset.
    pub fn raw_kset(&mut self, bytes: &[u8]) -> CachePos {
        let pos = self.key_head;
        let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let end = pos.off + size;
        assert!(
            end + KSET_HEADER_SIZE <= SEG_DATA_SIZE,
            "kset at {pos} does not fit"
        );
        let at = self.abs(pos);
        self.write(at + u64::from(size), &[0; KSET_HEADER_SIZE as usize]);
        self.write(at, bytes);
        self.ksets.push((pos, size));
        self.key_head = CachePos::new(pos.seg, end);
        pos
    }

    /// Chains the log to segment `next` as the kernel does: zero its first 24 data bytes,
    /// write a LAST kset at key_head, and move key_head to `next:0`.
    pub fn last(&mut self, next: u32) -> CachePos {
        let at = self.abs(CachePos::new(next, 0));
        self.write(at, &[0; KSET_HEADER_SIZE as usize]);
        self.log_segs.push(next);
        self.raw_last(next)
    }

    /// Writes a LAST kset to `next` at key_head without touching `next` (to build loops),
    /// and moves key_head to `next:0`.
    pub fn raw_last(&mut self, next: u32) -> CachePos {
        let pos = self.key_head;
        let at = self.abs(pos);
        self.write(at, &encode_last_kset(next));
        self.ksets.push((pos, KSET_HEADER_SIZE));
        self.key_head = CachePos::new(next, 0);
        pos
    }

    fn tail(&mut self, pos: CachePos, dirty: bool) {
        let cur = if dirty {
            self.dirty_tail
        } else {
            self.key_tail
        };
        let (slot, seq) = (1 - cur.1, cur.2.wrapping_add(1));
        let rec = encode_meta(&TailPos(pos), seq);
        let off = if dirty {
            layout::dirty_tail_off(slot)
        } else {
            layout::key_tail_off(slot)
        };
        self.write(off, rec.as_bytes());
        if dirty {
            self.dirty_tail = (pos, slot, seq);
        } else {
            self.key_tail = (pos, slot, seq);
        }
    }

    /// Moves dirty_tail (writing the other copy with the next seq, like pcache's writer).
    pub fn set_dirty_tail(&mut self, pos: CachePos) {
        self.tail(pos, true);
    }

    /// Moves key_tail (writing the other copy with the next seq).
    pub fn set_key_tail(&mut self, pos: CachePos) {
        self.tail(pos, false);
    }

    /// Bumps segment `seg`'s generation (the other copy, next seq), as invalidation does.
    pub fn bump_gen(&mut self, seg: u32) {
        let (gen, slot, seq) = self.gens[seg as usize];
        let (slot, seq, gen) = (1 - slot, seq.wrapping_add(1), gen + 1);
        let rec = encode_meta(&SegGen(gen), seq);
        self.write(layout::seg_gen_off(seg, slot), rec.as_bytes());
        self.gens[seg as usize] = (gen, slot, seq);
    }

    /// Every metadata byte range: the superblock, both cache_info copies, the four tail
    /// copies, each segment's seg_info and gen copies and first 24 data bytes, and every
    /// kset written.
    #[must_use]
    pub fn metadata(&self) -> Vec<Region> {
        let r = |what: String, offset: u64, len: u64| Region { what, offset, len };
        let mut out = vec![
            r("superblock".into(), layout::SB_OFF, 24),
            r("cache_info[0]".into(), layout::cache_info_off(0), 24),
            r("cache_info[1]".into(), layout::cache_info_off(1), 24),
            r("tails".into(), layout::CACHE_CTRL_OFF, 64),
        ];
        for seg in 0..self.geometry.seg_num {
            for slot in 0..2 {
                out.push(r(
                    format!("segment {seg}: seg_info[{slot}]"),
                    layout::seg_info_off(seg, slot),
                    16,
                ));
            }
            out.push(r(
                format!("segment {seg}: gen"),
                layout::seg_gen_off(seg, 0),
                32,
            ));
            if !self.ksets.iter().any(|(p, _)| *p == CachePos::new(seg, 0)) {
                out.push(r(
                    format!("segment {seg}: empty kset"),
                    layout::data_area_off(seg),
                    24,
                ));
            }
        }
        for &(pos, size) in &self.ksets {
            out.push(r(format!("kset {pos}"), self.abs(pos), u64::from(size)));
        }
        out
    }
}

/// Ready-made images on a 512 MiB device (31 segments).
pub mod samples {
    use super::{ImageBuilder, KeySpec, TestImage};
    use pcache_format::layout::CachePos;

    /// 512 MiB.
    pub const SIZE: u64 = 512 << 20;

    /// A fresh cache.
    #[must_use]
    pub fn fresh() -> TestImage {
        ImageBuilder::new(SIZE).build()
    }

    fn keys(mut img: TestImage) -> TestImage {
        img.kset(&[
            KeySpec::new(0, 4096, 1, 0),
            KeySpec::new(8192, 4096, 1, 4096),
            KeySpec::new(1 << 20, 512, 1, 8192),
        ]);
        let second = img.kset(&[
            KeySpec::new(4 << 20, 8192, 1, 8704),
            KeySpec::new(64 << 20, 4096, 2, 0).clean(),
        ]);
        // The first kset is written back; the second is dirty.
        img.set_dirty_tail(second);
        img
    }

    /// Two ksets of data keys in log segment 0, data in segments 1 and 2 (one key CLEAN),
    /// the first kset written back.
    #[must_use]
    pub fn data_keys() -> TestImage {
        keys(fresh())
    }

    /// The same with DATA_CRC on.
    #[must_use]
    pub fn data_crc() -> TestImage {
        keys(ImageBuilder::new(SIZE).data_crc(true).build())
    }

    /// A log over three segments, 0 → 5 → 6, linked by LAST ksets; key_tail 0:0 and
    /// dirty_tail in segment 5.
    #[must_use]
    pub fn last_chain() -> TestImage {
        let mut img = fresh();
        img.kset(&[KeySpec::new(0, 4096, 1, 0)]);
        img.last(5);
        let dirty = img.kset(&[KeySpec::new(4096, 4096, 1, 4096)]);
        img.last(6);
        img.kset(&[
            KeySpec::new(8192, 4096, 1, 8192),
            KeySpec::new(12288, 4096, 2, 0),
        ]);
        img.set_dirty_tail(dirty);
        img
    }

    /// Keys into segment 2 logged, then segment 2 invalidated (gen 1) and reused: the old
    /// keys are stale, the new ones live. Everything is written back.
    #[must_use]
    pub fn stale_keys() -> TestImage {
        let mut img = fresh();
        img.kset(&[
            KeySpec::new(0, 4096, 2, 0),
            KeySpec::new(4096, 4096, 2, 4096),
        ]);
        img.bump_gen(2);
        img.kset(&[
            KeySpec::new(0, 4096, 2, 0),
            KeySpec::new(1 << 30, 4096, 3, 0),
        ]);
        let head = img.key_head();
        img.set_dirty_tail(head);
        img
    }

    /// Every sample, named.
    #[must_use]
    pub fn all() -> Vec<(&'static str, TestImage)> {
        vec![
            ("fresh", fresh()),
            ("data_keys", data_keys()),
            ("last_chain", last_chain()),
            ("stale_keys", stale_keys()),
            ("data_crc", data_crc()),
        ]
    }

    /// A position, for tests.
    #[must_use]
    pub const fn pos(seg: u32, off: u32) -> CachePos {
        CachePos::new(seg, off)
    }
}
