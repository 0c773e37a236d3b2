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
        "fsck" => env!("CARGO_BIN_EXE_pcache-fsck"),
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

/// A data_crc cache with `n` dirty 4 KiB writes, each FUA (so write `i` is kset `i`, at
/// log position `0:64·i`), and the model of the logical device after writes `0..n` except
/// those in `skip`.
struct Salvage {
    dir: tempfile::TempDir,
    cache: std::path::PathBuf,
    backing: std::path::PathBuf,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Salvage {
    fn new(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.img");
        let backing = dir.path().join("backing.img");
        sparse(&cache, CACHE);
        sparse(&backing, DEV as u64);
        assert!(bin("mkfs")
            .args(["--data-crc", "-q"])
            .arg(&cache)
            .status()
            .unwrap()
            .success());
        let media = Arc::new(FileMedia::open(&cache, false).unwrap());
        let back = Arc::new(FileBacking::open(&backing, false).unwrap());
        let cfg = CacheConfig {
            data_crc: true,
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media, back, cfg).unwrap();
        let mut writes = Vec::new();
        for i in 0..n {
            // Some writes overwrite earlier ones.
            let off = (i * 3 % 7) * 4096 + (i / 7) * (1 << 20);
            let data = pattern(i + 100, 4096);
            c.write(0, off, &data, true).unwrap();
            writes.push((off, data));
        }
        c.close().unwrap();
        Self {
            dir,
            cache,
            backing,
            writes,
        }
    }

    fn model(&self, skip: &[usize]) -> Vec<u8> {
        let mut m = vec![0u8; DEV];
        for (i, (off, data)) in self.writes.iter().enumerate() {
            if !skip.contains(&i) {
                m[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
        }
        m
    }

    /// Absolute offset of kset `i`, and of its key's data.
    fn kset_at(&self, i: u64) -> u64 {
        pcache_format::layout::data_area_off(0) + 64 * i
    }

    fn data_at(&self, i: u64) -> u64 {
        let f = std::fs::File::open(&self.cache).unwrap();
        let mut key = [0u8; 40];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut key, self.kset_at(i) + 24).unwrap();
        let seg = u32::from_le_bytes(key[16..20].try_into().unwrap());
        let off = u32::from_le_bytes(key[20..24].try_into().unwrap());
        pcache_format::layout::data_area_off(seg) + u64::from(off)
    }

    fn flip(&self, at: u64, bit: u8) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.cache)
            .unwrap();
        let mut b = [0u8];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ (1 << bit)], at).unwrap();
    }

    fn replay(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "--cache",
            self.cache.to_str().unwrap(),
            "--backing",
            self.backing.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        replay(&args)
    }

    fn export(&self, extra: &[&str]) -> (i32, Vec<u8>, String) {
        let out = self.dir.path().join("export.img");
        let mut args = vec!["--export", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = self.replay(&args);
        let img = std::fs::read(&out).unwrap_or_default();
        (code, img, format!("{stdout}{stderr}"))
    }
}

#[test]
fn salvage_skips_a_key_with_bad_data_and_recovers_every_other_byte() {
    let s = Salvage::new(20);
    // Key 9's data is damaged: strict replay refuses the whole cache.
    s.flip(s.data_at(9) + 100, 2);
    let before = std::fs::read(&s.cache).unwrap();
    let (code, _, err) = s.export(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("data crc mismatch"), "{err}");
    let (code, img, out) = s.export(&["--salvage"]);
    assert_eq!(code, 3, "{out}");
    assert!(img == s.model(&[9]), "salvage lost more than key 9");
    assert!(out.contains("1 keys skipped"), "{out}");
    // Its range holds older data unless a later write covered it.
    let (off, _) = s.writes[9];
    let later = s.writes[10..].iter().any(|(o, _)| *o == off);
    assert_eq!(out.contains("older data at logical"), !later, "{out}");
    let (code, json, _) = s.replay(&["--salvage", "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["salvage"]["complete"], false);
    assert_eq!(v["salvage"]["skipped_keys"][0]["off"], off);
    assert_eq!(v["salvage"]["skipped_keys"][0]["index"], 0);
    // Written back: the backing is the model, and the cache is unchanged.
    let (code, _, err) = s.replay(&["--salvage", "--writeback"]);
    assert_eq!(code, 3, "{err}");
    assert!(std::fs::read(&s.backing).unwrap() == s.model(&[9]));
    assert!(
        std::fs::read(&s.cache).unwrap() == before,
        "salvage wrote the cache"
    );
}

#[test]
fn salvage_repairs_a_kset_with_one_flipped_bit() {
    let s = Salvage::new(20);
    // A key byte of kset 5 of 20: strict replay refuses a damaged log.
    s.flip(s.kset_at(5) + 24 + 3, 6);
    let (code, _, err) = s.export(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("the log is damaged at 0:320"), "{err}");
    assert!(err.contains("14 ksets"), "{err}");
    // fsck: the kernel would load it (losing 15 ksets), pcache would not.
    let o = bin("fsck").arg(&s.cache).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{text}");
    assert!(
        text.contains("kset_damaged") || text.contains("bit 6 of its byte 27"),
        "{text}"
    );
    assert!(
        text.contains("pcache would refuse this cache: the log is damaged at 0:320"),
        "{text}"
    );
    let o = bin("fsck").args(["--json"]).arg(&s.cache).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["pcache_refuses"].as_str().unwrap().contains("damaged"),
        "{v}"
    );
    assert_eq!(v["kernel_refuses"], false);
    let (code, img, out) = s.export(&["--salvage"]);
    assert_eq!(code, 0, "{out}");
    assert!(img == s.model(&[]), "salvage did not recover everything");
    assert!(out.contains("1 damaged ksets repaired"), "{out}");
}

#[test]
fn salvage_goes_on_past_a_kset_it_cannot_repair() {
    let s = Salvage::new(20);
    // Two bits of kset 5's key: no single flip explains it; the log goes on behind it.
    s.flip(s.kset_at(5) + 24 + 3, 6);
    s.flip(s.kset_at(5) + 24 + 30, 1);
    let (code, img, out) = s.export(&["--salvage"]);
    assert_eq!(code, 3, "{out}");
    assert!(img == s.model(&[5]), "salvage lost more than kset 5");
    assert!(out.contains("1 skipped"), "{out}");
}
