//! The corruption suite on an image the engine wrote (rather than the test-image builder):
//! flip a bit in every metadata byte and check that the tools' scan reports it or that the
//! image's meaning is unchanged.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::FileMedia;
use pcache_engine::{Cache, CacheConfig};
use pcache_format::layout;
use pcache_tools::finding::Severity;
use pcache_tools::log::KsetKind;
use pcache_tools::mkfs::{self, MkfsOptions};
use pcache_tools::testimg::SparseImage;
use pcache_tools::{scan, Access, Device, Image, ImageMut, Scan, ScanOptions};
use std::collections::BTreeSet;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn engine_image(data_crc: bool) -> SparseImage {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(512 * MIB)
        .unwrap();
    let mut dev = Device::open(&path, Access::ReadWrite).unwrap();
    let opts = MkfsOptions {
        data_crc,
        ..MkfsOptions::default()
    };
    mkfs::mkfs(&mut dev, &opts, &mut |_| {}).unwrap();
    drop(dev);
    let backing = Arc::new(MemBacking::new(256 * MIB));
    let cfg = CacheConfig {
        data_crc,
        queues: 2,
        background: false,
        ..CacheConfig::default()
    };
    let media = Arc::new(FileMedia::open(&path, false).unwrap());
    let cache = Cache::open(media, backing.clone(), cfg).unwrap();
    for i in 0..60u64 {
        let off = (i % 17) * (5 * MIB) + (i % 4) * 8192;
        let data = vec![(i * 13 + 5) as u8; 16 << 10];
        cache.write((i % 2) as u32, off, &data, false).unwrap();
        if i == 30 {
            cache.flush().unwrap();
            cache.writeback_all().unwrap();
        }
    }
    cache.flush().unwrap();
    cache.close().unwrap();
    drop(cache);
    let dev = Device::open(&path, Access::ReadOnly).unwrap();
    let mut img = SparseImage::new(dev.size());
    let mut buf = vec![0u8; MIB as usize];
    for off in (0..dev.size()).step_by(MIB as usize) {
        dev.read_at(off, &mut buf).unwrap();
        img.write_at(off, &buf).unwrap();
    }
    img
}

fn opts() -> ScanOptions {
    ScanOptions {
        keys: true,
        ..ScanOptions::default()
    }
}

fn problems(s: &Scan) -> BTreeSet<(String, String)> {
    s.findings
        .list
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| (f.code.to_owned(), f.what.clone()))
        .collect()
}

#[test]
fn every_metadata_byte_of_an_engine_image() {
    for data_crc in [false, true] {
        let mut img = engine_image(data_crc);
        let base = scan(&img, &opts()).unwrap();
        assert!(problems(&base).is_empty(), "{:?}", base.findings.list);
        let log = base.log.as_ref().unwrap();
        assert!(log.keys > 20, "{} keys", log.keys);
        let mut regions = vec![(4096u64, 24u64), (8192, 24), (12_288, 24), (16_384, 64)];
        for seg in 0..31u32 {
            regions.push((layout::seg_info_off(seg, 0), 16));
            regions.push((layout::seg_info_off(seg, 1), 16));
            regions.push((layout::seg_gen_off(seg, 0), 32));
        }
        for k in &log.listed {
            let size = match k.kind {
                KsetKind::Keys { size, .. } => size,
                KsetKind::Last { .. } => 24,
            };
            regions.push((k.offset, u64::from(size)));
        }
        let head = base.status.unwrap().key_head;
        let chain = base.chain.as_ref().unwrap();
        let phys = chain.segments[head.seg as usize].phys;
        regions.push((layout::data_area_off(phys) + u64::from(head.off), 24));
        let base_model = serde_json::to_string(&base).unwrap();
        let (mut reported, mut harmless) = (0u32, 0u32);
        for (start, len) in regions {
            for off in start..start + len {
                let bit = (off % 8) as u8;
                img.flip(off, bit);
                let s = scan(&img, &opts()).unwrap();
                if problems(&s).difference(&problems(&base)).next().is_some() {
                    reported += 1;
                } else {
                    assert_eq!(
                        serde_json::to_string(&s).unwrap(),
                        base_model,
                        "byte {off} bit {bit} changed the image's meaning silently"
                    );
                    harmless += 1;
                }
                img.flip(off, bit);
            }
        }
        eprintln!("data_crc {data_crc}: {reported} reported, {harmless} harmless");
        assert!(reported > 2000 && harmless == 0, "{reported} / {harmless}");
    }
}
