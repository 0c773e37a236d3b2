//! `cargo xtask crash [--points N] [--mutants]`: the power-cut proof with more crash
//! points than CI runs (`pcache-engine/tests/crash.rs`, in release mode), or once per
//! mutant of the persistence protocol, each of which it must catch.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const HELP: &str = "\
usage: cargo xtask crash [--points N] [--jobs J] [--mutants [--only STEP,...]]

Runs the engine's simulated power-cut test (pcache-engine/tests/crash.rs) in release
mode over N crash points (default 100000; 10000 with --mutants; CI runs 10000): random
workloads are cut at every fence of the cache media and at every write completion and
flush of the backing device (a disk with a volatile write cache: what was not flushed
may vanish, sector by sector), reopened and checked against a model of what must have
survived.

--jobs     split the points of the random workloads among J processes at once (each
           takes every J-th workload: PCACHE_CRASH_SHARD=i/J); default: one per CPU.
--mutants  builds the engine with its `mutants` feature and runs the proof once per
           persistence step of docs/design.md with that step dropped (PCACHE_MUTANT=STEP;
           W2 is moved, see design.md \"Mutants\"): every mutant must be caught (the
           proof fails), except those design.md argues cannot be. Then once with no
           mutant, which must pass. Prints each mutant's time to fail.
--only     the mutants to run (comma-separated), for a quicker look.";

/// The steps of `pcache_engine::mutants::Step::ALL`, in order.
const STEPS: [&str; 24] = [
    "D1", "K1", "K2a", "K2b", "L1", "L2a", "L2b", "T1", "W1", "W2", "W0", "G1", "G2", "G3", "M1",
    "A1", "F1", "WT1", "WT2", "WT3", "SF1", "SF2", "TB1", "CR1",
];

/// The proof that covers a step: the test target, and the one test of it to run (all of
/// them when `None`). The shared cache device's table steps have their own target
/// (`pcache-engine/tests/shared_crash.rs`); L1 and G2 the scripted test of
/// `tests/crash.rs` that takes a log segment again and reuses a data segment within an
/// activation (the random workloads reach neither); the others all of `tests/crash.rs`.
fn test_of(step: &str) -> (&'static str, Option<&'static str>) {
    match step {
        "SF1" | "SF2" | "TB1" | "CR1" => ("shared_crash", None),
        "L1" | "G2" => ("crash", Some("log_segment_taken_again")),
        _ => ("crash", None),
    }
}

/// The steps whose mutant no power cut can tell apart, as docs/design.md argues
/// ("Mutants"): run and reported, but not required to fail. None: the proof catches every
/// step.
const ARGUED: [&str; 0] = [];

