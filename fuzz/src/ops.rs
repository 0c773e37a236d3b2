//! Structure-aware engine operation sequences (`engine_ops`): writes, reads, flushes,
//! discards, write-zeroes, writeback, GC, mode and gc_percent changes and reopens on a
//! small fresh cache in front of an 8 MiB memory backing device, checked against a
//! model: a byte vector of what the logical device holds. The cache device is the
//! smallest the engine accepts (512 MiB of memory media), but its superblock gives the
//! cache only 4 to 11 segments (64 to 176 MiB), so the writes fill it and writeback, GC
//! and segment reuse run all the time.
//!
//! Properties: no operation fails; every read returns the model's bytes; after a
//! writeback the backing device holds them; a reopen (read-write, read-only, salvage)
//! presents them; and the image the engine leaves after a clean close is one fsck calls
//! clean and dump renders.

use crate::check::chain;
use arbitrary::Arbitrary;
use pcache_engine::backing::MemBacking;
use pcache_engine::media::CacheMedia;
use pcache_engine::media::MemMedia;
use pcache_engine::{Cache, CacheConfig, CacheMode, EngineError, SeqCutoff};
use pcache_format::{fresh, layout};
use pcache_tools::fsck::{self, exit, FsckOptions};
use std::sync::Arc;

/// The logical device.
pub const DEV: u64 = 8 << 20;
const SECTOR: u64 = 512;
const SECTORS: u64 = DEV / SECTOR;
/// Operations run per script, at most.
const MAX_OPS: usize = 128;
/// Reopens per script, at most (later ones are flushes).
const MAX_REOPENS: u32 = 4;

/// A run: the cache's settings and the operations.
#[derive(Debug, Arbitrary)]
pub struct Script {
    /// Keys carry data CRCs.
    pub data_crc: bool,
    /// Queues (1 + this % 4).
    pub queues: u8,
    /// gc_percent at open (this % 91).
    pub gc_percent: u8,
    /// Cache segments: 4 + this % 8.
    pub segs: u8,
    /// The operations (the first 128).
    pub ops: Vec<Op>,
}

/// One operation. Ranges are in sectors; lengths are 1 + `sectors` % 2 048 (up to
/// 1 MiB), clipped to the device.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    /// A write of a pattern.
    Write {
        /// First sector.
        sector: u16,
        /// Length.
        sectors: u16,
        /// FUA.
        fua: bool,
        /// Queue.
        q: u8,
    },
    /// A read, compared with the model.
    Read {
        /// First sector.
        sector: u16,
        /// Length.
        sectors: u16,
        /// Queue.
        q: u8,
    },
    /// A FLUSH.
    Flush,
    /// A discard.
    Discard {
        /// First sector.
        sector: u16,
        /// Length.
        sectors: u16,
    },
    /// A write-zeroes.
    WriteZeroes {
        /// First sector.
        sector: u16,
        /// Length.
        sectors: u16,
    },
    /// Everything written back, GC run.
    WritebackAll,
    /// One writeback round.
    WritebackStep,
    /// A gc_percent change (this % 91).
    GcPercent(u8),
    /// A cache mode change (this % 5).
    Mode(u8),
    /// A sequential cutoff change, in sectors (0 = off).
    Cutoff(u8),
    /// Close and open again (4 reopens per script at most; later ones flush).
    Reopen,
    /// Close, open read-only and read, then read-write again (as `Reopen`).
    ReopenReadOnly,
}

fn range(sector: u16, sectors: u16) -> (u64, u64) {
    let s = u64::from(sector) % SECTORS;
    let n = (1 + u64::from(sectors) % 2048).min(SECTORS - s);
    (s * SECTOR, n * SECTOR)
}

struct Harness {
    media: Arc<MemMedia>,
    backing: Arc<MemBacking>,
    cfg: CacheConfig,
    cache: Option<Cache>,
    model: Vec<u8>,
    tag: u32,
    reopens: u32,
}

