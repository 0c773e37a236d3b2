//! `cargo xtask bench --vm`: one VM run of the same fio jobs on raw pmem,
//! raw backing, pcache-ublk, the kernel's dm-pcache and dm-writecache (guest
//! script `xtask/guest/bench/boot1.sh`), and a markdown table of IOPS and
//! mean latency with each row's ratio to the kernel's dm-pcache.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cases::{self, Case, Verdict};
use super::util::{fmt_dur, log};
use super::{build, repo_root, setup, vm};

const HELP: &str = "\
usage: cargo xtask bench engine [--quick] [--markdown] [...]
       cargo xtask bench --vm [options]

`bench engine` runs the in-process engine benchmark against its copy+flush baseline
(pcache-engine/benches/engine/main.rs; its options are listed there).

Boots one TCG VM (setup as for qemu-test) and runs the same fio jobs on raw
pmem, raw backing, pcache-ublk, the kernel's dm-pcache and dm-writecache, then
writes a table of IOPS and latency, each relative to the kernel's dm-pcache.

options:
  --vm            required (the only bench mode so far)
  --out FILE      where the table goes (default docs/performance-vm.md)
  --runtime S     seconds per fio job (default 5)
  --only JOBS     run only these fio jobs (comma list of w4k-qd1, w4k-qd32, r4k-qd1,
                  r4k-qd32, w64k-seq)
  --devices DEVS  run only on these devices (comma list of pmem, backing, pcache-ublk,
                  pcache-ublk-zc, pcache-ublk-mmap, pcache-ublk-devdax, ublk-ram,
                  dm-pcache, dm-writecache)
  --pmem-mb N     size of the emulated NVDIMM in MiB (default 1024; the cache device is
                  2 MiB smaller)
  --writeback-percent P
                  start the pcache-ublk rows with `--writeback-percent P` (default 0)
  --no-build      ship no pcache binaries (the pcache-ublk row is left out)
  -v, --verbose   copy the guest's serial console to stdout
  -h, --help      this text";

/// Devices in table order, with their labels.
const DEVICES: &[(&str, &str)] = &[
    ("pmem", "raw /dev/pmem0"),
    ("backing", "raw /dev/vda"),
    ("pcache-ublk", "pcache-ublk, /dev/pmem0 (O_DIRECT)"),
    (
        "pcache-ublk-zc",
        "pcache-ublk, /dev/pmem0 (O_DIRECT, --zero-copy)",
    ),
    (
        "pcache-ublk-mmap",
        "pcache-ublk, /dev/pmem0 (page cache, msync)",
    ),
    ("pcache-ublk-devdax", "pcache-ublk, device DAX"),
    ("ublk-ram", "ublk RAM target (floor)"),
    ("dm-pcache", "kernel dm-pcache"),
    ("dm-writecache", "kernel dm-writecache"),
];
/// fio jobs (as named by the guest script), with their labels.
const JOBS: &[(&str, &str)] = &[
    ("w4k-qd1", "4k randwrite QD1"),
    ("w4k-qd32", "4k randwrite QD32"),
    ("r4k-qd1", "4k randread QD1"),
    ("r4k-qd32", "4k randread QD32"),
    ("w64k-seq", "64k seq write QD8"),
];
/// The row every ratio is relative to.
const REFERENCE: &str = "dm-pcache";

/// One job's result: IOPS and mean completion latency in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    iops: f64,
    lat_us: f64,
}

/// IOPS and mean total latency from fio's JSON output (the first job; read
/// or write side, whichever did I/O).
fn parse_fio(text: &str) -> Result<Sample> {
    // fio may print warnings before the JSON.
    let start = text.find('{').context("no JSON in fio's output")?;
    let v: serde_json::Value = serde_json::from_str(&text[start..]).context("fio JSON")?;
    let job = v
        .get("jobs")
        .and_then(|j| j.get(0))
        .context("fio JSON has no jobs")?;
    for side in ["write", "read"] {
        let Some(s) = job.get(side) else { continue };
        let iops = s
            .get("iops")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        if iops > 0.0 {
            let lat_ns = s
                .get("lat_ns")
                .and_then(|l| l.get("mean"))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            return Ok(Sample {
                iops,
                lat_us: lat_ns / 1000.0,
            });
        }
    }
    bail!("fio JSON shows no I/O")
}

