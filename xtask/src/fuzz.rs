//! `cargo xtask fuzz [--secs N] [TARGET]`: coverage-guided fuzzing with cargo-fuzz
//! (libFuzzer) of the targets in `fuzz/` (see docs/tools.md, "Fuzzing").
//!
//! Installs cargo-fuzz if it is missing, builds every target (nightly if rustup has one,
//! else the stable toolchain with `RUSTC_BOOTSTRAP=1`), writes the seed corpora
//! (`fuzz/examples/seeds.rs` into `fuzz/corpus/<target>/`), then runs each target (or
//! the one named) for N seconds, one process, with libFuzzer's memory limits. A crash,
//! a broken property (a panic) or a limit exceeded fails the task; the input is in
//! `fuzz/artifacts/<target>/`.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::qemu::{fmt_dur, output, run, target_dir};

const HELP: &str = "\
usage: cargo xtask fuzz [--secs N] [--jobs J] [TARGET]

Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the targets in fuzz/: installs
cargo-fuzz if missing, builds the targets, writes the seed corpora into
fuzz/corpus/<target>/, then runs each target (or TARGET) for N seconds (default 60).
Fails if a target crashes, breaks a property (panics), times out on one input, or
exceeds the memory limits; the input is saved in fuzz/artifacts/<target>/.

  --secs N    seconds per target (default 60)
  --jobs J    run J targets at once, one process each (default 1)

Targets: records, open_raw, open_patch, fsck_raw, fsck_patch, engine_ops
(`cargo fuzz list`); docs/tools.md, \"Fuzzing\", says what each checks.";

/// libFuzzer's limits: a single allocation over `malloc_limit_mb` is a crash (the images
/// are small, so an allocation sized by a hostile field shows up), as is a process over
/// `rss_limit_mb` or an input that runs longer than `timeout` seconds.
const LIMITS: [&str; 3] = ["-malloc_limit_mb=128", "-rss_limit_mb=2048", "-timeout=60"];

/// The options.
#[derive(Debug, PartialEq)]
struct Opts {
    secs: u64,
    jobs: usize,
    target: Option<String>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        secs: 60,
        jobs: 1,
        target: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                o.secs = it
                    .next()
                    .context("--secs needs a number")?
                    .parse()
                    .context("--secs: expected a number of seconds")?;
            }
            "--jobs" => {
                o.jobs = it
                    .next()
                    .context("--jobs needs a number")?
                    .parse()
                    .context("--jobs: expected a number of processes")?;
            }
            "-h" | "--help" => return Ok(None),
            s if s.starts_with('-') => bail!("unknown option `{s}` (see --help)"),
            s => {
                if o.target.replace(s.to_owned()).is_some() {
                    bail!("one target at most (see --help)");
                }
            }
        }
    }
    if o.secs == 0 {
        bail!("--secs must be at least 1");
    }
    if o.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    Ok(Some(o))
}

/// How to run `cargo fuzz`: with rustup's nightly, or the current toolchain told to
/// allow nightly flags.
fn cargo_fuzz(repo: &Path, target_dir: &Path, sub: &str) -> Command {
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        });
    let mut c = if nightly {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        c
    } else {
        let mut c = Command::new(env!("CARGO"));
        c.env("RUSTC_BOOTSTRAP", "1");
        c
    };
    c.current_dir(repo).args(["fuzz", sub]);
    if sub != "list" {
        c.arg("--target-dir").arg(target_dir);
    }
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        println!("xtask fuzz: installing cargo-fuzz");
        run(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// What a run's log says: runs, seconds, and the last coverage line.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    runs: Option<u64>,
    secs: Option<u64>,
    cov: Option<String>,
}

fn stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix("Done ") {
            // "Done 726647 runs in 61 second(s)"
            let w: Vec<&str> = rest.split_whitespace().collect();
            s.runs = w.first().and_then(|n| n.parse().ok());
            s.secs = w.get(3).and_then(|n| n.parse().ok());
        }
        if l.starts_with('#') && l.contains("cov: ") {
            // "#726647	DONE   cov: 1234 ft: 5678 corp: 300/12Kb ..."
            let from = l.find("cov: ").unwrap_or(0);
            let to = l
                .find(" lim: ")
                .or_else(|| l.find(" exec/s"))
                .unwrap_or(l.len());
            s.cov = Some(l[from..to.max(from)].to_owned());
        }
    }
    s
}