fn fill(tag: u32, off: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(SECTOR as usize).enumerate() {
        let sector = off / SECTOR + i as u64;
        chunk[..4].copy_from_slice(&tag.to_le_bytes());
        chunk[4..12].copy_from_slice(&sector.to_le_bytes());
        for (j, b) in chunk[12..].iter_mut().enumerate() {
            *b = (tag as u8).wrapping_mul(29).wrapping_add(j as u8) | 1;
        }
    }
}

impl Harness {
    fn cache(&self) -> &Cache {
        self.cache.as_ref().expect("open")
    }

    fn open(&mut self, cfg: CacheConfig) {
        match Cache::open(self.media.clone(), self.backing.clone(), cfg) {
            Ok(c) => self.cache = Some(c),
            Err(e) => panic!("reopening what the engine wrote: {}", chain(&e)),
        }
    }

    fn set(&mut self, off: u64, data: Option<&[u8]>, len: u64) {
        let (o, l) = (off as usize, len as usize);
        match data {
            Some(d) => self.model[o..o + l].copy_from_slice(d),
            None => self.model[o..o + l].fill(0),
        }
    }

    fn check(&self, c: &Cache, off: u64, len: u64, q: u32, what: &str) {
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = c.read(q, off, &mut buf) {
            panic!("{what}: read {off:#x}+{len:#x}: {}", chain(&e));
        }
        for (i, chunk) in buf.chunks(SECTOR as usize).enumerate() {
            let s = (off / SECTOR) as usize + i;
            let want = &self.model[s * 512..(s + 1) * 512];
            assert!(
                chunk == want,
                "{what}: sector {s} reads other bytes than written"
            );
        }
    }

    /// Reads the whole device and compares it with the model.
    fn check_all(&self, c: &Cache, what: &str) {
        let step = 4 << 20;
        for off in (0..DEV).step_by(step) {
            self.check(c, off, step as u64, 0, what);
        }
    }

    /// A write failed. Nothing may fail on a healthy cache: without the background
    /// workers, a writer that finds the cache full reclaims space itself, and a cache of
    /// 4 segments or more always has space to reclaim.
    fn failed(e: &EngineError, what: &str, off: u64, len: u64) -> ! {
        panic!(
            "{what} {off:#x}+{len:#x} fails on a healthy cache: {}",
            chain(e)
        );
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Write {
                sector,
                sectors,
                fua,
                q,
            } => {
                let (off, len) = range(sector, sectors);
                let mut data = vec![0u8; len as usize];
                self.tag += 1;
                fill(self.tag, off, &mut data);
                match self.cache().write(u32::from(q), off, &data, fua) {
                    Ok(()) => self.set(off, Some(&data), len),
                    Err(e) => Self::failed(&e, "write", off, len),
                }
            }
            Op::Read { sector, sectors, q } => {
                let (off, len) = range(sector, sectors);
                self.check(self.cache(), off, len, u32::from(q), "read");
            }
            Op::Flush => {
                if let Err(e) = self.cache().flush() {
                    panic!("flush: {}", chain(&e));
                }
            }
            Op::Discard { sector, sectors } | Op::WriteZeroes { sector, sectors } => {
                let (off, len) = range(sector, sectors);
                let res = if matches!(op, Op::Discard { .. }) {
                    self.cache().discard(off, len)
                } else {
                    self.cache().write_zeroes(off, len)
                };
                match res {
                    Ok(()) => self.set(off, None, len),
                    Err(e) => Self::failed(&e, "discard or write-zeroes", off, len),
                }
            }
            Op::WritebackAll => {
                if let Err(e) = self.cache().writeback_all() {
                    panic!("writeback_all: {}", chain(&e));
                }
                // Every closed kset is written back: the backing device holds the data.
                let all = self.backing.to_vec(0, DEV as usize);
                for (s, chunk) in all.chunks(512).enumerate().step_by(7) {
                    let want = &self.model[s * 512..(s + 1) * 512];
                    assert!(chunk == want, "backing sector {s} after writeback_all");
                }
            }
            Op::WritebackStep => {
                if let Err(e) = self.cache().writeback_step() {
                    panic!("writeback_step: {}", chain(&e));
                }
            }
            Op::GcPercent(p) => {
                if let Err(e) = self.cache().set_gc_percent(p % 91) {
                    panic!("set_gc_percent: {}", chain(&e));
                }
            }
            Op::Mode(m) => {
                let mode = CacheMode::ALL[usize::from(m) % CacheMode::ALL.len()];
                if let Err(e) = self.cache().set_cache_mode(mode) {
                    panic!("set_cache_mode: {}", chain(&e));
                }
            }
            Op::Cutoff(n) => self.cache().set_seq_cutoff(SeqCutoff {
                read: u64::from(n) * SECTOR,
                write: u64::from(n.rotate_left(4)) * SECTOR,
            }),
            Op::Reopen | Op::ReopenReadOnly => self.reopen(matches!(op, Op::ReopenReadOnly)),
        }
    }

    fn reopen(&mut self, read_only: bool) {
        // An open replays (and, with data CRCs, verifies) the whole log, and a full check
        // of the device reads all of it: a few per run, the rest are flushes.
        self.reopens += 1;
        if self.reopens > MAX_REOPENS {
            if let Err(e) = self.cache().flush() {
                panic!("flush: {}", chain(&e));
            }
            return;
        }
        let full = self.reopens <= 2;
        let c = self.cache.take().expect("open");
        if let Err(e) = c.close() {
            panic!("close: {}", chain(&e));
        }
        drop(c);
        if read_only {
            for salvage in [false, true] {
                let cfg = CacheConfig {
                    read_only: true,
                    salvage,
                    ..self.cfg
                };
                self.open(cfg);
                if full {
                    self.check_all(self.cache(), "read-only reopen");
                }
                let c = self.cache.take().expect("open");
                if salvage {
                    let r = c.salvage_report();
                    assert!(r.is_complete(), "salvage skips from a clean cache: {r:?}");
                }
                c.close().expect("close");
            }
        }
        self.open(self.cfg);
        if full {
            self.check_all(self.cache(), "reopen");
        }
    }
}

