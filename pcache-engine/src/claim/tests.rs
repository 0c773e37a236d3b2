use super::*;

fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, vec![0_u8; 4096]).unwrap();
    p
}

#[test]
fn a_missing_device_is_reported_with_its_role_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Claim::exclusive("cache", &dir.path().join("nope")).unwrap_err();
    assert!(
        matches!(err, ClaimError::Device { role: "cache", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nope"));
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Claim::shared("backing", dir.path()).unwrap_err();
    assert!(matches!(err, ClaimError::Device { .. }), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("directory"),
        "{err:?}"
    );
}

#[test]
fn a_writer_excludes_writers_and_readers_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "cache.img");
    let first = Claim::exclusive("cache", &p).unwrap();
    assert_eq!(first.kind(), DeviceKind::File);
    assert!(first.is_exclusive());
    let err = Claim::exclusive("cache", &p).unwrap_err();
    assert!(matches!(err, ClaimError::Busy { .. }), "{err}");
    let err = Claim::shared("cache", &p).unwrap_err();
    assert!(err.holder().is_some(), "{err}");
    drop(first);
    Claim::exclusive("cache", &p).unwrap();
}

#[test]
fn readers_share_and_exclude_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "cache.img");
    let a = Claim::shared("cache", &p).unwrap();
    let b = Claim::shared("cache", &p).unwrap();
    assert!(!a.is_exclusive());
    let err = Claim::exclusive("cache", &p).unwrap_err();
    assert!(matches!(err, ClaimError::Busy { .. }), "{err}");
    // /proc/locks names this very process, holding a shared lock.
    if let Some(Holder::Process { pid, shared, .. }) = err.holder() {
        assert_eq!(*pid, std::process::id());
        assert!(shared);
        assert!(err.to_string().contains("reading it"), "{err}");
    }
    drop((a, b));
    Claim::exclusive("cache", &p).unwrap();
}

#[test]
fn the_holder_is_named_from_proc_locks() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "cache.img");
    let _held = Claim::exclusive("cache", &p).unwrap();
    let err = Claim::exclusive("cache", &p).unwrap_err();
    match err.holder() {
        Some(Holder::Process {
            pid,
            shared: false,
            ublk_dev: None,
            ..
        }) => {
            assert_eq!(*pid, std::process::id());
            assert!(
                err.to_string()
                    .contains(&format!("(pid {})", std::process::id())),
                "{err}"
            );
        }
        // A kernel without /proc/locks: still busy, holder unknown.
        Some(Holder::Unknown) => {}
        other => panic!("unexpected holder {other:?}"),
    }
}

#[test]
fn the_lock_holds_against_another_process() {
    // flock locks are per open file description, so a child process that opens the path
    // on its own must see it locked.
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "backing.img");
    let claim = Claim::exclusive("backing", &p).unwrap();
    let try_flock = |mode: &str| {
        std::process::Command::new("flock")
            .args(["-n", mode])
            .arg(&p)
            .arg("true")
            .output()
    };
    match try_flock("-s") {
        Ok(o) => assert!(!o.status.success(), "flock(1) got a shared lock"),
        Err(e) => {
            eprintln!("skipping the cross-process check: flock(1) unavailable: {e}");
            return;
        }
    }
    drop(claim);
    let _reader = Claim::shared("backing", &p).unwrap();
    assert!(try_flock("-s").unwrap().status.success(), "readers share");
    assert!(!try_flock("-x").unwrap().status.success(), "a writer waits");
}

#[test]
fn the_same_file_as_cache_and_backing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "x.img");
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    for exclusive in [true, false] {
        let err = claim_pair(&p, &link, exclusive).unwrap_err();
        assert!(matches!(err, ClaimError::SameDevice { .. }), "{err}");
    }
}

#[test]
fn a_hard_link_is_the_same_device() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "x.img");
    let link = dir.path().join("hard.img");
    std::fs::hard_link(&p, &link).unwrap();
    let err = claim_pair(&p, &link, true).unwrap_err();
    assert!(matches!(err, ClaimError::SameDevice { .. }), "{err}");
}