fn ratio(x: f64, reference: Option<f64>) -> String {
    match reference {
        Some(r) if r > 0.0 => format!(" ({:.2}×)", x / r),
        _ => String::new(),
    }
}

/// `--only` / `--devices`: a comma list, each name one of `known`.
fn pick_names(arg: &str, what: &str, known: &[(&'static str, &str)]) -> Result<Vec<&'static str>> {
    let mut out = vec![];
    for n in arg.split(',').filter(|n| !n.is_empty()) {
        let Some((k, _)) = known.iter().find(|(k, _)| *k == n) else {
            let all: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
            bail!("{what}: unknown name `{n}` (known: {})", all.join(", "));
        };
        if !out.contains(k) {
            out.push(*k);
        }
    }
    if out.is_empty() {
        bail!("{what} needs at least one name");
    }
    Ok(out)
}

/// Ratios of rows to other rows, per job: the goals of the speed issue (every
/// pcache-ublk row at least 0.9× the ublk floor; /dev/pmem0 at least 0.9× device DAX).
const GOALS: &[(&str, &str, &str)] = &[
    (
        "pcache-ublk-devdax",
        "ublk-ram",
        "pcache-ublk, device DAX ÷ ublk floor",
    ),
    (
        "pcache-ublk",
        "ublk-ram",
        "pcache-ublk, /dev/pmem0 (O_DIRECT) ÷ ublk floor",
    ),
    (
        "pcache-ublk",
        "pcache-ublk-devdax",
        "pcache-ublk, /dev/pmem0 (O_DIRECT) ÷ device DAX",
    ),
    (
        "pcache-ublk-zc",
        "pcache-ublk",
        "pcache-ublk, /dev/pmem0: --zero-copy ÷ user copy",
    ),
];

/// What a pcache-ublk cache's status said after a job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CacheState {
    segs_used: u64,
    n_segs: u64,
    dirty_bytes: u64,
    written_back: u64,
    gc_runs: u64,
    space_waits: u64,
}

/// The fields of [`CacheState`] from `pcache-ublk status --json`.
fn parse_state(text: &str) -> Result<CacheState> {
    let start = text.find('{').context("no JSON in the status output")?;
    let v: serde_json::Value = serde_json::from_str(&text[start..]).context("status JSON")?;
    let get = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {k} in the status"))
    };
    Ok(CacheState {
        segs_used: get("segs_used")?,
        n_segs: get("n_segs")?,
        dirty_bytes: get("dirty_bytes")?,
        written_back: get("written_back")?,
        gc_runs: get("gc_runs")?,
        space_waits: get("space_waits")?,
    })
}

/// The goals table and the cache-state table, for the rows and jobs present.
fn extra_tables(
    results: &BTreeMap<String, BTreeMap<String, Sample>>,
    states: &BTreeMap<String, Vec<(String, CacheState)>>,
    jobs: &[&str],
) -> String {
    let mut s = String::new();
    fn label(j: &str) -> &str {
        JOBS.iter().find(|(k, _)| *k == j).map_or(j, |(_, l)| *l)
    }
    let goals: Vec<_> = GOALS
        .iter()
        .filter(|(a, b, _)| results.contains_key(*a) && results.contains_key(*b))
        .collect();
    if !goals.is_empty() {
        s.push_str(
            "## IOPS against the floor and device DAX (goal: ≥ 0.90×)

| ratio |",
        );
        for j in jobs {
            s.push_str(&format!(" {} |", label(j)));
        }
        s.push_str(
            "
|---|",
        );
        for _ in jobs {
            s.push_str("---:|");
        }
        s.push('\n');
        for (a, b, title) in goals {
            s.push_str(&format!("| {title} |"));
            for j in jobs {
                match (results[*a].get(*j), results[*b].get(*j)) {
                    (Some(x), Some(y)) if y.iops > 0.0 => {
                        s.push_str(&format!(" {:.2}× |", x.iops / y.iops));
                    }
                    _ => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    if !states.is_empty() {
        s.push_str(
            "## The pcache-ublk caches after each job\n\n\
             From `pcache-ublk status --json` after the prefill and after each job; GC runs, \
             waits for space and written-back bytes are what the job added.\n\n\
             | device | after | segments used | dirty MiB | written back MiB | GC runs | waits for space |\n\
             |---|---|---:|---:|---:|---:|---:|\n",
        );
        for (dev, list) in states {
            let mut prev = CacheState::default();
            for (job, st) in list {
                let after = if job == "prefill" {
                    "prefill"
                } else {
                    label(job)
                };
                s.push_str(&format!(
                    "| {dev} | {after} | {}/{} | {:.0} | {:.0} | {} | {} |\n",
                    st.segs_used,
                    st.n_segs,
                    mib(st.dirty_bytes),
                    mib(st.written_back.saturating_sub(prev.written_back)),
                    st.gc_runs.saturating_sub(prev.gc_runs),
                    st.space_waits.saturating_sub(prev.space_waits),
                ));
                prev = *st;
            }
        }
        s.push('\n');
    }
    s
}

/// Bytes in MiB, for a table.
#[allow(clippy::cast_precision_loss)]
fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 20)
}

/// The markdown page for `results[device][job]`.
fn table(
    results: &BTreeMap<String, BTreeMap<String, Sample>>,
    notes: &[String],
    jobs: &[&str],
) -> String {
    let cols: Vec<(&str, &str)> = JOBS
        .iter()
        .filter(|(k, _)| jobs.contains(k))
        .copied()
        .collect();
    let mut s = String::from("# Performance: side by side in one VM\n\n");
    s.push_str(
        "Generated by `cargo xtask bench --vm` (see docs/qemu.md). One QEMU **TCG** VM \
         (no KVM), NFIT fsdax pmem backed by a host file, a virtio backing disk on the host's \
         file system (`cache=none`); fio libaio, direct, time-based, over the same prefilled \
         span on every device.\n\n",
    );
    s.push_str(
        "> **Under TCG only the ratios within one run mean anything.** The absolute numbers \
         measure the emulator on a shared 2-core machine, not the code; they move by 2× \
         between runs. Each cell's ratio is to the kernel's dm-pcache in the same run.\n\n",
    );
    for note in notes {
        s.push_str(&format!("- {note}\n"));
    }
    if !notes.is_empty() {
        s.push('\n');
    }
    let header = |title: &str, s: &mut String| {
        s.push_str(&format!("## {title}\n\n| device |"));
        for (_, label) in &cols {
            s.push_str(&format!(" {label} |"));
        }
        s.push_str("\n|---|");
        for _ in &cols {
            s.push_str("---:|");
        }
        s.push('\n');
    };
    for (title, pick, fmt) in [
        (
            "IOPS (ratio to dm-pcache)",
            (|x: &Sample| x.iops) as fn(&Sample) -> f64,
            (|v: f64| format!("{v:.0}")) as fn(f64) -> String,
        ),
        (
            "Mean latency, µs (ratio to dm-pcache)",
            |x: &Sample| x.lat_us,
            |v: f64| format!("{v:.1}"),
        ),
    ] {
        header(title, &mut s);
        for (dev, label) in DEVICES {
            let Some(row) = results.get(*dev) else {
                continue;
            };
            s.push_str(&format!("| {label} |"));
            for (job, _) in &cols {
                match row.get(*job) {
                    Some(x) => {
                        let r = results.get(REFERENCE).and_then(|r| r.get(*job)).map(pick);
                        s.push_str(&format!(" {}{} |", fmt(pick(x)), ratio(pick(x), r)));
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

/// `cargo xtask bench engine [ARGS]`: the in-process engine benchmark
/// (`pcache-engine/benches/engine/main.rs`; ARGS go to it, e.g. `--quick`, `--markdown`).
fn engine(args: &[String]) -> Result<ExitCode> {
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["bench", "-p", "pcache-engine", "--bench", "engine", "--"])
        .args(args)
        .status()
        .context("running cargo bench")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Entry point of `cargo xtask bench`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    if args.first().map(String::as_str) == Some("engine") {
        return engine(&args[1..]);
    }
    let mut vm_mode = false;
    let mut out = None;
    let mut runtime = 5u64;
    let mut no_build = false;
    let mut verbose = false;
    let mut jobs: Vec<&str> = JOBS.iter().map(|(k, _)| *k).collect();
    let mut devices: Vec<&str> = DEVICES.iter().map(|(k, _)| *k).collect();
    let mut append = vec![];
    let mut pmem_mb = cases::Directives::default().pmem_mb;
    let mut notes_args: Vec<String> = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--vm" => vm_mode = true,
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a FILE")?)),
            "--runtime" => {
                runtime = it
                    .next()
                    .context("--runtime needs seconds")?
                    .parse()
                    .context("--runtime: expected a number of seconds")?;
            }
            "--only" => {
                let a = it.next().context("--only needs a list of jobs")?;
                jobs = pick_names(a, "--only", JOBS)?;
                append.push(format!("xt_bench_only={}", jobs.join(",")));
            }
            "--devices" => {
                let a = it.next().context("--devices needs a list of devices")?;
                devices = pick_names(a, "--devices", DEVICES)?;
                append.push(format!("xt_bench_devices={}", devices.join(",")));
            }
            "--pmem-mb" => {
                pmem_mb = it
                    .next()
                    .context("--pmem-mb needs a size in MiB")?
                    .parse()
                    .context("--pmem-mb: expected a number of MiB")?;
                if pmem_mb < 514 || !pmem_mb.is_multiple_of(2) {
                    bail!("--pmem-mb must be even and at least 514, not {pmem_mb}");
                }
                notes_args.push(format!("{pmem_mb} MiB of pmem"));
            }
            "--writeback-percent" => {
                let p: u8 = it
                    .next()
                    .context("--writeback-percent needs a percentage")?
                    .parse()
                    .context("--writeback-percent: expected 0..=80")?;
                append.push(format!("xt_bench_wbp={p}"));
                notes_args.push(format!("pcache-ublk with --writeback-percent {p}"));
            }
            "--no-build" => no_build = true,
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            s => bail!("unknown argument `{s}` (see --help)"),
        }
    }
    if !vm_mode {
        bail!("`cargo xtask bench engine` or `cargo xtask bench --vm` (see --help)");
    }
    super::util::start_clock();
    let repo = repo_root();
    let out = out.unwrap_or_else(|| repo.join("docs/performance-vm.md"));
    let guest = repo.join("xtask/guest");
    let case = Case {
        name: "bench".into(),
        boots: vec![guest.join("bench/boot1.sh")],
        hosts: BTreeMap::new(),
        helpers_dir: None,
        dir: cases::Directives {
            timeout: Duration::from_secs(600 + 60 * runtime * 5),
            pmem_mb,
            ..Default::default()
        },
    };
    let cfg = setup::Config::from_env(&repo)?;
    let qemu = setup::ensure(&cfg)?;
    let shm = shm_runs(pmem_mb);
    if let Some(d) = &shm {
        notes_args.push("the emulated pmem in host memory (tmpfs)".into());
        log(format!(
            "bench: the run (and its pmem image) in {}",
            d.display()
        ));
    }
    let run_dir = super::new_run_dir_in(&cfg, shm)?;
    let bin_dir = run_dir.join("bin");
    fs::create_dir_all(&bin_dir)?;
    if !no_build {
        build::build_bins(
            &repo,
            &build::target_dir(&repo),
            &bin_dir,
            &run_dir.join("build.log"),
        )?;
    }
    let initrd = run_dir.join("initrd.cpio");
    build::payload(&cfg, &guest, std::slice::from_ref(&case), &bin_dir, &initrd)?;
    let kernel = cfg.vmlinuz();
    let tctx = vm::TemplateCtx {
        cache: &cfg.cache,
        kver: &cfg.kver(),
        qemu: &qemu,
        kernel: &kernel,
        initrd: &initrd,
    };
    let templates = |mb: u64| vm::template(&tctx, mb);
    let env = cases::Env {
        repo: &repo,
        run_dir: &run_dir,
        bin_dir: &bin_dir,
        lib_sh: &guest.join("lib.sh"),
        qemu: &qemu,
        kernel: &kernel,
        initrd: &initrd,
        echo: verbose,
        templates: &templates,
        append: std::iter::once(format!("xt_bench_runtime={runtime}"))
            .chain(append)
            .collect::<Vec<_>>()
            .join(" "),
    };
    let t = Instant::now();
    log(format!(
        "bench: one VM, {} devices x {} fio jobs x {runtime} s ...",
        devices.len(),
        jobs.len()
    ));
    let r = cases::run(&env, &case)?;
    if r.verdict != Verdict::Pass {
        // The logs stay for a look; the device images (GiBs, maybe in memory) go.
        for f in ["pmem.img", "backing.img"] {
            let _ = fs::remove_file(r.dir.join(f));
        }
        if let Some(l) = &r.log {
            println!(
                "{}",
                super::util::tail_filtered(l, 40, super::util::is_kernel_line)
            );
        }
        bail!(
            "the bench VM failed: {:?}; files in {}",
            r.verdict,
            r.dir.display()
        );
    }
    let outdir = r.dir.join("out");
    let mut results: BTreeMap<String, BTreeMap<String, Sample>> = BTreeMap::new();
    let mut states: BTreeMap<String, Vec<(String, CacheState)>> = BTreeMap::new();
    let mut notes = vec![];
    for dev in &devices {
        let skipped = outdir.join(format!("{dev}.skipped"));
        if let Ok(why) = fs::read_to_string(&skipped) {
            notes.push(format!("{dev} left out: {}", why.trim()));
            continue;
        }
        for job in std::iter::once(&"prefill").chain(&jobs) {
            let f = outdir.join(format!("{dev}.{job}.status.json"));
            if let Ok(text) = fs::read_to_string(&f) {
                let st = parse_state(&text).with_context(|| format!("{}", f.display()))?;
                states
                    .entry((*dev).to_owned())
                    .or_default()
                    .push(((*job).to_owned(), st));
            }
        }
        for job in &jobs {
            let f = outdir.join(format!("{dev}.{job}.json"));
            let text = fs::read_to_string(&f)
                .with_context(|| format!("no result {} from the guest", f.display()))?;
            let x = parse_fio(&text).with_context(|| format!("{}", f.display()))?;
            results
                .entry((*dev).to_owned())
                .or_default()
                .insert((*job).to_owned(), x);
        }
    }
    notes.extend(notes_args);
    if jobs.len() < JOBS.len() || devices.len() < DEVICES.len() {
        notes.push(format!(
            "a partial run: jobs {}; devices {}",
            jobs.join(", "),
            devices.join(", ")
        ));
    }
    notes.push(format!(
        "{runtime} s per job after 1 s ramp; kernel {}; {}",
        cfg.kver(),
        super::util::today()
    ));
    let mut page = table(&results, &notes, &jobs);
    page.push_str(&extra_tables(&results, &states, &jobs));
    write_out(&out, &page)?;
    print!("\n{page}");
    log(format!(
        "bench: done in {}; table written to {}",
        fmt_dur(t.elapsed()),
        out.display()
    ));
    super::util::remove_any(&run_dir)?;
    Ok(ExitCode::SUCCESS)
}

/// Where the bench's run goes when `PCACHE_QEMU_RUNS` does not say: `/dev/shm`, if the
/// host has the memory for it. The emulated NVDIMM is a file; on disk, every page the
/// cache's log reaches for the first time costs the host a block allocation, and its
/// dirty pages are written to disk, so large writes measured the host's file system (a
/// 64 KiB sequential write at 0.5× the ublk floor on disk, 1.15× on tmpfs, the same
/// build). Memory is what pmem is.
fn shm_runs(pmem_mb: u64) -> Option<PathBuf> {
    if std::env::var_os("PCACHE_QEMU_RUNS").is_some() {
        return None;
    }
    let shm = Path::new("/dev/shm");
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let avail_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    // The image, the guest's RAM and room to spare.
    let need_mb = pmem_mb + 8192;
    (shm.is_dir() && avail_kb / 1024 >= need_mb).then(|| shm.join("pcache-bench-runs"))
}

fn write_out(out: &Path, page: &str) -> Result<()> {
    if let Some(d) = out.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(out, page).with_context(|| format!("cannot write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_and_table() {
        let j = r#"note: both iodepth >= 1 and synchronous I/O engine
{"jobs":[{"jobname":"w4k-qd1","read":{"iops":0.0,"lat_ns":{"mean":0.0}},
 "write":{"iops":2000.5,"lat_ns":{"mean":480500.0}}}]}"#;
        let s = parse_fio(j).unwrap();
        assert_eq!(
            s,
            Sample {
                iops: 2000.5,
                lat_us: 480.5
            }
        );
        assert!(parse_fio("{\"jobs\":[]}").is_err());
        assert!(parse_fio("garbage").is_err());
        let mut r = BTreeMap::new();
        for (dev, k) in [("dm-pcache", 1.0), ("pmem", 2.0)] {
            let row: BTreeMap<String, Sample> = JOBS
                .iter()
                .map(|(j, _)| {
                    (
                        (*j).to_owned(),
                        Sample {
                            iops: 1000.0 * k,
                            lat_us: 10.0 / k,
                        },
                    )
                })
                .collect();
            r.insert(dev.to_owned(), row);
        }
        let all: Vec<&str> = JOBS.iter().map(|(k, _)| *k).collect();
        let t = table(&r, &[], &all);
        assert!(t.contains("| raw /dev/pmem0 | 2000 (2.00×) |"), "{t}");
        assert!(t.contains("| kernel dm-pcache | 1000 (1.00×) |"), "{t}");
        assert!(t.contains("5.0 (0.50×)"), "{t}");
        assert!(!t.contains("pcache-ublk |"));
        // Only the jobs asked for are columns.
        let t = table(&r, &[], &["w64k-seq"]);
        assert!(t.contains("| raw /dev/pmem0 | 2000 (2.00×) |\n"), "{t}");
        assert!(!t.contains("4k randwrite"), "{t}");
    }

    #[test]
    fn only_and_devices_take_known_names() {
        assert_eq!(
            pick_names("w64k-seq,r4k-qd1,w64k-seq", "--only", JOBS).unwrap(),
            ["w64k-seq", "r4k-qd1"]
        );
        let e = pick_names("w64k", "--only", JOBS).unwrap_err().to_string();
        assert!(
            e.contains("unknown name `w64k`") && e.contains("w64k-seq"),
            "{e}"
        );
        assert!(pick_names(",", "--devices", DEVICES).is_err());
    }

    #[test]
    fn goals_and_cache_state() {
        let st = |segs_used, written_back, gc_runs| CacheState {
            segs_used,
            n_segs: 100,
            dirty_bytes: 3 << 20,
            written_back,
            gc_runs,
            space_waits: 0,
        };
        let json = r#"{"segs_used": 7, "n_segs": 100, "dirty_bytes": 3145728,
            "written_back": 0, "gc_runs": 0, "space_waits": 0, "cache": "/dev/pmem0"}"#;
        assert_eq!(parse_state(json).unwrap(), st(7, 0, 0));
        assert!(parse_state(r#"{"segs_used": 7}"#).is_err());
        let sample = |iops| Sample { iops, lat_us: 1.0 };
        let mut r = BTreeMap::new();
        for (dev, iops) in [("pcache-ublk-devdax", 900.0), ("ublk-ram", 1000.0)] {
            r.insert(
                dev.to_owned(),
                BTreeMap::from([("w64k-seq".to_owned(), sample(iops))]),
            );
        }
        let states = BTreeMap::from([(
            "pcache-ublk-devdax".to_owned(),
            vec![
                ("prefill".to_owned(), st(7, 0, 0)),
                ("w64k-seq".to_owned(), st(70, 200 << 20, 3)),
            ],
        )]);
        let t = extra_tables(&r, &states, &["w64k-seq"]);
        assert!(t.contains("\n\n| device | after | segments used |"), "{t}");
        assert!(
            t.contains("| pcache-ublk, device DAX ÷ ublk floor | 0.90× |"),
            "{t}"
        );
        // The /dev/pmem0 rows are not there, so neither are their ratios.
        assert!(!t.contains("O_DIRECT"), "{t}");
        assert!(
            t.contains("| pcache-ublk-devdax | prefill | 7/100 | 3 | 0 | 0 | 0 |"),
            "{t}"
        );
        assert!(
            t.contains("| pcache-ublk-devdax | 64k seq write QD8 | 70/100 | 3 | 200 | 3 | 0 |"),
            "{t}"
        );
    }
}
