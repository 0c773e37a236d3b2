//! `pcache-replay` end to end on image files: a cache written by the engine is replayed,
//! exported and written back by the binary, and compared with an independent model of
//! the logical device.

use pcache_engine::backing::FileBacking;
use pcache_engine::media::FileMedia;
use pcache_engine::{Cache, CacheConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const DEV: usize = 16 << 20;

fn bin(name: &str) -> Command {
    Command::new(match name {
        "mkfs" => env!("CARGO_BIN_EXE_pcache-mkfs"),
        _ => env!("CARGO_BIN_EXE_pcache-replay"),
    })
}

fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize * 131 + i * 7 + i / 512) as u8)
        .collect()
}

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = bin("replay").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_export_and_writeback() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.img");
    let backing = dir.path().join("backing.img");
    sparse(&cache, CACHE);
    sparse(&backing, DEV as u64);
    let st = bin("mkfs").arg(&cache).status().unwrap();
    assert!(st.success());

    // The model of the logical device: zeros, then the writes.
    let mut model = vec![0u8; DEV];
    {
        let media = Arc::new(FileMedia::open(&cache, false).unwrap());
        let back = Arc::new(FileBacking::open(&backing, false).unwrap());
        let cfg = CacheConfig {
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media, back, cfg).unwrap();
        for i in 0..40u64 {
            let off = ((i * 1_234_567) % (DEV as u64 - (64 << 10))) & !511;
            let len = 512 * (1 + (i as usize * 37) % 120);
            let data = pattern(i, len);
            c.write(0, off, &data, false).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        c.close().unwrap();
    }
    let before = std::fs::read(&cache).unwrap();
    let (code, out, err) = replay(&[
        "--cache",
        cache.to_str().unwrap(),
        "--backing",
        backing.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["keys"], 40);
    assert_eq!(v["clean"], false);
    assert!(v["dirty_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        before,
        "replay is read-only"
    );

    // Export: the backing (still zero) overlaid with the cached data is the model.
    let exported = dir.path().join("export.img");
    let (code, _, err) = replay(&[
        "--cache",
        cache.to_str().unwrap(),
        "--backing",
        backing.to_str().unwrap(),
        "--export",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&exported).unwrap() == model, "export differs");
    assert!(std::fs::read(&backing).unwrap().iter().all(|&b| b == 0));

    // Writeback: the backing alone then holds the model; a second run is a no-op.
    for round in 0..2 {
        let (code, out, err) = replay(&[
            "--cache",
            cache.to_str().unwrap(),
            "--backing",
            backing.to_str().unwrap(),
            "--writeback",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["clean"], true, "round {round}");
        assert!(
            std::fs::read(&backing).unwrap() == model,
            "backing after writeback"
        );
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.img");
    let backing = dir.path().join("backing.img");
    sparse(&cache, CACHE);
    sparse(&backing, 1 << 20);
    let c = cache.to_str().unwrap();
    let b = backing.to_str().unwrap();
    // An unformatted cache.
    let (code, _, err) = replay(&["--cache", c, "--backing", b, "--writeback"]);
    assert_eq!(code, 1);
    assert!(err.contains("not formatted"), "{err}");
    assert!(std::fs::read(&cache).unwrap().iter().all(|&x| x == 0));
    // The same file twice.
    let (code, _, err) = replay(&["--cache", c, "--backing", c]);
    assert_eq!(code, 1);
    assert!(err.contains("same device"), "{err}");
    // A missing device.
    let (code, _, err) = replay(&["--cache", "/nonexistent/x", "--backing", b]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/x"), "{err}");
    // Usage errors are clap's.
    let (code, _, _) = replay(&["--cache", c]);
    assert_eq!(code, 2);
}