/// Entry point of `cargo xtask crash`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let mut points: Option<u64> = None;
    let mut mutants = false;
    let mut only: Option<Vec<String>> = None;
    let mut jobs: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--points" => {
                points = Some(
                    it.next()
                        .context("--points needs a number")?
                        .parse()
                        .context("--points: expected a number")?,
                );
            }
            "--mutants" => mutants = true,
            "--jobs" => {
                jobs = Some(
                    it.next()
                        .context("--jobs needs a number")?
                        .parse()
                        .context("--jobs: expected a number")?,
                );
            }
            "--only" => {
                let list = it.next().context("--only needs a list of steps")?;
                let mut steps = Vec::new();
                for s in list.split(',') {
                    let Some(step) = STEPS.iter().find(|n| n.eq_ignore_ascii_case(s.trim())) else {
                        bail!("--only: `{s}` is no step (one of {})", STEPS.join(", "));
                    };
                    steps.push((*step).to_owned());
                }
                only = Some(steps);
            }
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            s => bail!("unknown argument `{s}` (see --help)"),
        }
    }
    if only.is_some() && !mutants {
        bail!("--only goes with --mutants");
    }
    let points = points.unwrap_or(if mutants { 10_000 } else { 100_000 });
    if points == 0 {
        bail!("--points must be at least 1");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the repository")?;
    if !mutants {
        let jobs = jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
        if jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        let start = Instant::now();
        let ok = sharded(repo, points, jobs)?
            && proof(repo, points, None, false, ("shared_crash", None))?.0;
        println!(
            "crash: {points} points on {jobs} process(es) and the shared-device proof: {} in {:.0} s",
            if ok { "passed" } else { "FAILED" },
            start.elapsed().as_secs_f64()
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    run_mutants(repo, points, only.as_deref())
}

/// The random-workload proof (`tests/crash.rs`) split among `jobs` processes at once,
/// each with its share of the points (`PCACHE_CRASH_SHARD`); the first also runs the
/// scripted laps. True if every process passed.
fn sharded(repo: &Path, points: u64, jobs: u64) -> Result<bool> {
    let status = Command::new(env!("CARGO"))
        .current_dir(repo)
        .args([
            "test",
            "--release",
            "-p",
            "pcache-engine",
            "--test",
            "crash",
            "--no-run",
        ])
        .status()
        .context("building the proof")?;
    if !status.success() {
        bail!("the proof does not build");
    }
    let mut children = Vec::new();
    for i in 0..jobs {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(repo)
            .env("PCACHE_CRASH_POINTS", points.to_string())
            .env("PCACHE_CRASH_SHARD", format!("{i}/{jobs}"))
            .env_remove("PCACHE_MUTANT")
            .args([
                "test",
                "-q",
                "--release",
                "-p",
                "pcache-engine",
                "--test",
                "crash",
                "--",
                "--nocapture",
            ]);
        if i > 0 {
            cmd.args(["power_cuts_never_lose_acknowledged_data", "--exact"]);
        }
        children.push(cmd.spawn().context("running cargo test")?);
    }
    let mut ok = true;
    for mut c in children {
        ok &= c.wait().context("waiting for cargo test")?.success();
    }
    Ok(ok)
}

/// `cargo test` of the proof (`test`: the target, and the one test to run): (passed,
/// seconds, first panic line).
fn proof(
    repo: &Path,
    points: u64,
    mutant: Option<&str>,
    with_feature: bool,
    test: (&str, Option<&str>),
) -> Result<(bool, f64, Option<String>)> {
    let (test, only) = test;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo)
        .env("PCACHE_CRASH_POINTS", points.to_string())
        .env_remove("PCACHE_MUTANT")
        .args(["test", "--release", "-p", "pcache-engine"]);
    if with_feature {
        cmd.args(["--features", "mutants"]);
    }
    cmd.args(["--test", test, "--", "--nocapture"]);
    if let Some(name) = only {
        cmd.args([name, "--exact"]);
    }
    if let Some(m) = mutant {
        cmd.env("PCACHE_MUTANT", m);
    }
    let start = Instant::now();
    if !with_feature {
        let status = cmd.status().context("running cargo test")?;
        return Ok((status.success(), start.elapsed().as_secs_f64(), None));
    }
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("running cargo test")?;
    let secs = start.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // The line after "panicked at": what the proof found.
    let mut lines = text.lines();
    let why = lines
        .by_ref()
        .find(|l| l.contains("panicked at"))
        .and_then(|_| lines.next())
        .map(|l| l.chars().take(160).collect());
    Ok((out.status.success(), secs, why))
}

/// One proof per mutant (each must fail), then one without (it must pass).
fn run_mutants(repo: &Path, points: u64, only: Option<&[String]>) -> Result<ExitCode> {
    println!("building the proof with the `mutants` feature");
    let status = Command::new(env!("CARGO"))
        .current_dir(repo)
        .args([
            "test",
            "--release",
            "-p",
            "pcache-engine",
            "--features",
            "mutants",
            "--test",
            "crash",
            "--test",
            "shared_crash",
            "--no-run",
        ])
        .status()
        .context("building the proof")?;
    if !status.success() {
        bail!("the proof does not build with the `mutants` feature");
    }
    let steps: Vec<&str> = match only {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => STEPS.to_vec(),
    };
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for step in steps {
        let (passed, secs, why) = proof(repo, points, Some(step), true, test_of(step))?;
        let argued = ARGUED.contains(&step);
        let verdict = match (passed, argued) {
            (false, _) => "caught",
            (true, true) => "not caught (argued in docs/design.md, Mutants)",
            (true, false) => "NOT CAUGHT",
        };
        if passed && !argued {
            bad.push(step);
        }
        println!(
            "{step:>4}  {verdict:<10} {secs:>7.1} s  {}",
            why.as_deref().unwrap_or("")
        );
        rows.push((step, verdict, secs));
    }
    let (passed, secs, why) = proof(repo, points, None, true, ("crash", None))?;
    let (shared_passed, shared_secs, shared_why) =
        proof(repo, points, None, true, ("shared_crash", None))?;
    let (passed, secs, why) = (
        passed && shared_passed,
        secs + shared_secs,
        why.or(shared_why),
    );
    println!(
        "none  {:<10} {secs:>7.1} s  {}",
        if passed { "passes" } else { "FAILS" },
        why.as_deref().unwrap_or("")
    );
    println!("\n| step | caught | seconds |\n|---|---|---|");
    for (step, verdict, secs) in &rows {
        println!("| {step} | {verdict} | {secs:.1} |");
    }
    println!(
        "| (none) | {} | {secs:.1} |",
        if passed { "passes" } else { "FAILS" }
    );
    if !bad.is_empty() {
        eprintln!("mutants not caught: {}", bad.join(", "));
    }
    if !passed {
        eprintln!("the proof fails without a mutant");
    }
    Ok(if bad.is_empty() && passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
