//! Model-based tests of the engine: random sequences of writes, reads, flushes, discards,
//! clean reopens and crashes against a sector-by-sector model of a block device.
//!
//! Every write stamps each of its sectors with a unique tag, so a read tells exactly which
//! write a sector came from. The model keeps, per sector, the tag that must be read now;
//! across a crash it keeps the set of tags that may be read (the durable one and every
//! later one), and after reopening it checks the whole device against those sets and
//! adopts what it found.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::MemMedia;
use pcache_engine::{Cache, CacheConfig, CacheMode, SeqCutoff};
use proptest::prelude::*;
use std::sync::Arc;

const SECTOR: usize = 512;
const DEV: u64 = 24 << 20;
const SECTORS: usize = (DEV / 512) as usize;

fn formatted_media(len: u64) -> Arc<MemMedia> {
    Arc::new(pcache_engine::testing::formatted(len))
}

fn stamp(tag: u64, sector: usize, out: &mut [u8]) {
    out[..8].copy_from_slice(&tag.to_le_bytes());
    out[8..16].copy_from_slice(&(sector as u64).to_le_bytes());
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = (tag as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
}

/// The tag a sector holds, checking the rest of its bytes.
fn tag_of(sector: usize, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut want = [0u8; SECTOR];
    stamp(tag, sector, &mut want);
    (want[..] == data[..]).then_some(tag)
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        sector: usize,
        len: usize,
        fua: bool,
        q: u32,
    },
    Read {
        sector: usize,
        len: usize,
        q: u32,
    },
    Flush,
    Discard {
        sector: usize,
        len: usize,
    },
    Reopen,
    Crash,
    WritebackAll,
    /// Switch the cache mode online.
    SetMode(CacheMode),
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..SECTORS, 1..=512usize).prop_map(|(s, l)| (s, l.min(SECTORS - s)));
    prop_oneof![
        8 => (range.clone(), any::<bool>(), 0..3u32).prop_map(|((sector, len), fua, q)| Op::Write { sector, len, fua: fua && len % 3 == 0, q }),
        4 => (range.clone(), 0..3u32).prop_map(|((sector, len), q)| Op::Read { sector, len, q }),
        1 => Just(Op::Flush),
        1 => range.prop_map(|(sector, len)| Op::Discard { sector, len }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::WritebackAll),
        1 => (0..5usize).prop_map(|m| Op::SetMode(CacheMode::ALL[m])),
    ]
}

struct Harness {
    media: Arc<MemMedia>,
    backing: Arc<MemBacking>,
    cache: Option<Cache>,
    cfg: CacheConfig,
    /// Per sector: the tags a read may return (exactly one unless a crash is pending).
    now: Vec<u64>,
    /// Per sector: the durable tag (before any unflushed write).
    durable: Vec<u64>,
    /// Per sector: tags written since the last flush (lost or kept by a crash).
    pending: Vec<Vec<u64>>,
    next_tag: u64,
    /// The mode set last.
    mode: CacheMode,
}

impl Harness {
    fn new(cfg: CacheConfig) -> Self {
        let media = formatted_media(512 << 20);
        let backing = Arc::new(MemBacking::new(DEV));
        let cache = Cache::open(media.clone(), backing.clone(), cfg).unwrap();
        Self {
            media,
            backing,
            cache: Some(cache),
            // Reopening keeps the mode the cache holds.
            cfg: CacheConfig {
                cache_mode: None,
                ..cfg
            },
            mode: cfg.cache_mode.unwrap_or_default(),
            now: vec![0; SECTORS],
            durable: vec![0; SECTORS],
            pending: vec![Vec::new(); SECTORS],
            next_tag: 1,
        }
    }

    fn cache(&self) -> &Cache {
        self.cache.as_ref().unwrap()
    }

    fn make_durable(&mut self) {
        self.durable.copy_from_slice(&self.now);
        for p in &mut self.pending {
            p.clear();
        }
    }

    fn set(&mut self, sector: usize, tag: u64, durable: bool) {
        self.now[sector] = tag;
        if durable {
            self.durable[sector] = tag;
            self.pending[sector].clear();
        } else {
            self.pending[sector].push(tag);
        }
    }