/// Runs one target; `Ok(false)` if it found something.
fn fuzz_one(repo: &Path, tdir: &Path, target: &str, secs: u64) -> Result<bool> {
    let logs = tdir.join("fuzz-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let t = Instant::now();
    let mut c = cargo_fuzz(repo, tdir, "run");
    c.arg(target)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .args(LIMITS)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    let st = c.status().context("running cargo fuzz")?;
    let text = String::from_utf8_lossy(&fs::read(&log_path)?).into_owned();
    let s = stats(&text);
    println!(
        "xtask fuzz: {target}: {} runs in {}, {} ({})",
        s.runs.map_or("?".into(), |n| n.to_string()),
        s.secs
            .map_or_else(|| fmt_dur(t.elapsed()), |n| format!("{n}s")),
        s.cov.as_deref().unwrap_or("no coverage line"),
        log_path.display()
    );
    if st.success() {
        return Ok(true);
    }
    let lines: Vec<&str> = text.lines().collect();
    println!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
    println!(
        "xtask fuzz: {target} FAILED ({st}); the input is in fuzz/artifacts/{target}/ \
         (replay it: cargo fuzz run {target} fuzz/artifacts/{target}/<file>)"
    );
    Ok(false)
}

/// Entry point of `cargo xtask fuzz`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let Some(o) = parse(args)? else {
        println!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the repository")?
        .to_path_buf();
    let tdir = target_dir(&repo);
    ensure_cargo_fuzz()?;
    let all: Vec<String> = output(&mut cargo_fuzz(&repo, &tdir, "list"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let targets: Vec<String> = match &o.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target `{t}` (targets: {})", all.join(", ")),
        None => all,
    };
    println!("xtask fuzz: building {}", targets.join(", "));
    let mut build = cargo_fuzz(&repo, &tdir, "build");
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    run(&mut build)?;
    println!("xtask fuzz: writing the seed corpora (fuzz/examples/seeds.rs)");
    run(Command::new(env!("CARGO"))
        .current_dir(&repo)
        .args(["run", "--quiet", "--manifest-path", "fuzz/Cargo.toml"])
        .args(["--example", "seeds", "--target-dir"])
        .arg(&tdir))?;
    // The targets share out among `jobs` threads, each running one libFuzzer process
    // at a time; each target keeps its own corpus, artifacts and log.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..o.jobs.min(targets.len()))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(t) = targets.get(i) else {
                            return Ok(());
                        };
                        if !fuzz_one(&repo, &tdir, t, o.secs)? {
                            failed
                                .lock()
                                .map_err(|_| anyhow::anyhow!("a fuzz thread panicked"))?
                                .push(t.as_str());
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a fuzz thread panicked"))??;
        }
        Ok(())
    })?;
    let failed = failed
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a fuzz thread panicked"))?;
    if failed.is_empty() {
        println!(
            "xtask fuzz: no crash in {} target{}",
            targets.len(),
            if targets.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("xtask fuzz: crashes in {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        assert_eq!(
            parse(&args(&["--secs", "5", "records"])).unwrap(),
            Some(Opts {
                secs: 5,
                jobs: 1,
                target: Some("records".into())
            })
        );
        assert_eq!(
            parse(&args(&["--jobs", "2"])).unwrap(),
            Some(Opts {
                secs: 60,
                jobs: 2,
                target: None
            })
        );
        assert!(parse(&args(&["--jobs", "0"])).is_err());
        assert_eq!(parse(&args(&["-h"])).unwrap(), None);
        assert!(parse(&args(&["--secs", "0"])).is_err());
        assert!(parse(&args(&["a", "b"])).is_err());
        assert!(parse(&args(&["--jobs"])).is_err());
    }

    #[test]
    fn stats_of_a_log() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 2/4b exec/s: 0 rss: 68Mb\n\
                   #726647\tDONE   cov: 1234 ft: 5678 corp: 300/12Kb lim: 89 exec/s: 11912 rss: 90Mb\n\
                   Done 726647 runs in 61 second(s)\n";
        assert_eq!(
            stats(log),
            Stats {
                runs: Some(726_647),
                secs: Some(61),
                cov: Some("cov: 1234 ft: 5678 corp: 300/12Kb".into()),
            }
        );
    }
}
