//! `cargo xtask crash [--points N]`: the power-cut proof with more crash points than CI
//! runs (`pcache-engine/tests/crash.rs`, in release mode).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, ExitCode};

const HELP: &str = "\
usage: cargo xtask crash [--points N]

Runs the engine's simulated power-cut test (pcache-engine/tests/crash.rs) in release
mode over N crash points (default 100000; CI runs 10000): random workloads are cut at
every fence, reopened and checked against a model of what must have survived.";

/// Entry point of `cargo xtask crash`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let mut points: u64 = 100_000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--points" => {
                points = it
                    .next()
                    .context("--points needs a number")?
                    .parse()
                    .context("--points: expected a number")?;
            }
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            s => bail!("unknown argument `{s}` (see --help)"),
        }
    }
    if points == 0 {
        bail!("--points must be at least 1");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the repository")?;
    let status = Command::new(env!("CARGO"))
        .current_dir(repo)
        .env("PCACHE_CRASH_POINTS", points.to_string())
        .args([
            "test",
            "--release",
            "-p",
            "pcache-engine",
            "--test",
            "crash",
            "--",
            "--nocapture",
        ])
        .status()
        .context("running cargo test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