    fn check_range(&self, sector: usize, len: usize, q: u32) {
        let mut buf = vec![0u8; len * SECTOR];
        self.cache()
            .read(q, (sector * SECTOR) as u64, &mut buf)
            .unwrap();
        for i in 0..len {
            let s = sector + i;
            let got = tag_of(s, &buf[i * SECTOR..(i + 1) * SECTOR]);
            assert_eq!(got, Some(self.now[s]), "sector {s}");
        }
        // The same range through `read_with`: its pieces must cover the range exactly
        // once and carry the same bytes.
        let mut pieced = vec![0u8; len * SECTOR];
        let mut covered = vec![false; len * SECTOR];
        self.cache()
            .read_with(
                q,
                (sector * SECTOR) as u64,
                len * SECTOR,
                &mut |at, bytes| {
                    let at = usize::try_from(at).unwrap();
                    pieced[at..at + bytes.len()].copy_from_slice(bytes);
                    for c in &mut covered[at..at + bytes.len()] {
                        assert!(!*c, "byte {at} handed over twice");
                        *c = true;
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert!(covered.iter().all(|&c| c), "read_with left bytes out");
        for i in 0..len {
            let s = sector + i;
            let got = tag_of(s, &pieced[i * SECTOR..(i + 1) * SECTOR]);
            assert_eq!(got, Some(self.now[s]), "sector {s} through read_with");
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write {
                sector,
                len,
                fua,
                q,
            } => {
                let mut buf = vec![0u8; len * SECTOR];
                let mut tags = Vec::with_capacity(len);
                for i in 0..len {
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    stamp(tag, sector + i, &mut buf[i * SECTOR..(i + 1) * SECTOR]);
                    tags.push(tag);
                }
                self.cache()
                    .write(q, (sector * SECTOR) as u64, &buf, fua)
                    .unwrap();
                for (i, tag) in tags.into_iter().enumerate() {
                    self.set(sector + i, tag, fua);
                }
            }
            Op::Read { sector, len, q } => self.check_range(sector, len, q),
            Op::Flush => {
                self.cache().flush().unwrap();
                self.make_durable();
                self.check_backing_alone();
            }
            Op::SetMode(m) => {
                self.cache().set_cache_mode(m).unwrap();
                self.mode = m;
            }
            Op::Discard { sector, len } => {
                self.cache()
                    .discard((sector * SECTOR) as u64, (len * SECTOR) as u64)
                    .unwrap();
                for i in 0..len {
                    self.set(sector + i, 0, false);
                }
            }
            Op::WritebackAll => {
                self.cache().writeback_all().unwrap();
                self.make_durable();
                // Everything written back: the backing device alone holds the data.
                let mut buf = vec![0u8; SECTOR];
                for s in (0..SECTORS).step_by(97) {
                    buf.copy_from_slice(&self.backing.to_vec((s * SECTOR) as u64, SECTOR));
                    assert_eq!(tag_of(s, &buf), Some(self.now[s]), "backing sector {s}");
                }
            }
            Op::Reopen => {
                self.cache.take().unwrap().close().unwrap();
                self.make_durable();
                self.reopen();
                self.verify_all(false);
            }
            Op::Crash => {
                self.cache.take().unwrap().crash();
                self.reopen();
                self.verify_all(true);
            }
        }
    }

    fn reopen(&mut self) {
        self.cache = Some(Cache::open(self.media.clone(), self.backing.clone(), self.cfg).unwrap());
        assert_eq!(
            self.cache().status().cache_mode,
            self.mode,
            "the mode is kept"
        );
    }

    /// In a mode that keeps no dirty data, once no dirty data is left (the drain after a
    /// switch is done), the backing device alone holds every flushed write.
    fn check_backing_alone(&self) {
        let st = self.cache().status();
        assert_eq!(st.cache_mode, self.mode);
        if self.mode.keeps_dirty() || st.draining {
            return;
        }
        let all = self.backing.to_vec(0, DEV as usize);
        for (s, data) in all.chunks(SECTOR).enumerate() {
            assert_eq!(
                tag_of(s, data),
                Some(self.durable[s]),
                "backing sector {s} in {} (draining {})",
                self.mode,
                st.draining
            );
        }
    }

    /// Reads the whole device; each sector must hold an allowed tag, which the model
    /// then adopts.
    fn verify_all(&mut self, after_crash: bool) {
        let mut buf = vec![0u8; 1 << 20];
        let per = buf.len() / SECTOR;
        for chunk in 0..SECTORS / per {
            self.cache()
                .read(0, (chunk * buf.len()) as u64, &mut buf)
                .unwrap();
            for i in 0..per {
                let s = chunk * per + i;
                let got = tag_of(s, &buf[i * SECTOR..(i + 1) * SECTOR])
                    .unwrap_or_else(|| panic!("sector {s} holds data never written to it"));
                let ok = got == self.durable[s] || (after_crash && self.pending[s].contains(&got));
                assert!(
                    ok,
                    "sector {s}: read tag {got}, durable {}, pending {:?}",
                    self.durable[s], self.pending[s]
                );
                self.now[s] = got;
            }
        }
        self.make_durable();
    }
}

fn run(ops: &[Op], cfg: CacheConfig) {
    let mut h = Harness::new(cfg);
    for op in ops {
        h.apply(op);
    }
    h.apply(&Op::Reopen);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Without background workers: everything happens in the calling thread.
    #[test]
    fn model_inline(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops, CacheConfig { queues: 3, background: false, ..CacheConfig::default() });
    }

    /// With data CRCs (checked on every hit and at replay).
    #[test]
    fn model_data_crc(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops, CacheConfig { queues: 2, background: false, data_crc: true, ..CacheConfig::default() });
    }

    /// Every cache mode, switched online, with a sequential cutoff of 64 KiB.
    #[test]
    fn model_modes(mode in 0..5usize, ops in prop::collection::vec(op(), 1..60)) {
        let cutoff = SeqCutoff { read: 64 << 10, write: 64 << 10 };
        run(&ops, CacheConfig { queues: 2, background: false, cache_mode: Some(CacheMode::ALL[mode]), seq_cutoff: cutoff, ..CacheConfig::default() });
    }

    /// With the writeback, GC and flush workers running underneath.
    #[test]
    fn model_background(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops, CacheConfig { queues: 2, background: true, gc_percent: Some(0), ..CacheConfig::default() });
    }
}
