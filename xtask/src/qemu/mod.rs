//! `cargo xtask qemu-test`: boots Debian's kernel under QEMU (TCG) with an
//! emulated NVDIMM (fsdax /dev/pmem0), a virtio backing disk (/dev/vda), the
//! kernel's dm-pcache (built out of tree) and ublk, and runs the guest test
//! cases in `xtask/guest/cases/`. How it works: docs/qemu.md.

mod bench;
mod build;
mod cases;
mod cpio;
mod initramfs;
mod setup;
mod util;
mod vm;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

pub use bench::main as bench_main;
// For `cargo xtask install`: the same release build, and the command helpers.
pub use build::{target_dir, BINS};
use cases::Verdict;
use util::log;
pub use util::{fmt_dur, have, output, run};
use vm::PmemLayout;

const HELP: &str = "\
usage: cargo xtask qemu-test [options]

Boots one TCG VM per case (fresh pmem + backing images) and runs the guest
scripts in xtask/guest/cases/. Setup (chroot, kernel, dm-pcache.ko, initramfs)
is cached in $PCACHE_QEMU_CACHE (default <repo>/.qemu-cache).

options:
  --filter NAME   run only cases whose name contains NAME (repeatable)
  --quick         run only the cases marked `# xtask: quick` (the CI set)
  --keep          keep images and logs of passing cases too (path is printed)
  --shell         boot the first selected case's environment with an
                  interactive shell on the serial console (Ctrl-A X quits)
  --no-build      do not run `cargo build --release`; ship no pcache binaries
  --setup-only    only build the cached setup (and the default pmem template)
  --self-test     run the harness's own cases (xtask/guest/selftest: failing,
                  panicking, hanging, skipping ... guests) and check that each
                  ends as its `# xtask: expect=` says
  -v, --verbose   copy the guests' serial consoles to stdout
  -h, --help      this text

env: PCACHE_QEMU_CACHE (cache dir), PCACHE_QEMU_TARGET_DIR (target dir of the
     workspace build; default $CARGO_TARGET_DIR or <repo>/target),
     PCACHE_QEMU_CASES (cases dir), PCACHE_QEMU_KV (default 7.3.4+deb13),
     PCACHE_QEMU_MIRROR, PCACHE_QEMU_BIN (qemu binary),
     PCACHE_QEMU_BACKPORTS=0 (use bookworm's qemu)";

#[derive(Debug, Default)]
struct Opts {
    filters: Vec<String>,
    quick: bool,
    keep: bool,
    shell: bool,
    no_build: bool,
    setup_only: bool,
    self_test: bool,
    verbose: bool,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => o
                .filters
                .push(it.next().context("--filter needs a NAME")?.clone()),
            s if s.starts_with("--filter=") => o.filters.push(s[9..].to_owned()),
            "--quick" => o.quick = true,
            "--keep" => o.keep = true,
            "--shell" => o.shell = true,
            "--no-build" => o.no_build = true,
            "--setup-only" => o.setup_only = true,
            "--self-test" => o.self_test = true,
            "-v" | "--verbose" => o.verbose = true,
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            s => bail!("unknown argument `{s}` (see --help)"),
        }
    }
    Ok(Some(o))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A new `<cache>/runs/run-<time>-<pid>/`.
fn new_run_dir(cfg: &setup::Config) -> Result<PathBuf> {
    new_run_dir_in(cfg, None)
}

/// [`new_run_dir`] under `runs` when `PCACHE_QEMU_RUNS` does not say where.
fn new_run_dir_in(cfg: &setup::Config, runs: Option<PathBuf>) -> Result<PathBuf> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // `PCACHE_QEMU_RUNS`: elsewhere, e.g. on tmpfs, so that the emulated pmem is
    // memory on the host too (docs/qemu.md).
    let runs = std::env::var_os("PCACHE_QEMU_RUNS")
        .map(PathBuf::from)
        .or(runs)
        .unwrap_or_else(|| cfg.cache.join("runs"));
    let run_dir = runs.join(format!("run-{stamp}-{}", std::process::id()));
    fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    Ok(run_dir)
}

