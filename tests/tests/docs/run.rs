//! Running the documented shell blocks: each block that uses mkfs, fsck, dump or replay
//! on devices runs, in order, with the built binaries on image files standing in for the
//! devices.
//!
//! - `/dev/daxN.M`, `/dev/pmemN` are sparse 512 MiB cache images, holding the
//!   `testimg::samples::data_keys` cache (dirty keys included) when the block starts;
//!   each `pcache-mkfs` line gets a fresh (zeroed) one, as a device being formatted for the
//!   first time would be (the documents' mkfs lines are alternatives, not a sequence).
//!   `pcache-shared format` gets a fresh sparse 8 GiB one.
//! - `/dev/sdX`, `/dev/vdX`, `/dev/nvme…`, `/dev/disk/…` are sparse backing images.
//! - Relative paths (`--export disk.img`) land in the block's scratch directory, its
//!   working directory.
//!
//! A block with a placeholder (`DEVICE`, `$PMEM`) or another absolute path in a tool line
//! is parsed only. The programs in [`NOT_RUN`] and the external commands are skipped.
//! Every line run must exit 0; `--writeback` must leave the cache clean.

use super::extract::{CmdLine, Origin};
use super::{is_placeholder, Tool, NOT_RUN};
use pcache_tools::testimg::samples;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A shared cache device formatted by `pcache-shared format` (sparse).
const SHARED_SIZE: u64 = 8 << 30;

/// The backing images: the sample's keys reach 64 MiB + 4 KiB.
const BACKING_SIZE: u64 = 80 << 20;

/// The directory holding the built tools (`target/debug`, next to `deps/` where this test
/// runs), or why they cannot be run: not built (`cargo test -p pcache-tests` alone does not
/// build them; `cargo test --workspace` does), or older than a source file they are built
/// from, so running them would test old code.
pub fn binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?
        .to_path_buf();
    let newest_source = ["pcache-format/src", "pcache-engine/src", "pcache-tools/src"]
        .iter()
        .filter_map(|d| newest(&super::repo().join(d)))
        .max();
    for t in [
        Tool::Mkfs,
        Tool::Fsck,
        Tool::Dump,
        Tool::Replay,
        Tool::Shared,
    ] {
        let bin = dir.join(t.name());
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .map_err(|_| {
                format!(
                    "{} is not built (cargo test --workspace builds it)",
                    bin.display()
                )
            })?;
        if newest_source.is_some_and(|s| s > built) {
            return Err(format!(
                "{} is older than its sources (cargo test --workspace rebuilds it)",
                bin.display()
            ));
        }
    }
    Ok(dir)
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            if m.is_dir() {
                newest(&e.path())
            } else {
                m.modified().ok()
            }
        })
        .max()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    Cache,
    Backing,
}

fn device(path: &str) -> Option<Dev> {
    let cache = ["/dev/dax", "/dev/pmem"];
    let backing = ["/dev/sd", "/dev/vd", "/dev/nvme", "/dev/disk/"];
    if cache.iter().any(|p| path.starts_with(p)) {
        Some(Dev::Cache)
    } else if backing.iter().any(|p| path.starts_with(p)) {
        Some(Dev::Backing)
    } else {
        None
    }
}

/// The image file for a device path.
fn image(dir: &Path, path: &str) -> PathBuf {
    dir.join(path.trim_start_matches('/').replace('/', "_"))
}

fn fresh(path: &Path, size: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(size)
}

/// Runs the shell blocks of one document; returns how many command lines ran.
pub fn run_document(bins: &Path, file: &str, cmds: &[CmdLine]) -> Result<usize, String> {
    let mut blocks: Vec<usize> = cmds
        .iter()
        .filter(|c| c.origin == Origin::Shell)
        .filter_map(|c| c.block)
        .collect();
    blocks.dedup();
    let mut ran = 0;
    for b in blocks {
        let block: Vec<&CmdLine> = cmds
            .iter()
            .filter(|c| c.origin == Origin::Shell && c.block == Some(b))
            .collect();
        ran += run_block(bins, file, &block)?;
    }
    Ok(ran)
}