/// Runs a script.
pub fn run(script: &Script) {
    let media = Arc::new(MemMedia::new(crate::DEVICE));
    let seg_num = 4 + u32::from(script.segs % 8);
    media
        .write(layout::SB_OFF, &fresh::superblock(seg_num))
        .expect("inside the media");
    let backing = Arc::new(MemBacking::new(DEV));
    let cfg = CacheConfig {
        data_crc: script.data_crc,
        queues: 1 + u32::from(script.queues % 4),
        background: false,
        gc_percent: Some(script.gc_percent % 91),
        ..CacheConfig::default()
    };
    let mut h = Harness {
        media,
        backing,
        cfg: CacheConfig {
            gc_percent: None,
            ..cfg
        },
        cache: None,
        model: vec![0; DEV as usize],
        tag: 0,
        reopens: 0,
    };
    h.open(cfg);
    for &op in script.ops.iter().take(MAX_OPS) {
        h.apply(op);
    }
    // The image a clean close leaves: fsck calls it clean, dump renders it, and a
    // read-only open presents the model.
    let c = h.cache.take().expect("open");
    c.close().expect("close");
    drop(c);
    let opts = FsckOptions {
        backing_size: Some(DEV),
        ..FsckOptions::default()
    };
    let r = fsck::check(&*h.media, &opts).expect("memory reads");
    assert!(
        r.exit_code == exit::CLEAN && !r.kernel_refuses,
        "fsck on an image the engine closed cleanly:\n{}",
        fsck::text(&r, "engine")
    );
    let s = pcache_tools::scan(
        &*h.media,
        &pcache_tools::ScanOptions {
            keys: true,
            ..pcache_tools::ScanOptions::default()
        },
    )
    .expect("memory reads");
    let _ = pcache_tools::dump::text(&s, "engine");
    h.open(CacheConfig {
        read_only: true,
        ..h.cfg
    });
    h.check_all(h.cache(), "final read-only open");
}
