//! The replay benchmark (issue 16, "Replay that scales"): how long opening a full cache
//! takes, and how many keys per second replay rebuilds.
//!
//! ```text
//! cargo bench -p pcache-engine --bench replay -- [--cache-gib N] [--keys N] [--data-crc]
//!     [--reps N] [--dir DIR] [--threads 1,2]
//! ```
//!
//! A sparse cache file of `--cache-gib` GiB (default 16) in `--dir` (default `/dev/shm`)
//! is filled through the engine with `--keys` (default 400 000) 4 KiB writes at distinct
//! random offsets of a 64 GiB sparse backing file, without writeback (so every key stays
//! dirty and in the log: 40 bytes of kset per key, 16 MiB of ksets for the default), and
//! closed. Then the cache is opened `--reps` times (default 5) and each open is timed: the
//! superblock and metadata load, the replay of every kset (each key judged, with its data
//! CRC checked under `--data-crc`, on each of `--threads` counts of replay threads in
//! turn: `CacheConfig::replay_threads`), and the index built. Printed per thread count:
//! the log size, the best and median open time, and keys per second at the best.

use pcache_engine::backing::FileBacking;
use pcache_engine::format::{fresh, layout};
use pcache_engine::media::{CacheMedia, FileMedia};
use pcache_engine::testing::SplitMix;
use pcache_engine::{Cache, CacheConfig};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

struct Opts {
    cache_gib: u64,
    keys: u64,
    data_crc: bool,
    reps: usize,
    dir: PathBuf,
    threads: Vec<usize>,
}

fn parse() -> Opts {
    let mut o = Opts {
        cache_gib: 16,
        keys: 400_000,
        data_crc: false,
        reps: 5,
        dir: PathBuf::from("/dev/shm"),
        threads: vec![1, 2],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--cache-gib" => o.cache_gib = num("--cache-gib"),
            "--keys" => o.keys = num("--keys"),
            "--reps" => o.reps = usize::try_from(num("--reps")).unwrap_or(1).max(1),
            "--data-crc" => o.data_crc = true,
            "--dir" => o.dir = PathBuf::from(it.next().expect("--dir needs a path")),
            "--threads" => {
                o.threads = it
                    .next()
                    .expect("--threads needs a list")
                    .split(',')
                    .map(|t| t.trim().parse().expect("--threads: numbers"))
                    .collect();
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}: replay [--cache-gib N] [--keys N] [--data-crc] \
                 [--reps N] [--dir DIR]"
            ),
        }
    }
    o
}

fn cfg(data_crc: bool, replay_threads: usize) -> CacheConfig {
    CacheConfig {
        data_crc,
        background: false,
        replay_threads,
        ..CacheConfig::default()
    }
}

fn main() {
    let o = parse();
    let tag = std::process::id();
    let cache_path = o.dir.join(format!("pcache-replay-bench-{tag}.cache"));
    let backing_path = o.dir.join(format!("pcache-replay-bench-{tag}.backing"));
    let size = o.cache_gib * GIB;
    let f = File::create(&cache_path).expect("create the cache file");
    f.set_len(size).expect("size the cache file");
    let n = layout::seg_num_for_device(size).expect("a cache size");
    f.write_all_at(&fresh::superblock(n), layout::SB_OFF)
        .expect("write the superblock");
    drop(f);
    File::create(&backing_path)
        .and_then(|b| b.set_len(64 * GIB))
        .expect("create the backing file");
    let open = |threads: usize| -> Cache {
        let media: Arc<dyn CacheMedia> =
            Arc::new(FileMedia::open(&cache_path, false).expect("map the cache"));
        let backing = Arc::new(FileBacking::open(&backing_path, false).expect("backing"));
        Cache::open(media, backing, cfg(o.data_crc, threads)).expect("open the cache")
    };
    let t = Instant::now();
    let cache = open(1);
    let mut rng = SplitMix(7);
    let blocks = 64 * GIB / 4096;
    let data = vec![0xA5; 4096];
    for _ in 0..o.keys {
        let off = rng.below(blocks) * 4096;
        cache.write(0, off, &data, false).expect("write");
    }
    cache.close().expect("close");
    let st = cache.status();
    drop(cache);
    println!(
        "replay: a {} GiB cache, {} keys written in {:.1} s ({} extents, {} segments used)",
        o.cache_gib,
        o.keys,
        t.elapsed().as_secs_f64(),
        st.replay.extents.max(st.cached_bytes / 4096),
        st.kernel.segs_used
    );
    for &threads in &o.threads {
        let mut times: Vec<Duration> = Vec::with_capacity(o.reps);
        let mut keys = 0;
        let mut ksets = 0;
        for _ in 0..o.reps {
            let t = Instant::now();
            let c = open(threads);
            times.push(t.elapsed());
            let r = c.status().replay;
            keys = r.keys;
            ksets = r.ksets;
            c.close().expect("close");
        }
        times.sort();
        let best = times[0].as_secs_f64();
        let median = times[times.len() / 2].as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rate = keys as f64 / best;
        #[allow(clippy::cast_precision_loss)]
        let log_mib = (ksets * 24 + keys * 40) as f64 / f64::from(1u32 << 20);
        println!(
            "replay: {ksets} ksets, {keys} keys ({log_mib:.1} MiB of ksets), data_crc {}, \
             {threads} thread(s): open best {:.3} s, median {:.3} s over {} opens; {:.2} M \
             keys/s",
            o.data_crc,
            best,
            median,
            times.len(),
            rate / 1e6
        );
    }
    let _ = std::fs::remove_file(&cache_path);
    let _ = std::fs::remove_file(&backing_path);
}
