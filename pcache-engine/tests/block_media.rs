//! The engine on a pmem block device read and written with `O_DIRECT` ([`BlockMedia`]):
//! a cache written through it reads back the same through it and through a mapping of
//! the same bytes ([`FileMedia`]), and the other way round: the two media differ only
//! in how they move the bytes, not in what the cache is.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::{CacheMedia, FileMedia};
use pcache_engine::testing::{self, write_superblock, SplitMix};
use pcache_engine::{Cache, CacheConfig};
use std::path::Path;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const DEV: u64 = 64 << 20;

fn block(path: &Path) -> Arc<dyn CacheMedia> {
    testing::block_media(path)
}

fn file(path: &Path) -> Arc<dyn CacheMedia> {
    Arc::new(FileMedia::open(path, false).unwrap())
}

/// Writes `n` random extents (sector-aligned, 512 B to 64 KiB, some FUA) and returns the
/// model of the device.
fn write_some(c: &Cache, seed: u64, n: u64, model: &mut [u8]) {
    let mut rng = SplitMix(seed);
    for i in 0..n {
        let len = 512 * (1 + rng.below(128)) as usize;
        let off = rng.below((DEV - len as u64) / 512) * 512;
        let data: Vec<u8> = (0..len)
            .map(|b| (i as u8) ^ (b as u8) ^ (seed as u8))
            .collect();
        c.write((i % 2) as u32, off, &data, rng.below(8) == 0)
            .unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
}

fn check(c: &Cache, model: &[u8], what: &str) {
    testing::assert_reads_back(c, model, what);
}

#[test]
fn a_cache_on_block_media_is_the_same_cache_mapped() {
    for data_crc in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmem.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(CACHE)
            .unwrap();
        write_superblock(&*block(&path));
        let backing = Arc::new(MemBacking::new(DEV));
        let cfg = CacheConfig {
            data_crc,
            queues: 2,
            background: false,
            ..CacheConfig::default()
        };
        let mut model = vec![0u8; DEV as usize];
        // Written on block media, read back on it and on a mapping.
        let c = Cache::open(block(&path), backing.clone(), cfg).unwrap();
        write_some(&c, 1, 400, &mut model);
        check(&c, &model, "block media, written");
        c.close().unwrap();
        for (name, media) in [("mapped", file(&path)), ("block", block(&path))] {
            let c = Cache::open(media, backing.clone(), cfg).unwrap();
            check(&c, &model, &format!("data_crc {data_crc}, reopened {name}"));
            c.close().unwrap();
        }
        // More written on a mapping, read back on block media, then written back.
        let c = Cache::open(file(&path), backing.clone(), cfg).unwrap();
        write_some(&c, 2, 200, &mut model);
        c.close().unwrap();
        let c = Cache::open(block(&path), backing.clone(), cfg).unwrap();
        check(
            &c,
            &model,
            &format!("data_crc {data_crc}, block after mapped"),
        );
        c.writeback_all().unwrap();
        c.close().unwrap();
        let mut got = vec![0u8; DEV as usize];
        pcache_engine::backing::Backing::read_at(&*backing, 0, &mut got).unwrap();
        assert!(got == model, "data_crc {data_crc}: written back");
    }
}
