//! Fixtures shared by the engine's integration tests.

use pcache_engine::format::{fresh, layout};
use pcache_engine::media::{CacheMedia, MemMedia};

/// Memory media of `len` bytes holding only a pcache superblock, so the engine's first
/// open formats the cache as the kernel's first activation does.
pub fn formatted(len: u64) -> MemMedia {
    let m = MemMedia::new(len);
    let seg_num = layout::seg_num_for_device(len).expect("at least 512 MiB");
    m.write(layout::SB_OFF, &fresh::superblock(seg_num))
        .expect("the superblock fits");
    m
}