/// The value part of a word (`--flag=VALUE` → `VALUE`).
fn value(w: &str) -> &str {
    match w.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") => v,
        _ => w,
    }
}

/// Runs one block (see the module docs); returns how many command lines ran.
fn run_block(bins: &Path, file: &str, block: &[&CmdLine]) -> Result<usize, String> {
    let runnable: Vec<(&CmdLine, Tool)> = block
        .iter()
        .filter_map(|c| Some((*c, Tool::of(&c.words[0])?)))
        .filter(|(_, t)| !NOT_RUN.iter().any(|(p, _)| *p == t.name()))
        .collect();
    if runnable.is_empty() {
        return Ok(0);
    }
    for (c, _) in &runnable {
        let why = c.words[1..].iter().map(|w| value(w)).find_map(|v| {
            if is_placeholder(v) {
                Some("a placeholder")
            } else if v.starts_with('/') && device(v).is_none() {
                Some("a path that is not a device")
            } else {
                None
            }
        });
        if let Some(why) = why {
            eprintln!(
                "docs: {file}:{}: block parsed, not run: {why} in `{}`",
                c.line,
                c.words.join(" ")
            );
            return Ok(0);
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let err =
        |c: &CmdLine, what: String| format!("{file}:{}: `{}`: {what}", c.line, c.words.join(" "));
    // The devices, as they are when the block starts.
    for (c, _) in &runnable {
        for w in c.words[1..].iter().map(|w| value(w)) {
            let img = image(dir.path(), w);
            if img.exists() {
                continue;
            }
            let made = match device(w) {
                Some(Dev::Cache) => samples::data_keys().media.write_to_file(&img),
                Some(Dev::Backing) => fresh(&img, BACKING_SIZE),
                None => Ok(()),
            };
            made.map_err(|e| err(c, format!("making {}: {e}", img.display())))?;
        }
    }
    let mut ran = 0;
    for c in block {
        let Some((_, tool)) = runnable.iter().find(|(r, _)| std::ptr::eq(*r, *c)) else {
            continue;
        };
        let args: Vec<String> = c.words[1..]
            .iter()
            .map(|w| match (device(value(w)), w.split_once('=')) {
                (None, _) => w.clone(),
                (Some(_), Some((flag, v))) if flag.starts_with("--") => {
                    format!("{flag}={}", image(dir.path(), v).display())
                }
                (Some(_), _) => image(dir.path(), w).display().to_string(),
            })
            .collect();
        if *tool == Tool::Shared && c.words.get(1).is_some_and(|w| w == "format") {
            // A shared device: room for a few caches (sparse).
            for w in c.words[2..].iter().map(|w| value(w)) {
                if device(w) == Some(Dev::Cache) {
                    fresh(&image(dir.path(), w), SHARED_SIZE).map_err(|e| err(c, e.to_string()))?;
                }
            }
        }
        if *tool == Tool::Mkfs {
            for w in c.words[1..].iter().map(|w| value(w)) {
                if device(w) == Some(Dev::Cache) {
                    fresh(&image(dir.path(), w), samples::SIZE)
                        .map_err(|e| err(c, e.to_string()))?;
                }
            }
        }
        let out = Command::new(bins.join(tool.name()))
            .args(&args)
            .current_dir(dir.path())
            .env("PCACHE_UBLK_RUN_DIR", dir.path().join("run"))
            .output()
            .map_err(|e| err(c, e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(err(
                c,
                format!(
                    "ran with {:?} and exited {}:\n{stdout}{}",
                    args,
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        let words = &c.words;
        // A salvage writes the backing device only; a plain writeback cleans the cache.
        let salvage = words.iter().any(|w| w == "--salvage");
        if salvage && !stdout.contains("salvage:") {
            return Err(err(c, format!("no salvage report:\n{stdout}")));
        }
        if words.iter().any(|w| w == "--writeback")
            && !words.iter().any(|w| w == "--json")
            && !salvage
            && !stdout.contains("the cache is clean")
        {
            return Err(err(
                c,
                format!("the cache is not clean afterwards:\n{stdout}"),
            ));
        }
        ran += 1;
    }
    Ok(ran)
}
