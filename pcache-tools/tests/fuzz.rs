//! Structured fuzzing: records with *valid* CRCs but arbitrary (mostly plausible) values, so
//! the scan gets past every CRC check and meets the range checks, the chain walk and the
//! log walk with hostile values. Nothing may panic, and fsck must agree with the scan.

use pcache_format::kset::{encode_last_kset, KsetBuf};
use pcache_format::layout::{self, CachePos};
use pcache_format::raw::RawKey;
use pcache_format::record::{encode_meta, CacheInfo, SegGen, SegInfo, TailPos};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::testimg::{samples, SparseImage};
use pcache_tools::{dump, scan, ImageMut, ScanOptions};
use zerocopy::IntoBytes;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Mostly small values, sometimes anything.
    fn val(&mut self, small: u64) -> u64 {
        match self.next() % 8 {
            0 => self.next(),
            1 => u64::from(u32::MAX) - self.next() % 4,
            _ => self.next() % small.max(1),
        }
    }
    fn u32(&mut self, small: u64) -> u32 {
        self.val(small) as u32
    }
}

fn put(img: &mut SparseImage, off: u64, bytes: &[u8]) {
    let _ = img.write_at(off, bytes);
}

fn mutate(rng: &mut Rng, img: &mut SparseImage) {
    let seg_num = 31;
    for _ in 0..1 + rng.next() % 6 {
        let seq = rng.next() as u8;
        match rng.next() % 7 {
            0 => {
                let mut ci = CacheInfo::fresh(rng.u32(40), rng.next().is_multiple_of(2), 70);
                ci.seg_id = rng.u32(40);
                ci.init_done = !rng.next().is_multiple_of(8);
                let slot = (rng.next() % 2) as usize;
                put(
                    img,
                    layout::cache_info_off(slot),
                    encode_meta(&ci, seq).as_bytes(),
                );
            }
            1 => {
                let pos = CachePos::new(rng.u32(40), rng.u32(20_000).wrapping_mul(8));
                let off = match rng.next() % 4 {
                    0 => layout::key_tail_off(0),
                    1 => layout::key_tail_off(1),
                    2 => layout::dirty_tail_off(0),
                    _ => layout::dirty_tail_off(1),
                };
                put(img, off, encode_meta(&TailPos(pos), seq).as_bytes());
            }
            2 => {
                let seg = rng.u32(seg_num);
                let next = (!rng.next().is_multiple_of(3)).then(|| rng.u32(40));
                let slot = (rng.next() % 2) as usize;
                let rec = encode_meta(&SegInfo::data(next), seq);
                put(
                    img,
                    layout::seg_info_off(seg % seg_num as u32, slot),
                    rec.as_bytes(),
                );
            }
            3 => {
                let seg = rng.u32(seg_num) % seg_num as u32;
                let slot = (rng.next() % 2) as usize;
                let rec = encode_meta(&SegGen(rng.val(4)), seq);
                put(img, layout::seg_gen_off(seg, slot), rec.as_bytes());
            }
            4 | 5 => {
                // A kset at a plausible log position.
                let seg = rng.u32(8) % seg_num as u32;
                let at = layout::data_area_off(seg) + rng.next() % 8 * 64;
                if rng.next().is_multiple_of(3) {
                    put(img, at, &encode_last_kset(rng.u32(40)));
                } else {
                    let mut k = KsetBuf::new();
                    for _ in 0..rng.next() % 5 {
                        let raw = RawKey {
                            off: rng.val(1 << 32).into(),
                            len: rng.u32(64).wrapping_mul(512).into(),
                            flags: rng.u32(4).into(),
                            cache_seg_id: rng.u32(40).into(),
                            cache_seg_off: rng.u32(40_000).wrapping_mul(512).into(),
                            seg_gen: rng.val(3).into(),
                            data_crc: rng.u32(u64::from(u32::MAX)).into(),
                            reserved: 0.into(),
                        };
                        k.push(&raw);
                    }
                    put(img, at, k.seal());
                }
            }
            _ => {
                // Raw garbage over a random metadata byte.
                let off = match rng.next() % 3 {
                    0 => 4096 + rng.next() % 24,
                    1 => 8192 + rng.next() % 12_288,
                    _ => {
                        layout::segment_base(rng.u32(seg_num) % seg_num as u32)
                            + rng.next() % 12_400
                    }
                };
                put(img, off, &[rng.next() as u8]);
            }
        }
    }
}

#[test]
fn hostile_but_valid_records() {
    let bases = [
        samples::fresh().media,
        samples::last_chain().media,
        samples::data_crc().media,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let opts = ScanOptions {
        keys: true,
        backing_size: Some(1 << 31),
        ..ScanOptions::default()
    };
    let mut outcomes = [0u32; 3];
    let mut keys_seen = 0u64;
    for i in 0..4000 {
        let mut img = bases[i % bases.len()].clone();
        mutate(&mut rng, &mut img);
        let s = scan(&img, &opts).unwrap();
        keys_seen += s.log.as_ref().map_or(0, |l| l.keys);
        let _ = dump::text(&s, "img");
        let _ = dump::json(&s, "img");
        let r = fsck::check(
            &img,
            &FsckOptions {
                backing_size: Some(1 << 31),
                ..FsckOptions::default()
            },
        )
        .unwrap();
        assert_eq!(r.errors, s.findings.errors(), "iteration {i}");
        match r.exit_code {
            exit::CLEAN => outcomes[0] += 1,
            exit::UNCORRECTED => outcomes[1] += 1,
            c => panic!("iteration {i}: exit {c}"),
        }
        if s.findings.kernel_refuses() {
            outcomes[2] += 1;
            assert_eq!(r.exit_code, exit::UNCORRECTED);
        }
        // Repairing never makes things worse and always settles.
        if !r.findings.repairs().is_empty() {
            let mut fixed = img.clone();
            let opts = FsckOptions {
                repair: true,
                backing_size: Some(1 << 31),
                ..FsckOptions::default()
            };
            let r1 = fsck::check_and_repair(&mut fixed, &opts).unwrap();
            assert!(r1.exit_code & exit::CORRECTED != 0, "iteration {i}");
            assert!(
                r1.findings.repairs().is_empty(),
                "iteration {i}: {:?}",
                r1.findings.list
            );
            assert!(r1.errors <= r.errors, "iteration {i}");
        }
    }
    // The generator reaches both outcomes, and the log walk meets keys.
    eprintln!("clean/uncorrected/refused: {outcomes:?}; keys decoded: {keys_seen}");
    assert!(outcomes.iter().all(|&n| n > 20), "{outcomes:?}");
    assert!(keys_seen > 3000, "{keys_seen}");
}
