//! One writer per cache: every tool that writes (mkfs, fsck --repair/-y/-p, replay
//! --writeback) refuses a cache another program holds, names the holder, and leaves the
//! cache and the backing device byte-identical; the readers (dump, fsck) run on a live
//! cache with a warning (a JSON field too), and replay's read-only modes refuse it unless
//! --force-live.
//!
//! The holder is this test process, taking the same claim the daemon takes
//! (`pcache_engine::claim`); VM case 10 repeats the refusals against a real pcache-ublk.

use pcache_engine::backing::FileBacking;
use pcache_engine::claim::Claim;
use pcache_engine::media::FileMedia;
use pcache_engine::{Cache, CacheConfig};
use pcache_format::layout;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const CACHE: u64 = 512 << 20;
const BACKING: u64 = 8 << 20;

fn run(bin: &str, args: &[&str]) -> Output {
    let exe = match bin {
        "mkfs" => env!("CARGO_BIN_EXE_pcache-mkfs"),
        "dump" => env!("CARGO_BIN_EXE_pcache-dump"),
        "replay" => env!("CARGO_BIN_EXE_pcache-replay"),
        _ => env!("CARGO_BIN_EXE_pcache-fsck"),
    };
    Command::new(exe).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A hash of every byte of the file.
fn hash(p: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0_u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finish();
        }
        h.write(&buf[..n]);
    }
}

/// A cache with dirty data (so a writeback would write both devices) and one damaged
/// copy of cache_info (so a repair would write the cache), and its backing file.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let cache = dir.join("cache.img");
    let backing = dir.join("backing.img");
    std::fs::File::create(&cache)
        .unwrap()
        .set_len(CACHE)
        .unwrap();
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(BACKING)
        .unwrap();
    let o = run("mkfs", &["-q", cache.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    {
        let media = Arc::new(FileMedia::open(&cache, false).unwrap());
        let back = Arc::new(FileBacking::open(&backing, false).unwrap());
        let cfg = CacheConfig {
            background: false,
            ..CacheConfig::default()
        };
        let c = Cache::open(media, back, cfg).unwrap();
        for i in 0..8_u64 {
            c.write(0, i * 65536, &[i as u8 + 1; 8192], false).unwrap();
        }
        c.close().unwrap();
    }
    // Damage one copy of cache_info: fsck --repair would rewrite it from its twin.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cache)
        .unwrap();
    let mut b = [0_u8; 1];
    f.read_exact_at(&mut b, layout::cache_info_off(0) + 8)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0xff], layout::cache_info_off(0) + 8)
        .unwrap();
    (cache, backing)
}

struct Held {
    cache: PathBuf,
    backing: PathBuf,
    before: (u64, u64),
}

impl Held {
    fn hashes(&self) -> (u64, u64) {
        (hash(&self.cache), hash(&self.backing))
    }

