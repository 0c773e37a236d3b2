//! The three binaries: exit codes, one-line errors naming the device, and devices left
//! unchanged on every error path.

use pcache_format::layout;
use pcache_tools::testimg::{samples, SparseImage};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    let exe = match bin {
        "mkfs" => env!("CARGO_BIN_EXE_pcache-mkfs"),
        "dump" => env!("CARGO_BIN_EXE_pcache-dump"),
        "replay" => env!("CARGO_BIN_EXE_pcache-replay"),
        _ => env!("CARGO_BIN_EXE_pcache-fsck"),
    };
    Command::new(exe).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The metadata-bearing content of a file: its length and every page holding data.
fn fingerprint(path: &Path) -> (u64, Vec<(u64, Vec<u8>)>) {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut pages = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut check = |off: u64| {
        if off < len {
            let n = 4096.min(len - off) as usize;
            f.read_exact_at(&mut buf[..n], off).unwrap();
            pages.push((off, buf[..n].to_vec()));
        }
    };
    for off in (0..1 << 20).step_by(4096) {
        check(off);
    }
    for seg in 0..64u64 {
        let base = layout::segment_base(seg as u32);
        for rel in [0, 4096, 8192, 12288] {
            check(base + rel);
        }
    }
    (len, pages)
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
    fn image(&self, name: &str, img: &SparseImage) -> PathBuf {
        let p = self.0.path().join(name);
        img.write_to_file(&p).unwrap();
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn usage_errors() {
    let o = run("fsck", &["--bogus", "x"]);
    assert_eq!(code(&o), 16, "{}", stderr(&o));
    assert_eq!(code(&run("fsck", &[])), 16);
    assert_eq!(code(&run("fsck", &["--backing-size", "12Q", "x"])), 16);
    assert_eq!(code(&run("fsck", &["--help"])), 0);
    assert_eq!(code(&run("fsck", &["--version"])), 0);
    assert_eq!(code(&run("mkfs", &["--gc-percent", "91", "x"])), 2);
    assert_eq!(code(&run("dump", &["--segments", "z", "x"])), 2);
}

#[test]
fn open_errors_name_the_device() {
    let d = Dir::new();
    let missing = d.0.path().join("missing");
    for bin in ["fsck", "dump", "mkfs"] {
        let o = run(bin, &[s(&missing)]);
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{bin}: {e}");
        assert!(
            e.contains(s(&missing)) && e.contains("No such file"),
            "{bin}: {e}"
        );
        assert_eq!(code(&o), if bin == "fsck" { 8 } else { 1 }, "{bin}");
        let o = run(bin, &[s(d.0.path())]);
        assert!(stderr(&o).contains("directory"), "{bin}: {}", stderr(&o));
    }
}

#[test]
fn mkfs_then_check() {
    let d = Dir::new();
    let p = d.file("img", 600 << 20);
    let o = run("mkfs", &["--data-crc", "--gc-percent", "50", s(&p)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("37 segments"), "{}", stdout(&o));
    let o = run("fsck", &[s(&p)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("clean"), "{}", stdout(&o));
    let o = run("dump", &["--json", s(&p)]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 0xc83 = DATA_CRC | INIT_DONE | 50 << 6.
    assert_eq!(v["status_line"], "0 37 37 1 50 c83 0:0 0:0 0:0");
    // A second mkfs refuses, and changes nothing.
    let before = fingerprint(&p);
    let o = run("mkfs", &[s(&p)]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("pcache cache (37 segments)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fingerprint(&p), before);
    // --force reformats.
    let o = run("mkfs", &["--force", "-q", s(&p)]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""));
    let o = run("dump", &["--json", s(&p)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status_line"], "0 37 37 1 70 1182 0:0 0:0 0:0");
}

#[test]
fn mkfs_refusals_leave_the_device_unchanged() {
    let d = Dir::new();
    let small = d.file("small", (512 << 20) - 4096);
    let before = fingerprint(&small);
    let o = run("mkfs", &[s(&small)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("512 MiB") && stderr(&o).contains(s(&small)));
    assert_eq!(fingerprint(&small), before);
    for (name, off, magic) in [
        ("ext4", 1080u64, &b"\x53\xef"[..]),
        ("XFS", 0, b"XFSB"),
        ("swap", 4086, b"SWAPSPACE2"),
        ("LUKS", 0, b"LUKS\xba\xbe"),
        ("GPT", 512, b"EFI PART"),
        ("non-zero data", 300_000, b"\x01"),
    ] {
        let p = d.file(name, 512 << 20);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(magic, off)
            .unwrap();
        let before = fingerprint(&p);
        let o = run("mkfs", &[s(&p)]);
        assert_eq!(code(&o), 1, "{name}");
        let e = stderr(&o);
        assert!(e.contains(name) || e.contains("ext2/3/4"), "{name}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_eq!(fingerprint(&p), before, "{name}");
    }
}

#[test]
fn fsck_exit_codes_and_repair() {
    let d = Dir::new();
    let mut img = samples::data_keys();
    img.media.flip(layout::dirty_tail_off(0) + 8, 0);
    let p = d.image("damaged", &img.media);
    let before = fingerprint(&p);
    let o = run("fsck", &[s(&p)]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains("dirty_tail[0]"));
    assert_eq!(fingerprint(&p), before, "read-only by default");
    let o = run("fsck", &["--json", s(&p)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["exit_code"].as_i64(), code(&o)), (Some(4), 4));
    let o = run("fsck", &["--repair", s(&p)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("repaired dirty_tail[0]"),
        "{}",
        stdout(&o)
    );
    assert_ne!(fingerprint(&p), before);
    assert_eq!(code(&run("fsck", &[s(&p)])), 0);
    // Backing bounds.
    let o = run("fsck", &["--backing-size", "1M", s(&p)]);
    assert_eq!(code(&o), 4);
    let backing = d.file("backing", 1 << 30);
    assert_eq!(code(&run("fsck", &["--backing", s(&backing), s(&p)])), 0);
    let o = run("fsck", &["--backing", "/nonexistent/backing", s(&p)]);
    assert_eq!(code(&o), 8);
    assert!(stderr(&o).contains("/nonexistent/backing"));
}

#[test]
fn garbage_never_panics() {
    let d = Dir::new();
    let mut img = SparseImage::new(600 << 20);
    let mut x: u64 = 0x1234_5678;
    let mut junk = vec![0u8; 64 << 10];
    for b in &mut junk {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    pcache_tools::ImageMut::write_at(&mut img, 0, &junk).unwrap();
    let p = d.image("junk", &img);
    let empty = d.file("empty", 0);
    for path in [&p, &empty] {
        let o = run("fsck", &[s(path)]);
        assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
        let o = run("dump", &["--keys", s(path)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let o = run("dump", &["--json", s(path)]);
        assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok());
    }
}

#[test]
fn fsck_takes_the_fsck8_options() {
    let d = Dir::new();
    let mut img = samples::data_keys();
    img.media.flip(layout::dirty_tail_off(0) + 8, 0);
    let p = d.image("damaged", &img.media);
    let before = fingerprint(&p);
    // -n and -f: read-only, the damage is left (4).
    let o = run("fsck", &["-n", "-f", s(&p)]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert_eq!(fingerprint(&p), before);
    // Contradictions are usage errors, and change nothing.
    for bad in [
        &["-n", "-y"][..],
        &["-n", "-p"],
        &["-p", "--repair"],
        &["-a", "-y"],
    ] {
        let mut args = bad.to_vec();
        args.push(s(&p));
        assert_eq!(code(&run("fsck", &args)), 16, "{bad:?}");
    }
    assert_eq!(fingerprint(&p), before);
    // -p repairs what needs no decision: exit 1, then clean.
    let o = run("fsck", &["-p", s(&p)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(!stdout(&o).contains("UNEXPECTED"), "{}", stdout(&o));
    assert_eq!(code(&run("fsck", &["-n", s(&p)])), 0);
    // -a with an error no repair can fix: 4, and the preen message.
    let mut img = samples::data_keys();
    img.media.flip(layout::SB_OFF + 8, 0);
    let p = d.image("sb", &img.media);
    let o = run("fsck", &["-a", s(&p)]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("UNEXPECTED INCONSISTENCY"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failure_with_json_still_prints_a_json_object() {
    let missing = "/nonexistent/pcache-cache";
    for (bin, args, want) in [
        ("dump", vec!["--json", missing], 1),
        ("fsck", vec!["--json", missing], 8),
        (
            "replay",
            vec!["--json", "--cache", missing, "--backing", missing],
            1,
        ),
    ] {
        let o = run(bin, &args);
        assert_eq!(code(&o), want, "{bin}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{bin}: stdout is not JSON ({e}): {}", stdout(&o)));
        assert_eq!(v["schema"], 1, "{bin}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(missing), "{bin}: {err}");
        // The same one line on stderr.
        assert!(stderr(&o).contains(err), "{bin}: {}", stderr(&o));
    }
}