/// Entry point of the task.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let Some(opts) = parse(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    util::start_clock();
    let repo = repo_root();
    let guest = repo.join("xtask/guest");
    let cases_dir = if opts.self_test {
        guest.join("selftest")
    } else {
        std::env::var_os("PCACHE_QEMU_CASES")
            .map(PathBuf::from)
            .unwrap_or_else(|| guest.join("cases"))
    };
    let all = cases::discover(&cases_dir)?;
    let selected: Vec<_> = all
        .iter()
        .filter(|c| {
            opts.filters.is_empty() || opts.filters.iter().any(|f| c.name.contains(f.as_str()))
        })
        .filter(|c| !opts.quick || c.dir.quick)
        .cloned()
        .collect();
    if selected.is_empty() && !opts.setup_only && !opts.shell {
        bail!(
            "no case matches (cases: {})",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let cfg = setup::Config::from_env(&repo)?;
    log(format!(
        "qemu-test: cache {}, kernel {}",
        cfg.cache.display(),
        cfg.kver()
    ));
    let t_setup = Instant::now();
    let qemu = setup::ensure(&cfg)?;
    let setup_time = t_setup.elapsed();

    let run_dir = new_run_dir(&cfg)?;
    let bin_dir = run_dir.join("bin");
    fs::create_dir_all(&bin_dir)?;
    let t_build = Instant::now();
    if !opts.no_build && !opts.setup_only {
        build::build_bins(
            &repo,
            &build::target_dir(&repo),
            &bin_dir,
            &run_dir.join("build.log"),
        )?;
    }
    let build_time = t_build.elapsed();
    let initrd = run_dir.join("initrd.cpio");
    build::payload(&cfg, &guest, &all, &bin_dir, &initrd)?;

    let kernel = cfg.vmlinuz();
    let tctx = vm::TemplateCtx {
        cache: &cfg.cache,
        kver: &cfg.kver(),
        qemu: &qemu,
        kernel: &kernel,
        initrd: &initrd,
    };
    let templates = std::cell::RefCell::new(BTreeMap::<u64, (PathBuf, PmemLayout)>::new());
    let get_template = |mb: u64| -> Result<(PathBuf, PmemLayout)> {
        if let Some(t) = templates.borrow().get(&mb) {
            return Ok(t.clone());
        }
        let t = vm::template(&tctx, mb)?;
        templates.borrow_mut().insert(mb, t.clone());
        Ok(t)
    };
    // Templates up front, so their (first-time) build counts as setup.
    let t_templates = Instant::now();
    let mut sizes: Vec<u64> = selected
        .iter()
        .filter(|c| {
            // --setup-only warms the cache for every case, built or not.
            c.dir.skip.is_none() && (opts.setup_only || cases::unmet_needs(c, &bin_dir).is_none())
        })
        .map(|c| c.dir.pmem_mb)
        .collect();
    if opts.setup_only || opts.shell {
        sizes.push(cases::Directives::default().pmem_mb);
    }
    sizes.sort_unstable();
    sizes.dedup();
    for mb in sizes {
        get_template(mb)?;
    }
    let setup_time = setup_time + t_templates.elapsed();
    if opts.setup_only {
        util::remove_any(&run_dir)?;
        log("qemu-test: setup done");
        return Ok(ExitCode::SUCCESS);
    }
    let env = cases::Env {
        repo: &repo,
        run_dir: &run_dir,
        bin_dir: &bin_dir,
        lib_sh: &guest.join("lib.sh"),
        qemu: &qemu,
        kernel: &kernel,
        initrd: &initrd,
        echo: opts.verbose,
        templates: &get_template,
        append: String::new(),
    };
    if opts.shell {
        // Without --filter: a default environment, not the first case's.
        return shell(&env, selected.first().filter(|_| !opts.filters.is_empty()));
    }

    let t_cases = Instant::now();
    let mut results = vec![];
    for case in &selected {
        let skip = case
            .dir
            .skip
            .clone()
            .or_else(|| cases::unmet_needs(case, &bin_dir));
        if let Some(reason) = skip {
            log(format!("SKIP {}: {reason} (not booted)", case.name));
            results.push((case.name.clone(), Verdict::Skip(reason), Duration::ZERO));
            continue;
        }
        log(format!(
            "case {} ({} boot(s)) ...",
            case.name,
            case.boots.len()
        ));
        let r = cases::run(&env, case)?;
        match &r.verdict {
            Verdict::Pass => {
                log(format!("PASS {} ({})", case.name, fmt_dur(r.wall)));
                if !opts.keep {
                    util::remove_any(&r.dir)?;
                }
            }
            Verdict::Skip(why) => {
                log(format!("SKIP {}: {why}", case.name));
                if !opts.keep {
                    util::remove_any(&r.dir)?;
                }
            }
            Verdict::Fail(why) => {
                log(format!("FAIL {}: {why}", case.name));
                if let Some(l) = &r.log {
                    // A guest that reported: its script's own lines matter, not
                    // the kernel's (which can flood the console). Otherwise
                    // (panic, hang) the raw console is what tells.
                    if r.guest_reported {
                        println!(
                            "---- last lines of {} (kernel messages left out) ----",
                            l.display()
                        );
                        println!("{}", util::tail_filtered(l, 40, util::is_kernel_line));
                    } else {
                        println!("---- last lines of {} ----", l.display());
                        println!("{}", util::tail(l, 40));
                    }
                    println!(
                        "---- (full log: {}; case files: {}) ----",
                        l.display(),
                        r.dir.display()
                    );
                }
            }
        }
        results.push((case.name.clone(), r.verdict, r.wall));
    }

    if opts.self_test {
        return self_test_summary(&results, &run_dir);
    }
    let failed = results
        .iter()
        .filter(|r| matches!(r.1, Verdict::Fail(_)))
        .count();
    let mut summary = format!(
        "\nqemu-test summary (setup {}, build {}, cases {}):\n",
        fmt_dur(setup_time),
        fmt_dur(build_time),
        fmt_dur(t_cases.elapsed())
    );
    for (name, v, wall) in &results {
        let line = match v {
            Verdict::Pass => format!("  PASS  {name:<28} {}\n", fmt_dur(*wall)),
            Verdict::Skip(why) => format!("  SKIP  {name:<28} {why}\n"),
            Verdict::Fail(why) => format!("  FAIL  {name:<28} {why}\n"),
        };
        summary.push_str(&line);
    }
    let (pass, skip) = (
        results.iter().filter(|r| r.1 == Verdict::Pass).count(),
        results
            .iter()
            .filter(|r| matches!(r.1, Verdict::Skip(_)))
            .count(),
    );
    summary.push_str(&format!(
        "  {pass} passed, {skip} skipped, {failed} failed\n"
    ));
    print!("{summary}");
    fs::write(run_dir.join("summary.txt"), &summary)?;
    if failed == 0 && !opts.keep {
        util::remove_any(&run_dir)?;
    } else {
        println!("run files kept in {}", run_dir.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--self-test`: each case must end as its `expect=` directive says.
fn self_test_summary(results: &[(String, Verdict, Duration)], run_dir: &Path) -> Result<ExitCode> {
    let dir = cases::discover(&repo_root().join("xtask/guest/selftest"))?;
    let mut bad = 0;
    println!("\nqemu-test self-test:");
    for (name, v, _) in results {
        let want = dir
            .iter()
            .find(|c| &c.name == name)
            .map_or("pass", |c| c.dir.expect);
        let ok = v.kind() == want;
        bad += usize::from(!ok);
        let why = match v {
            Verdict::Pass => String::new(),
            Verdict::Skip(w) | Verdict::Fail(w) => w.clone(),
        };
        println!(
            "  {}  {name:<28} expected {want}, got {}: {why}",
            if ok { "OK " } else { "BAD" },
            v.kind()
        );
    }
    println!("  {} as expected, {bad} not", results.len() - bad);
    if bad == 0 {
        util::remove_any(run_dir)?;
    } else {
        println!("run files kept in {}", run_dir.display());
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--shell`: one interactive boot with the environment of `case` (or the defaults).
fn shell(env: &cases::Env, case: Option<&cases::Case>) -> Result<ExitCode> {
    let default_case = cases::Case {
        name: "shell".into(),
        boots: vec![],
        hosts: BTreeMap::new(),
        helpers_dir: None,
        dir: cases::Directives::default(),
    };
    let case = case.unwrap_or(&default_case);
    let w = cases::workdir(env, case)?;
    log(format!(
        "shell: case {} ; files in {} (kept). In the guest: `xt_run [BOOT]` runs the case's script; \
         `exit` powers off; Ctrl-A X kills QEMU.",
        case.name,
        w.dir.display()
    ));
    let (outcome, wall) = vm::boot(&vm::Boot {
        qemu: env.qemu,
        kernel: env.kernel,
        initrd: env.initrd,
        pmem: &w.pmem,
        pmem_mb: case.dir.pmem_mb,
        backing: &w.backing,
        share: &w.out,
        mem_mb: case.dir.mem_mb,
        append: format!(
            "xt_case={} xt_boot=1 xt_nboots={} xt_shell=1",
            case.name,
            case.boots.len()
        ),
        timeout: Duration::MAX,
        log: &w.dir.join("serial-shell.log"),
        echo: true,
        interactive: true,
    })?;
    log(format!(
        "shell: {outcome} after {}; files in {}",
        fmt_dur(wall),
        w.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