#[test]
fn a_claim_by_another_path_to_the_same_file_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "c.img");
    let link = dir.path().join("c-link.img");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    let _first = Claim::exclusive("cache", &p).unwrap();
    let err = Claim::exclusive("cache", &link).unwrap_err();
    assert!(matches!(err, ClaimError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("in use by"), "{err}");
}

#[test]
fn a_character_device_has_its_own_identity() {
    // /dev/null is a character device: claimable (the caller decides whether it is
    // usable), and never the same device as a regular file.
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "b.img");
    let null = Path::new("/dev/null");
    if !null.exists() {
        eprintln!("skipping: no /dev/null");
        return;
    }
    let (c, b) = claim_pair(null, &f, false).unwrap();
    assert_eq!(c.kind(), DeviceKind::Char);
    assert!(!c.same_device(&b));
}

#[test]
fn distinct_files_are_claimed_together() {
    let dir = tempfile::tempdir().unwrap();
    let (c, b) = claim_pair(&file(&dir, "c.img"), &file(&dir, "b.img"), true).unwrap();
    assert_eq!((c.role(), b.role()), ("cache", "backing"));
    assert!(!c.same_device(&b));
    assert_eq!(c.path(), dir.path().join("c.img"));
}

#[test]
fn proc_locks_lines_are_parsed() {
    let text = "\
1: POSIX  ADVISORY  WRITE 99 00:05:12 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4321 fd:01:678 0 EOF
3: FLOCK  ADVISORY  READ 77 00:2a:9 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:05:1 0 EOF
";
    assert_eq!(find_lock(text, 0xfd, 1, 678), Some((1234, false)));
    assert_eq!(find_lock(text, 0, 0x2a, 9), Some((77, true)));
    // A POSIX lock on the same file is not a flock; an unknown inode has no holder.
    assert_eq!(find_lock(text, 0, 5, 12), None);
    assert_eq!(find_lock(text, 0xfd, 1, 679), None);
    assert_eq!(find_lock("garbage\n\n1:\n", 0, 0, 0), None);
}

#[test]
fn mountinfo_lines_are_parsed() {
    let text = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 22 259:3 / /boot rw shared:2 - vfat /dev/nvme0n1p3 rw
";
    assert_eq!(find_mount(text, 259, 3).as_deref(), Some("/boot"));
    assert_eq!(find_mount(text, 8, 0), None);
    assert_eq!(find_mount("short line\n", 8, 0), None);
}

#[test]
fn dev_t_splits_like_glibc() {
    // makedev(259, 3) and a large minor.
    assert_eq!(major_minor((259 << 8) | 3), (259, 3));
    let dev = (0x12_u64 << 8) | 0x34 | (0xabc_u64 << 20);
    assert_eq!(major_minor(dev), (0x12, 0xabc34));
}

#[test]
fn run_records_name_the_device_of_a_pid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("3.json"), r#"{"pid": 42, "dev_id": 3}"#).unwrap();
    std::fs::write(dir.path().join("5.json"), "not json").unwrap();
    std::fs::write(dir.path().join("x.json"), r#"{"pid": 43}"#).unwrap();
    assert_eq!(ublk_dev_of(dir.path(), 42), Some(3));
    assert_eq!(ublk_dev_of(dir.path(), 43), None);
    assert_eq!(ublk_dev_of(&dir.path().join("missing"), 42), None);
}

#[test]
fn holders_read_as_one_line() {
    let h = Holder::Process {
        pid: 7,
        program: Some("pcache-ublk".into()),
        ublk_dev: Some(0),
        shared: false,
    };
    assert_eq!(h.to_string(), "pcache-ublk device 0 (pid 7)");
    let k = Holder::Kernel {
        holders: vec!["dm-0".into()],
        mount: None,
    };
    assert_eq!(k.to_string(), "the kernel (device-mapper: dm-0)");
    let m = Holder::Kernel {
        holders: vec![],
        mount: Some("/mnt".into()),
    };
    assert_eq!(m.to_string(), "the kernel (mounted at /mnt)");
}
