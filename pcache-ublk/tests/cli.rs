//! The `pcache-ublk` binary: argument handling, the detached start's error reporting,
//! and the client commands, on a machine without the ublk driver (tests that would need
//! it skip, saying why).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcache_engine::format::fresh;
use pcache_engine::format::layout::{self, SB_OFF};

const BIN: &str = env!("CARGO_BIN_EXE_pcache-ublk");

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PCACHE_UBLK_RUN_DIR", dir.join("run"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn devices(dir: &Path) -> (PathBuf, PathBuf) {
    let cache = dir.join("cache.img");
    let backing = dir.join("backing.img");
    let f = std::fs::File::create(&cache).unwrap();
    f.set_len(512 << 20).unwrap();
    let n = layout::seg_num_for_device(512 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &fresh::superblock(n), SB_OFF).unwrap();
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    (cache, backing)
}

fn ublk_loaded() -> bool {
    Path::new("/dev/ublk-control").exists()
}

#[test]
fn help_names_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["add", "del", "list", "status", "set", "flush", "recover"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let out = run(dir.path(), &["add", "--help"]);
    let help = text(&out.stdout);
    for opt in [
        "--cache",
        "--backing",
        "--queues",
        "--depth",
        "--data-crc",
        "--foreground",
        "--id",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
    assert!(
        !help.contains("--daemon-child"),
        "internal flag shown:\n{help}"
    );
}

#[test]
fn bad_arguments_are_refused_by_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["add", "--cache", "c"][..],
        &["add", "--cache", "c", "--backing", "b", "--depth", "lots"],
        &["del"],
        &["status"],
        &["set", "-n", "0", "gc_percent"],
        &["recover", "-n", "0", "--cache", "c"],
    ] {
        let out = run(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(
        dir.path(),
        &["add", "--cache", "c", "--backing", "b", "--queues", "0"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--queues"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_device_is_reported_by_the_detached_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, _) = devices(dir.path());
    let missing = dir.path().join("no-such-backing");
    let out = run(
        dir.path(),
        &[
            "add",
            "--cache",
            cache.to_str().unwrap(),
            "--backing",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("backing") && err.contains("no-such-backing"),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    // The daemon's log got the details, and no device record was left behind.
    let log = std::fs::read_to_string(dir.path().join("run/daemon.log")).unwrap();
    assert!(log.contains("no-such-backing"), "{log}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "daemon.log")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_unformatted_cache_is_reported_in_the_foreground() {
    let dir = tempfile::tempdir().unwrap();
    let (_, backing) = devices(dir.path());
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "add",
            "--foreground",
            "--cache",
            blank.to_str().unwrap(),
            "--backing",
            backing.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("pcache-mkfs"), "{err}");
}

#[test]
fn good_devices_get_as_far_as_the_missing_driver() {
    if ublk_loaded() {
        eprintln!("skipping good_devices_get_as_far_as_the_missing_driver: ublk is loaded here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(dir.path());
    let args = [
        "add",
        "--cache",
        cache.to_str().unwrap(),
        "--backing",
        backing.to_str().unwrap(),
    ];
    let before = std::fs::read(&cache).unwrap();
    let mut crc = args.to_vec();
    crc.push("--data-crc");
    for args in [&args[..], &crc[..]] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("/dev/ublk-control"), "{err}");
        // Refused before the first write: the cache is byte-identical.
        assert!(
            std::fs::read(&cache).unwrap() == before,
            "add wrote to the cache"
        );
    }
}

#[test]
fn client_commands_without_a_daemon_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["status", "-n", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no running pcache-ublk daemon"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["set", "-n", "3", "gc_percent", "50"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(dir.path(), &["set", "-n", "3", "gc_percent", "101"]);
    assert!(
        text(&out.stderr).contains("gc_percent"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["set", "-n", "3", "frobs", "1"]);
    assert!(
        text(&out.stderr).contains("unknown key"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["del", "-n", "3"]);
    assert_eq!(out.status.code(), Some(1));
    for (args, want) in [
        (
            &["set", "-n", "3", "cache_mode", "fast"][..],
            "unknown cache mode",
        ),
        (&["set", "-n", "3", "seq_cutoff_read", "1Q"][..], "suffix"),
        (
            &["flush", "-n", "3", "--wait"][..],
            "no running pcache-ublk daemon",
        ),
        (
            &["del", "-n", "3", "--flush"][..],
            "no running pcache-ublk daemon",
        ),
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // With --json, a failure is a JSON object on stdout too.
    let out = run(dir.path(), &["status", "-n", "3", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("no running pcache-ublk daemon"));
}

#[test]
fn list_shows_recorded_devices_and_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
    // A record left by a daemon that is gone (pid 0 is never a daemon).
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let rec = serde_json::json!({
        "dev_id": 4242,
        "pid": 0,
        "socket": run_dir.join("4242.sock"),
        "target": {
            "cache": "/dev/pmem7", "backing": "/dev/vdz", "data_crc": false,
            "queues": 2, "depth": 64, "copy_mode": "buffer", "size": 1048576
        }
    });
    std::fs::write(run_dir.join("4242.json"), rec.to_string()).unwrap();
    let out = run(dir.path(), &["list"]);
    let table = text(&out.stdout);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("4242 "), "{table}");
    assert!(
        row.contains("/dev/pmem7") && row.contains("/dev/vdz"),
        "{table}"
    );
    assert!(row.contains("STALE") && row.contains("2x64"), "{table}");
    let out = run(dir.path(), &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], 4242);
    assert_eq!(v[0]["backing"], "/dev/vdz");
}

/// Needs the ublk driver and root; says why it skips otherwise.
fn can_use_ublk(test: &str) -> bool {
    if !ublk_loaded() {
        eprintln!("skipping {test}: /dev/ublk-control is absent (no ublk driver)");
        return false;
    }
    if !nix_is_root() {
        eprintln!("skipping {test}: needs root for /dev/ublk-control");
        return false;
    }
    true
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn add_ok(dir: &Path, args: &[&str]) -> (u32, String) {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let line = text(&out.stdout);
    let mut it = line.split_whitespace();
    let id: u32 = it.next().unwrap().parse().unwrap();
    let path = it.next().unwrap().to_owned();
    assert_eq!(path, format!("/dev/ublkb{id}"));
    (id, path)
}

/// O_DIRECT I/O of 4 KiB at `off` on `path`.
fn direct_io(path: &str, off: u64, write: Option<&[u8]>) -> Vec<u8> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut raw = vec![0_u8; 3 * 4096];
    let a = raw.as_ptr().align_offset(4096);
    if let Some(data) = write {
        raw[a..a + 4096].copy_from_slice(data);
        f.write_all_at(&raw[a..a + 4096], off).unwrap();
        f.sync_all().unwrap();
    }
    f.read_exact_at(&mut raw[a..a + 4096], off).unwrap();
    raw[a..a + 4096].to_vec()
}

fn wait_gone(path: &str) {
    for _ in 0..100 {
        if !Path::new(path).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{path} still exists");
}

fn status_json(dir: &Path, id: u32) -> serde_json::Value {
    let out = run(dir, &["status", "-n", &id.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn add_status_set_list_del_and_the_data_survives() {
    if !can_use_ublk("add_status_set_list_del_and_the_data_survives") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(dir.path());
    let args = [
        "add",
        "--cache",
        cache.to_str().unwrap(),
        "--backing",
        backing.to_str().unwrap(),
        "--queues",
        "2",
    ];
    let (id, path) = add_ok(dir.path(), &args);
    let ids = id.to_string();
    // Adding the same devices again is refused: they are in use.
    let out = run(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );

    let data: Vec<u8> = (0..4096_u32).map(|i| (i % 241) as u8).collect();
    assert_eq!(direct_io(&path, 1 << 20, Some(&data)), data);
    let st = status_json(dir.path(), id);
    assert!(st["dirty_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["state"], "LIVE");
    let out = run(dir.path(), &["set", "-n", &ids, "gc_percent", "50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(status_json(dir.path(), id)["gc_percent"], 50);
    let out = run(dir.path(), &["list"]);
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("LIVE")),
        "{table}"
    );
    let out = run(dir.path(), &["del", "-n", &ids]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_gone(&path);

    // The dirty data stayed in the cache and is served again.
    let (id, path) = add_ok(dir.path(), &args[..5]);
    assert_eq!(direct_io(&path, 1 << 20, None), data);
    let out = run(dir.path(), &["del", "-n", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_gone(&path);
}

#[test]
fn a_killed_daemon_is_recovered() {
    if !can_use_ublk("a_killed_daemon_is_recovered") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, backing) = devices(dir.path());
    let (c, b) = (cache.to_str().unwrap(), backing.to_str().unwrap());
    let (id, path) = add_ok(dir.path(), &["add", "--cache", c, "--backing", b]);
    let ids = id.to_string();
    let data: Vec<u8> = (0..4096_u32).map(|i| (i % 239) as u8).collect();
    direct_io(&path, 8192, Some(&data));
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(format!("run/{id}.json"))).unwrap(),
    )
    .unwrap();
    let pid = rec["pid"].as_i64().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // Recovering with other devices is refused.
    let other = dir.path().join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "recover",
            "-n",
            &ids,
            "--cache",
            c,
            "--backing",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let (rid, rpath) = add_ok(
        dir.path(),
        &["recover", "-n", &ids, "--cache", c, "--backing", b],
    );
    assert_eq!((rid, &rpath), (id, &path));
    assert_eq!(direct_io(&path, 8192, None), data);
    let out = run(dir.path(), &["del", "-n", &ids]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_gone(&path);
}