    /// Runs a writing tool that must be refused: non-zero `want` exit code, the holder
    /// named, both devices unchanged.
    fn refused(&self, bin: &str, args: &[&str], want: i32, holder: &str) -> String {
        let o = run(bin, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(want), "{bin} {args:?}: {err}");
        assert!(err.contains("in use by"), "{bin} {args:?}: {err}");
        assert!(
            err.contains(holder),
            "{bin} {args:?} does not name {holder}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(
            self.hashes(),
            self.before,
            "{bin} {args:?} changed a device"
        );
        err
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn writers_refuse_a_cache_a_writer_holds_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = fixture(dir.path());
    let held = Held {
        before: (hash(&cache), hash(&backing)),
        cache: cache.clone(),
        backing: backing.clone(),
    };
    // The daemon's claim, on both devices.
    let claim = Claim::exclusive("cache", &cache).unwrap();
    let _b = Claim::exclusive("backing", &backing).unwrap();
    let me = format!("(pid {})", std::process::id());
    let (c, b) = (s(&cache), s(&backing));

    held.refused("mkfs", &["--force", c], 1, &me);
    for flag in ["--repair", "-y", "-p", "-a"] {
        held.refused("fsck", &[flag, c], 8, &me);
    }
    held.refused(
        "replay",
        &["--cache", c, "--backing", b, "--writeback"],
        1,
        &me,
    );
    // The read-only replay modes refuse a live cache too.
    let export = dir.path().join("export.img");
    held.refused("replay", &["--cache", c, "--backing", b], 1, &me);
    let err = held.refused(
        "replay",
        &["--cache", c, "--backing", b, "--export", s(&export)],
        1,
        &me,
    );
    assert!(err.contains("--force-live"), "{err}");
    assert!(!export.exists());

    // Only the backing device held: a writeback is still refused.
    drop(claim);
    held.refused(
        "replay",
        &["--cache", c, "--backing", b, "--writeback"],
        1,
        &me,
    );
}

#[test]
fn a_reader_keeps_writers_out_too() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = fixture(dir.path());
    let held = Held {
        before: (hash(&cache), hash(&backing)),
        cache: cache.clone(),
        backing: backing.clone(),
    };
    let _reader = Claim::shared("cache", &cache).unwrap();
    let err = held.refused("mkfs", &["--force", s(&cache)], 1, "reading it");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    held.refused("fsck", &["--repair", s(&cache)], 8, "reading it");
    // Readers share: dump and fsck run without a warning.
    let o = run("dump", &[s(&cache)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("live"), "{}", text(&o.stderr));
    assert_eq!(held.hashes(), held.before);
}

#[test]
fn readers_run_on_a_live_cache_and_say_it_may_be_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = fixture(dir.path());
    let before = (hash(&cache), hash(&backing));
    let _claim = Claim::exclusive("cache", &cache).unwrap();
    let _b = Claim::exclusive("backing", &backing).unwrap();
    let me = format!("(pid {})", std::process::id());
    let (c, b) = (s(&cache), s(&backing));

    // fsck without --repair: checks, finds the damaged copy (exit 4), warns.
    let o = run("fsck", &[c]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("is live") && err.contains("may be torn") && err.contains(&me),
        "{err}"
    );
    assert!(text(&o.stdout).contains("cache_info[0]"));
    let o = run("fsck", &["-n", "--json", c]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["live"]["pid"], std::process::id());
    assert_eq!(v["live"]["may_be_torn"], true);
    assert_eq!(v["exit_code"], 4);

    let o = run("dump", &[c]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("may be torn"),
        "{}",
        text(&o.stderr)
    );
    let o = run("dump", &["--json", c]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["live"]["holder"].as_str().unwrap().contains(&me), "{v}");

    // replay --force-live reports and exports, warning once.
    let o = run(
        "replay",
        &["--cache", c, "--backing", b, "--force-live", "--json"],
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("may be torn"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"], 8);
    let export = dir.path().join("export.img");
    let o = run(
        "replay",
        &[
            "--cache",
            c,
            "--backing",
            b,
            "--force-live",
            "--export",
            s(&export),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let img = std::fs::read(&export).unwrap();
    assert_eq!(img.len() as u64, BACKING);
    assert!(img[..8192].iter().all(|&x| x == 1) && img[8192] == 0);
    assert_eq!((hash(&cache), hash(&backing)), before, "readers wrote");
    // --force-live never writes back.
    let o = run(
        "replay",
        &["--cache", c, "--backing", b, "--force-live", "--writeback"],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn without_a_holder_the_writers_run() {
    // The same fixture and commands with nobody holding the cache: the refusals above
    // come from the claim, not from the fixture.
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = fixture(dir.path());
    let (c, b) = (s(&cache), s(&backing));
    let o = run("fsck", &["-p", c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let before = hash(&backing);
    let o = run("replay", &["--cache", c, "--backing", b, "--writeback"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_ne!(hash(&backing), before, "nothing written back");
    let o = run("mkfs", &["-q", "--force", c]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}
