//! `pcache-shared` and `--name` of the other tools on shared cache devices: what each
//! command does, and that every refusal names the reason and leaves the devices as they
//! were.

use pcache_engine::format::shared::{table_slot_off, CacheTable, RANGES_OFF, RANGE_ALIGN};
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::shared::SharedDevice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const MIB: u64 = 1 << 20;
/// Room for two smallest caches and 100 MiB more.
const DEV: u64 = RANGES_OFF + 2 * 512 * MIB + 100 * MIB;

fn run(bin: &str, args: &[&str]) -> Output {
    let exe = match bin {
        "shared" => env!("CARGO_BIN_EXE_pcache-shared"),
        "mkfs" => env!("CARGO_BIN_EXE_pcache-mkfs"),
        "replay" => env!("CARGO_BIN_EXE_pcache-replay"),
        "dump" => env!("CARGO_BIN_EXE_pcache-dump"),
        _ => env!("CARGO_BIN_EXE_pcache-fsck"),
    };
    Command::new(exe).args(args).output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every byte a table update or a cache's format could write: the first 2 MiB (the
/// superblock and both table slots), and the first 20 KiB of every place a range can
/// start (a cache's superblock, cache_info and tails).
fn fingerprint(path: &Path) -> u32 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = vec![0; RANGES_OFF as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    let mut crc = pcache_engine::format::pcache_crc(&buf);
    let mut head = vec![0; 20 << 10];
    let mut at = RANGES_OFF;
    while at + head.len() as u64 <= len {
        f.read_exact_at(&mut head, at).unwrap();
        crc = pcache_engine::format::pcache_crc_append(crc, &head);
        at += RANGE_ALIGN;
    }
    crc ^ len as u32
}

struct Setup {
    _dir: tempfile::TempDir,
    dev: PathBuf,
    b1: PathBuf,
    b2: PathBuf,
    b3: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, len: u64| {
            let p = dir.path().join(name);
            std::fs::File::create(&p).unwrap().set_len(len).unwrap();
            p
        };
        Self {
            dev: file("pmem.img", DEV),
            b1: file("b1.img", 64 * MIB),
            b2: file("b2.img", 64 * MIB),
            b3: file("b3.img", 32 * MIB),
            _dir: dir,
        }
    }

    fn d(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// Formatted, with cache `db` (for b1, 512 MiB) and `logs` (for b2, 512 MiB, data
    /// CRCs).
    fn two(&self) -> &Self {
        assert!(run("shared", &["format", self.d()]).status.success());
        let o = run(
            "shared",
            &[
                "create",
                "--name",
                "db",
                "--size",
                "512M",
                "--backing",
                self.b1.to_str().unwrap(),
                self.d(),
            ],
        );
        assert!(o.status.success(), "{}", err(&o));
        assert!(out(&o).contains("created cache db (id 1)"), "{}", out(&o));
        let o = run(
            "shared",
            &[
                "create",
                "--name",
                "logs",
                "--size",
                "512M",
                "--data-crc",
                "--backing",
                self.b2.to_str().unwrap(),
                self.d(),
            ],
        );
        assert!(o.status.success(), "{}", err(&o));
        self
    }

    /// Runs `args` and asserts it fails with `want` in its message and changes nothing.
    fn refused(&self, bin: &str, args: &[&str], want: &str) {
        let before = fingerprint(&self.dev);
        let o = run(bin, args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", out(&o));
        assert!(err(&o).contains(want), "{args:?}: {}", err(&o));
        assert_eq!(
            fingerprint(&self.dev),
            before,
            "{args:?} changed the device"
        );
    }
}

#[test]
fn create_list_remove() {
    let s = Setup::new();
    s.two();
    let o = run("shared", &["list", s.d()]);
    let text = out(&o);
    assert!(text.contains("table seq 3, 2 caches"), "{text}");
    assert!(
        text.contains("db") && text.contains("logs") && text.contains("idle"),
        "{text}"
    );
    assert!(text.contains("free: 100 MiB in 1 range"), "{text}");
    let o = run("shared", &["list", "--json", s.d()]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["caches"][1]["name"], "logs");
    assert_eq!(v["caches"][1]["start"], RANGES_OFF + 512 * MIB);
    assert_eq!(
        v["caches"][0]["dm_linear"],
        format!("0 1048576 linear {} 4096", s.d())
    );
    // The whole device checks clean, cache by cache, and so does each by name.
    let o = run("fsck", &[s.d()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("(cache db): clean"), "{}", out(&o));
    assert!(out(&o).contains("(cache logs): clean"), "{}", out(&o));
    let o = run("fsck", &["--name", "2", "--json", s.d()]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["status"]["cache_info_flags"], 0x1183);
    let o = run("dump", &["--cache", "db", s.d()]);
    assert!(out(&o).contains("seg_num 31"), "{}", out(&o));
    let o = run("shared", &["dm-table", "--name", "logs", s.d()]);
    assert!(out(&o).contains("data_crc true"), "{}", out(&o));
    // Remove, and the space is reused.
    let o = run("shared", &["remove", "--name", "db", s.d()]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(
        "shared",
        &[
            "create",
            "--name",
            "web",
            "--size",
            "512M",
            "--backing",
            s.b1.to_str().unwrap(),
            s.d(),
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("(id 3)"), "{}", out(&o));
    assert!(
        out(&o).contains(&format!("at {RANGES_OFF:#x}")),
        "{}",
        out(&o)
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = Setup::new();
    // Not shared yet.
    s.refused("shared", &["list", s.d()], "not a shared cache device");
    s.two();
    let (b1, b3) = (s.b1.to_str().unwrap(), s.b3.to_str().unwrap());
    s.refused("shared", &["format", s.d()], "a pcache shared cache device");
    let create = |name: &str, size: &str, backing: &str, want: &str| {
        s.refused(
            "shared",
            &[
                "create",
                "--name",
                name,
                "--size",
                size,
                "--backing",
                backing,
                s.d(),
            ],
            want,
        );
    };
    create(
        "web",
        "512M",
        b3,
        "no free range of 536870912 bytes (the largest free range has 104857600 bytes)",
    );
    create("db", "64M", b3, "a cache named \"db\" exists already");
    create(
        "web",
        "64M",
        b1,
        "is already the backing device of cache \"db\"",
    );
    create("web", "64M", b3, "a cache needs at least 536870912 bytes");
    create("a/b", "512M", b3, "bad cache name");
    create(
        "web",
        "512M",
        s.d(),
        "cannot be the shared cache device itself",
    );
    create(
        "web",
        "512M",
        "/nonexistent/disk",
        "backing /nonexistent/disk",
    );
    s.refused(
        "shared",
        &["remove", "--name", "nope", s.d()],
        "no cache named \"nope\"",
    );
    s.refused("mkfs", &[s.d()], "a pcache shared cache device");
    s.refused("mkfs", &["--name", "db", s.d()], "use --force");
    s.refused("dump", &["--name", "nope", s.d()], "no cache named");
}

#[test]
fn a_served_or_dirty_cache_is_not_removed() {
    let s = Setup::new();
    s.two();
    // A program holds cache db (as a pcache-ublk daemon does).
    let held =
        pcache_engine::claim::RangeClaim::take(&s.dev, "db", RANGES_OFF, 512 * MIB, true).unwrap();
    s.refused("shared", &["remove", "--name", "db", s.d()], "cache db of");
    s.refused(
        "shared",
        &["remove", "--name", "db", "--force", s.d()],
        "is in use by",
    );
    s.refused("fsck", &["-y", "--name", "db", s.d()], "in use by");
    // A reader still sees it, as live.
    let o = run("shared", &["list", s.d()]);
    assert!(out(&o).contains("in use by"), "{}", out(&o));
    drop(held);
    // Dirty data: refused unless --force.
    {
        let media: Arc<dyn CacheMedia> = Arc::new(DaxMedia::open(&s.dev, false).unwrap());
        let dev = SharedDevice::read(&*media).unwrap();
        let w = SharedDevice::window(&media, dev.entry("db").unwrap()).unwrap();
        let cache = pcache_engine::Cache::open(
            Arc::new(w),
            Arc::new(pcache_engine::backing::MemBacking::new(64 * MIB)),
            pcache_engine::CacheConfig {
                background: false,
                ..Default::default()
            },
        )
        .unwrap();
        cache.write(0, 0, &[7; 4096], true).unwrap();
        cache.close().unwrap();
    }
    s.refused(
        "shared",
        &["remove", "--name", "db", s.d()],
        "holds 4096 bytes of dirty data",
    );
    // pcache-replay --name writes it back, after checking the backing device.
    let (b1, b2) = (s.b1.to_str().unwrap(), s.b2.to_str().unwrap());
    s.refused(
        "replay",
        &[
            "--cache",
            s.d(),
            "--name",
            "db",
            "--backing",
            b2,
            "--writeback",
        ],
        "is not the device cache \"db\" was created for",
    );
    let o = run(
        "replay",
        &[
            "--cache",
            s.d(),
            "--name",
            "db",
            "--backing",
            b1,
            "--writeback",
        ],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let mut got = [0; 4096];
    std::fs::File::open(&s.b1)
        .unwrap()
        .read_exact_at(&mut got, 0)
        .unwrap();
    assert_eq!(got, [7; 4096]);
    let o = run("shared", &["remove", "--name", "db", s.d()]);
    assert!(o.status.success(), "{}", err(&o));
}

fn write_table(dev: &Path, slot: usize, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(bytes, table_slot_off(slot)).unwrap();
}

fn read_table(dev: &Path) -> (usize, CacheTable) {
    let media = DaxMedia::open(dev, true).unwrap();
    let d = SharedDevice::read(&media).unwrap();
    (d.copies.latest().unwrap(), d.table().unwrap().clone())
}

#[test]
fn damaged_tables() {
    let s = Setup::new();
    s.two();
    let (latest, _) = read_table(&s.dev);
    // The older copy torn: a warning; the next update rewrites it.
    write_table(&s.dev, 1 - latest, &[0xEE; 64]);
    let o = run("fsck", &[s.d()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains(&format!("cache table copy {} is damaged", 1 - latest)));
    let o = run("shared", &["list", s.d()]);
    assert!(out(&o).contains("warning: table copy"), "{}", out(&o));
    // fsck -y rewrites it (exit 1), and then all is clean.
    let o = run("fsck", &["-y", s.d()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("rewritten from the other"), "{}", out(&o));
    let o = run("fsck", &[s.d()]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(!out(&o).contains("damaged"), "{}", out(&o));
    let (latest, table) = read_table(&s.dev);
    // A copy with overlapping ranges (its CRC right) is a damaged copy: the older one is
    // the table.
    let mut overlap = table.clone();
    overlap.seq += 1;
    overlap.entries[1].start = overlap.entries[0].start + RANGE_ALIGN;
    write_table(&s.dev, 1 - latest, &overlap.encode());
    let o = run("fsck", &[s.d()]);
    assert!(out(&o).contains("overlaps"), "{}", out(&o));
    assert_eq!(read_table(&s.dev).1, table);
    // Both copies damaged: everything refuses, and fsck says so (exit 4).
    write_table(&s.dev, latest, &overlap.encode());
    for args in [
        vec!["list", s.d()],
        vec!["remove", "--name", "db", s.d()],
        vec![
            "create",
            "--name",
            "x",
            "--size",
            "64M",
            "--backing",
            s.b3.to_str().unwrap(),
            s.d(),
        ],
    ] {
        s.refused("shared", &args, "cache table");
    }
    s.refused("dump", &["--name", "db", s.d()], "cache table");
    let before = fingerprint(&s.dev);
    let o = run("fsck", &[s.d()]);
    assert_eq!(o.status.code(), Some(4), "{}", out(&o));
    assert!(out(&o).contains("cache table"), "{}", out(&o));
    assert_eq!(fingerprint(&s.dev), before);
}

#[test]
fn a_cache_running_past_its_range_is_a_finding() {
    let s = Setup::new();
    s.two();
    // Cache db's superblock claims 40 segments; its range holds 31.
    let sb = pcache_engine::format::Superblock::new(40).encode();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&s.dev)
        .unwrap();
    f.write_all_at(&sb, RANGES_OFF + 4096).unwrap();
    let o = run("fsck", &["--name", "db", s.d()]);
    assert_eq!(o.status.code(), Some(4), "{}", out(&o));
    assert!(out(&o).contains("seg_num"), "{}", out(&o));
    // The whole device: db fails, logs is clean.
    let o = run("fsck", &[s.d()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(out(&o).contains("(cache logs): clean"), "{}", out(&o));
}
