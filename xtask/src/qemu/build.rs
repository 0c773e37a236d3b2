//! Building our binaries for the guest (`cargo build --release`, with a
//! per-binary fallback while the workspace is broken) and writing each run's
//! initrd: the cached base.cpio followed by a payload cpio.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use super::cases::Case;
use super::cpio;
use super::setup::Config;
use super::util::{fmt_dur, log};

/// Host binaries shipped to the guest (/usr/local/bin) when they build.
pub const BINS: &[&str] = &[
    "pcache-mkfs",
    "pcache-fsck",
    "pcache-dump",
    "pcache-replay",
    "pcache-shared",
    "pcache-ublk",
];

/// The target dir of our workspace build: `$PCACHE_QEMU_TARGET_DIR`, else
/// `$CARGO_TARGET_DIR`, else `<repo>/target`. A separate one keeps this build
/// from waiting on (or invalidating) other builds of the same checkout.
pub fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("PCACHE_QEMU_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
}

/// One `cargo build` invocation's result.
struct Built {
    ok: bool,
    /// Executables cargo reported (fresh or rebuilt) in this invocation.
    exes: Vec<PathBuf>,
}

/// `"executable":"<path>"` of cargo's JSON `compiler-artifact` messages.
fn artifact_exes(json_lines: &str) -> Vec<PathBuf> {
    json_lines
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|l| l.split_once("\"executable\":\"").map(|(_, r)| r))
        .filter_map(|r| r.split_once('"').map(|(p, _)| PathBuf::from(p)))
        .collect()
}

/// `cargo build --release` of the workspace's binaries, into `target_dir`;
/// copies the [`BINS`] that this invocation produced into `bin_dir`. A failing
/// workspace build is not fatal: each binary is then built on its own, and
/// only the ones that build ship (stale binaries from earlier builds never
/// do). cargo's output goes to `log_path`. Returns the shipped names.
pub fn build_bins(
    repo: &Path,
    target_dir: &Path,
    bin_dir: &Path,
    log_path: &Path,
) -> Result<Vec<String>> {
    let t = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    log(format!(
        "build: cargo build --release --workspace --bins (target dir {}; log {}) ...",
        target_dir.display(),
        log_path.display()
    ));
    let logf = fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let build = |extra: &[&str]| -> Result<Built> {
        let out = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--message-format=json-render-diagnostics",
            ])
            .args(extra)
            .current_dir(repo)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_TERM_COLOR", "never")
            .stdin(Stdio::null())
            .stderr(logf.try_clone()?)
            .output()
            .with_context(|| format!("cannot run {cargo}"))?;
        Ok(Built {
            ok: out.status.success(),
            exes: artifact_exes(&String::from_utf8_lossy(&out.stdout)),
        })
    };
    let ws = build(&["--workspace", "--bins"])?;
    let mut exes = ws.exes;
    let mut failed = vec![];
    if !ws.ok {
        log("build: the workspace build failed; building each binary on its own");
        for b in BINS {
            let r = build(&["--bin", b])?;
            if !r.ok {
                failed.push(*b);
            }
            exes.extend(r.exes);
        }
    }
    let mut shipped = BTreeMap::new();
    for exe in exes {
        let Some(name) = exe.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if BINS.contains(&name.as_str()) && !shipped.contains_key(&name) {
            shipped.insert(name, exe);
        }
    }
    for (name, exe) in &shipped {
        fs::copy(exe, bin_dir.join(name))
            .with_context(|| format!("cannot copy {}", exe.display()))?;
    }
    let names: Vec<String> = shipped.into_keys().collect();
    if !failed.is_empty() {
        let text = fs::read_to_string(log_path).unwrap_or_default();
        let errors: BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("error: could not compile") || l.contains("no bin target"))
            .collect();
        log(format!(
            "build: not built: {} ({})",
            failed.join(" "),
            errors.into_iter().collect::<Vec<_>>().join("; ")
        ));
    }
    log(format!(
        "build: done in {}; shipping: {}",
        fmt_dur(t.elapsed()),
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(" ")
        }
    ));
    Ok(names)
}

/// Writes the run's initrd: the cached base.cpio followed by a payload cpio
/// with /init, /xtask/lib.sh, every case's guest scripts and the binaries.
pub fn payload(
    cfg: &Config,
    guest: &Path,
    all: &[Case],
    bin_dir: &Path,
    initrd: &Path,
) -> Result<()> {
    let base = fs::File::open(cfg.base_cpio())?;
    let mut out = std::io::BufWriter::new(fs::File::create(initrd)?);
    std::io::copy(&mut std::io::BufReader::new(base), &mut out)?;
    let mut w = cpio::Writer::new(out);
    w.file_from("init", &guest.join("init.sh"))?;
    w.dir("xtask")?;
    w.file_from("xtask/lib.sh", &guest.join("lib.sh"))?;
    w.dir("xtask/cases")?;
    for case in all {
        let d = format!("xtask/cases/{}", case.name);
        w.dir(&d)?;
        for (i, b) in case.boots.iter().enumerate() {
            w.file_from(&format!("{d}/boot{}.sh", i + 1), b)?;
        }
        // Helpers next to the boot scripts (e.g. common.sh) come along too.
        if let Some(dir) = &case.helpers_dir {
            for e in fs::read_dir(dir)? {
                let p = e?.path();
                let f = p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !f.starts_with("boot") && !f.starts_with("host") && p.is_file() {
                    w.file_from(&format!("{d}/{f}"), &p)?;
                }
            }
        }
    }
    // Binaries, plus any library they need that base.cpio lacks (from the chroot).
    let manifest = fs::read_to_string(cfg.base_manifest()).unwrap_or_default();
    let have: HashSet<&str> = manifest.lines().collect();
    let mut extra_libs = BTreeSet::new();
    let mut bins: Vec<_> = fs::read_dir(bin_dir)?.collect::<Result<_, _>>()?;
    bins.sort_by_key(fs::DirEntry::file_name);
    let names: Vec<String> = bins
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    w.file_bytes(
        "xtask/shipped-bins",
        0o644,
        format!("{}\n", names.join("\n")).as_bytes(),
    )?;
    for e in &bins {
        let name = e.file_name().to_string_lossy().into_owned();
        w.file_from(&format!("usr/local/bin/{name}"), &e.path())?;
        let ldd = Command::new("ldd").arg(e.path()).output()?;
        for l in String::from_utf8_lossy(&ldd.stdout).lines() {
            let Some((lib, _)) = l.trim().split_once(" => ") else {
                continue;
            };
            if !have.contains(format!("usr/lib/x86_64-linux-gnu/{lib}").as_str()) {
                extra_libs.insert(lib.to_owned());
            }
        }
    }
    for lib in extra_libs {
        let src = cfg.chroot_libdir().join(&lib);
        if src.exists() {
            w.file_from(&format!("usr/lib/x86_64-linux-gnu/{lib}"), &src)?;
        } else {
            log(format!(
                "payload: warning: {lib} (needed by a pcache binary) is not in the guest"
            ));
        }
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_from_cargo_json() {
        let j = r#"{"reason":"compiler-artifact","target":{"name":"x"},"executable":"/t/release/pcache-ublk","fresh":true}
{"reason":"compiler-artifact","target":{"name":"lib"},"executable":null,"fresh":true}
{"reason":"build-finished","success":false}"#;
        assert_eq!(artifact_exes(j), [PathBuf::from("/t/release/pcache-ublk")]);
    }
}
