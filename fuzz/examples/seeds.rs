//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/` (or the
//! directory given): `seed-*` files, from the base images (the tools' samples as mkfs
//! and the kernel lay them out, and images the engine wrote).
//!
//! - `records`: every record of every base image (superblock, each dual-record copy,
//!   the first ksets of the log), behind the parameters the target reads first;
//! - `open_raw`, `fsck_raw`: each base image's metadata and segment 0 log, as the raw
//!   targets lay their input out (`pcache_fuzz::raw_windows`);
//! - `open_patch`, `fsck_patch`: each base image unpatched, on every device and backing
//!   size, and a few patches of the kinds the format has;
//! - `engine_ops`: a few byte strings of several lengths (any bytes are a script).
//!
//! `cargo run --release --manifest-path fuzz/Cargo.toml --example seeds [DIR]`

use pcache_format::layout::{self, CachePos, SEG_DATA_SIZE};
use pcache_fuzz::base::{self, Base};
use pcache_fuzz::patch::{Input, Patch};
use pcache_tools::Image;
use std::path::{Path, PathBuf};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(format!("seed-{name}")), bytes)
}

fn bytes(b: &Base, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    b.image.read_at(off, &mut v).expect("inside the image");
    v
}

/// The records target's parameters: room, n_segs, backing size (shifted by n_segs).
fn params(room: u32, n_segs: u32, backing: u32) -> Vec<u8> {
    let mut v = (room << 1).to_le_bytes().to_vec();
    v.extend_from_slice(&n_segs.to_le_bytes());
    v.extend_from_slice(&backing.to_le_bytes());
    v
}

fn records(dir: &Path, i: usize, b: &Base) -> std::io::Result<()> {
    let p = params(SEG_DATA_SIZE, 31, (b.backing_size >> 7) as u32);
    let mut at = vec![("sb", layout::SB_OFF, 24)];
    for slot in 0..2 {
        at.push(("cache_info", layout::cache_info_off(slot), 24));
        at.push(("key_tail", layout::key_tail_off(slot), 16));
        at.push(("dirty_tail", layout::dirty_tail_off(slot), 16));
        at.push(("seg_info", layout::seg_info_off(0, slot), 16));
        at.push(("gen", layout::seg_gen_off(1, slot), 16));
    }
    at.push(("log", layout::data_area_off(0), 5144 * 2));
    for (n, (what, off, len)) in at.into_iter().enumerate() {
        let mut v = p.clone();
        v.extend(bytes(b, off, len));
        write(
            dir,
            "records",
            &format!("{i:02}-{}-{n:02}-{what}", b.name),
            &v,
        )?;
    }
    Ok(())
}

fn raw(dir: &Path, i: usize, b: &Base) -> std::io::Result<()> {
    let v = pcache_fuzz::raw_input(&b.image);
    for t in ["open_raw", "fsck_raw"] {
        write(dir, t, &format!("{i:02}-{}", b.name), &v)?;
    }
    Ok(())
}

fn patched(dir: &Path, bases: &[Base]) -> std::io::Result<()> {
    let mut inputs = Vec::new();
    for (i, b) in bases.iter().enumerate() {
        for variant in [0u8, 2, 3, 8, 12] {
            let name = format!("{i:02}-{}-v{variant}", b.name);
            inputs.push((
                name,
                Input {
                    base: i as u8,
                    variant,
                    patches: Vec::new(),
                },
            ));
        }
    }
    // A few patches over the sample with data keys (index 1) and the first engine image.
    let key = |off: u64, len: u32, seg: u32, seg_off: u32| {
        let k = pcache_format::Key {
            off,
            len,
            flags: 0,
            pos: CachePos::new(seg, seg_off),
            seg_gen: 0,
            data_crc: 0,
        };
        let mut out = [0u8; 40];
        out.copy_from_slice(zerocopy::IntoBytes::as_bytes(&k.to_raw()));
        out
    };
    let patches = [
        (
            "cache-info-seq",
            Patch::Record {
                which: 8,
                seg: 0,
                data: {
                    let mut d = bytes(&bases[1], layout::cache_info_off(1) + 4, 20);
                    d[0] = d[0].wrapping_add(1);
                    d
                },
            },
        ),
        (
            "key-tail-moved",
            Patch::Record {
                which: 9,
                seg: 0,
                data: {
                    let mut d = vec![2, 0, 0, 0];
                    d.extend_from_slice(&0u32.to_le_bytes());
                    d.extend_from_slice(&64u32.to_le_bytes());
                    d
                },
            },
        ),
        (
            "gen-bumped",
            Patch::Record {
                which: 4,
                seg: 1,
                data: {
                    let mut d = vec![2, 0, 0, 0];
                    d.extend_from_slice(&1u64.to_le_bytes());
                    d
                },
            },
        ),
        (
            "seg-info-link",
            Patch::Record {
                which: 3,
                seg: 30,
                data: {
                    let mut d = vec![3, 0, 0, 0];
                    d.extend_from_slice(&3u32.to_le_bytes());
                    d.extend_from_slice(&0u32.to_le_bytes());
                    d
                },
            },
        ),
        (
            "kset-appended",
            Patch::Kset {
                seg: 0,
                off: 224,
                keys: vec![key(1 << 20, 4096, 3, 0), key(0, 512, 1, 0)],
            },
        ),
        (
            "last-link",
            Patch::Last {
                seg: 0,
                off: 224,
                next: 4,
            },
        ),
        (
            "sb-seg-num",
            Patch::Superblock {
                flags: 0,
                seg_num: 32,
                pad: [0; 4],
            },
        ),
        (
            "sb-flip",
            Patch::Flip {
                region: 0,
                off: 4096 + 17,
                bit: 2,
            },
        ),
        (
            "log-bytes",
            Patch::Bytes {
                region: 2,
                off: 8,
                data: vec![0xff; 16],
            },
        ),
    ];
    for base in [1u8, 5] {
        for (name, p) in &patches {
            let input = Input {
                base,
                variant: 0,
                patches: vec![p.clone()],
            };
            inputs.push((format!("{base:02}-patch-{name}"), input));
        }
    }
    for (name, input) in inputs {
        for t in ["open_patch", "fsck_patch"] {
            write(dir, t, &name, &input.encode())?;
        }
    }
    Ok(())
}

fn engine_ops(dir: &Path) -> std::io::Result<()> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for (n, len) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        let v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        write(dir, "engine_ops", &format!("{n:02}-random-{len}"), &v)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    let bases = base::all();
    for (i, b) in bases.iter().enumerate() {
        records(&dir, i, b)?;
        raw(&dir, i, b)?;
    }
    patched(&dir, bases)?;
    engine_ops(&dir)?;
    println!("seeds written under {}", dir.display());
    Ok(())
}
