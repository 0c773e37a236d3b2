//! Test cases: discovery under `xtask/guest/cases/`, `# xtask:` directives,
//! and running one case (its boots and host hooks) against fresh images.
//!
//! A case is either a file `NN-name.sh` (one boot) or a directory `NN-name/`
//! holding `boot1.sh`, `boot2.sh`, ... (one VM boot each, in order) and
//! optional host hooks: `host0.sh` runs before boot 1, `hostN.sh` right after
//! boot N, `host.sh` after the last boot. See docs/qemu.md.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::util::{self, fmt_dur, log, RC_POWERCUT, RC_SKIP};
use super::vm::{self, Outcome, PmemLayout};

/// Per-case settings, from `# xtask: key=value ...` lines in its scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Part of the `--quick` (CI) set.
    pub quick: bool,
    /// Not run at all; reported as SKIP with this reason.
    pub skip: Option<String>,
    /// Per-boot timeout.
    pub timeout: Duration,
    /// Size of the NVDIMM backing file (/dev/pmem0 is 2 MiB smaller).
    pub pmem_mb: u64,
    pub backing_mb: u64,
    pub mem_mb: u64,
    /// Programs (with subcommands) the case needs: `needs=PROG[:SUB,SUB...]`.
    /// Checked on the host before booting; unmet means SKIP without a boot.
    pub needs: Vec<(String, Vec<String>)>,
    /// For the harness's own self-test cases: the verdict expected
    /// (`expect=pass|fail|skip`; default pass).
    pub expect: &'static str,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            quick: false,
            skip: None,
            timeout: Duration::from_secs(300),
            pmem_mb: 1024,
            backing_mb: 2048,
            mem_mb: 2048,
            needs: vec![],
            expect: "pass",
        }
    }
}

impl Directives {
    fn parse_into(&mut self, text: &str, origin: &Path) -> Result<()> {
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("# xtask:") else {
                continue;
            };
            let rest = rest.trim();
            if let Some(reason) = rest.strip_prefix("skip=") {
                self.skip = Some(reason.trim().to_owned());
                continue;
            }
            for word in rest.split_whitespace() {
                let (k, v) = word.split_once('=').unwrap_or((word, ""));
                let num = || -> Result<u64> {
                    v.parse().with_context(|| {
                        format!("{}: `{word}`: expected a number", origin.display())
                    })
                };
                match k {
                    "quick" => self.quick = true,
                    "timeout" => self.timeout = Duration::from_secs(num()?),
                    "pmem_mb" => self.pmem_mb = num()?,
                    "backing_mb" => self.backing_mb = num()?,
                    "mem_mb" => self.mem_mb = num()?,
                    "expect" => {
                        self.expect = match v {
                            "pass" => "pass",
                            "fail" => "fail",
                            "skip" => "skip",
                            _ => bail!(
                                "{}: `{word}`: expected expect=pass|fail|skip",
                                origin.display()
                            ),
                        }
                    }
                    "needs" => {
                        let (prog, subs) = v.split_once(':').unwrap_or((v, ""));
                        ensure!(
                            !prog.is_empty(),
                            "{}: `{word}`: expected needs=PROG[:SUB,...]",
                            origin.display()
                        );
                        let subs = subs
                            .split(',')
                            .filter(|x| !x.is_empty())
                            .map(str::to_owned)
                            .collect();
                        self.needs.push((prog.to_owned(), subs));
                    }
                    _ => bail!("{}: unknown directive `{word}`", origin.display()),
                }
            }
        }
        ensure!(
            self.pmem_mb >= 514 && self.pmem_mb.is_multiple_of(2),
            "{}: pmem_mb must be even and >= 514 (/dev/pmem0 = pmem_mb - 2 MiB >= 512 MiB)",
            origin.display()
        );
        Ok(())
    }
}

/// One discovered case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Guest scripts, boot 1 first.
    pub boots: Vec<PathBuf>,
    /// Host hooks by the boot they follow (0 = before boot 1).
    pub hosts: BTreeMap<usize, PathBuf>,
    /// A directory case's directory: its other files are shipped as helpers.
    pub helpers_dir: Option<PathBuf>,
    pub dir: Directives,
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() > 3
        && b[0].is_ascii_digit()
        && b[1].is_ascii_digit()
        && b[2] == b'-'
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Finds all cases under `root` (sorted by name).
pub fn discover(root: &Path) -> Result<Vec<Case>> {
    let mut cases = vec![];
    for e in fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let p = e?.path();
        let fname = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            ensure!(
                valid_name(&fname),
                "bad case name {} (want NN-lowercase-name)",
                p.display()
            );
            cases.push(dir_case(&p, fname)?);
        } else if let Some(name) = fname.strip_suffix(".sh") {
            ensure!(
                valid_name(name),
                "bad case name {} (want NN-lowercase-name.sh)",
                p.display()
            );
            let mut dir = Directives::default();
            dir.parse_into(&fs::read_to_string(&p)?, &p)?;
            cases.push(Case {
                name: name.to_owned(),
                boots: vec![p],
                hosts: BTreeMap::new(),
                helpers_dir: None,
                dir,
            });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

fn dir_case(d: &Path, name: String) -> Result<Case> {
    let mut boots = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    let mut last_host = None;
    let mut dir = Directives::default();
    let mut files: Vec<PathBuf> = fs::read_dir(d)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for p in files {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = f.strip_suffix(".sh") else {
            continue;
        };
        if let Some(n) = stem.strip_prefix("boot") {
            boots.insert(
                n.parse::<usize>()
                    .with_context(|| format!("bad boot script {}", p.display()))?,
                p.clone(),
            );
        } else if stem == "host" {
            last_host = Some(p.clone());
        } else if let Some(n) = stem.strip_prefix("host") {
            hosts.insert(
                n.parse::<usize>()
                    .with_context(|| format!("bad host hook {}", p.display()))?,
                p.clone(),
            );
        } else {
            continue; // helpers the scripts may source
        }
        dir.parse_into(&fs::read_to_string(&p)?, &p)?;
    }
    ensure!(!boots.is_empty(), "case {}: no boot1.sh", d.display());
    ensure!(
        boots.keys().copied().eq(1..=boots.len()),
        "case {}: boot scripts must be boot1.sh..bootN.sh without gaps",
        d.display()
    );
    if let Some(h) = last_host {
        ensure!(
            hosts.insert(boots.len(), h).is_none(),
            "case {}: both host.sh and host{}.sh",
            d.display(),
            boots.len()
        );
    }
    ensure!(
        hosts.keys().all(|k| *k <= boots.len()),
        "case {}: a hostN.sh has no boot N",
        d.display()
    );
    Ok(Case {
        name,
        boots: boots.into_values().collect(),
        hosts,
        helpers_dir: Some(d.to_path_buf()),
        dir,
    })
}

/// Why the case cannot run with the binaries in `bin_dir` (its `needs=`
/// directives), or `None`. A program counts only if `PROG --help` exits 0 and
/// prints a usage text (so stubs do not), and lists every needed subcommand
/// at the start of a line, as clap does.
pub fn unmet_needs(case: &Case, bin_dir: &Path) -> Option<String> {
    for (prog, subs) in &case.dir.needs {
        let exe = bin_dir.join(prog);
        if !exe.is_file() {
            return Some(format!("needs {prog} (not built)"));
        }
        let help = match Command::new(&exe)
            .arg("--help")
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                t.push_str(&String::from_utf8_lossy(&o.stderr));
                t
            }
            _ => {
                return Some(format!(
                    "needs {prog} (`{prog} --help` fails: not implemented yet?)"
                ))
            }
        };
        if !help.contains("sage") {
            return Some(format!(
                "needs {prog} (`{prog} --help` prints no usage: a stub?)"
            ));
        }
        for sub in subs {
            let listed = help.lines().any(|l| {
                l.starts_with([' ', '\t']) && l.split_whitespace().next() == Some(sub.as_str())
            });
            if !listed {
                return Some(format!("needs `{prog} {sub}` (not in `{prog} --help`)"));
            }
        }
    }
    None
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Skip(String),
    Fail(String),
}

impl Verdict {
    /// `pass`, `skip` or `fail` (as in the `expect=` directive).
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Skip(_) => "skip",
            Verdict::Fail(_) => "fail",
        }
    }
}

/// What running cases needs from the harness.
pub struct Env<'a> {
    pub repo: &'a Path,
    pub run_dir: &'a Path,
    /// Freshly built host binaries (target/release copies), or empty.
    pub bin_dir: &'a Path,
    pub lib_sh: &'a Path,
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub echo: bool,
    pub templates: &'a dyn Fn(u64) -> Result<(PathBuf, PmemLayout)>,
    /// Extra kernel command-line words for every boot (`key=value` reach the
    /// guest scripts as variables).
    pub append: String,
}

/// The result of one case, with where its files are.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub wall: Duration,
    pub dir: PathBuf,
    /// The log to show on failure.
    pub log: Option<PathBuf>,
    /// The guest reported its own result (so the kernel's messages in the
    /// serial log can be left out of what is shown on failure).
    pub guest_reported: bool,
}

/// A case's working directory with fresh images.
#[derive(Debug)]
pub struct Workdir {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub pmem: PathBuf,
    pub backing: PathBuf,
    pub layout: PmemLayout,
}

/// Creates `<run>/<case>/` with a copy of the fsdax template and a sparse backing file.
pub fn workdir(env: &Env, case: &Case) -> Result<Workdir> {
    let (template, layout) = (env.templates)(case.dir.pmem_mb)?;
    let dir = env.run_dir.join(&case.name);
    util::remove_any(&dir)?;
    fs::create_dir_all(dir.join("out"))?;
    let pmem = dir.join("pmem.img");
    util::run(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&template)
            .arg(&pmem),
    )?;
    let backing = dir.join("backing.img");
    util::sparse_file(&backing, case.dir.backing_mb << 20)?;
    Ok(Workdir {
        out: dir.join("out"),
        dir,
        pmem,
        backing,
        layout,
    })
}

/// Runs all steps of one case.
pub fn run(env: &Env, case: &Case) -> Result<Report> {
    let t = Instant::now();
    let w = workdir(env, case)?;
    let mut report = Report {
        verdict: Verdict::Pass,
        wall: Duration::ZERO,
        dir: w.dir.clone(),
        log: None,
        guest_reported: true,
    };
    let nboots = case.boots.len();
    for boot in 0..=nboots {
        if boot > 0 {
            let logp = w.dir.join(format!("serial-boot{boot}.log"));
            report.log = Some(logp.clone());
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
                    "xt_case={} xt_boot={boot} xt_nboots={nboots} {}",
                    case.name, env.append
                ),
                timeout: case.dir.timeout,
                log: &logp,
                echo: env.echo,
                interactive: false,
            })?;
            log(format!(
                "  {} boot {boot}/{nboots}: {outcome} ({})",
                case.name,
                fmt_dur(wall)
            ));
            report.guest_reported = matches!(outcome, Outcome::Guest(_));
            match outcome {
                Outcome::Guest(0) => {}
                Outcome::Guest(RC_POWERCUT) if boot < nboots || case.hosts.contains_key(&boot) => {}
                Outcome::Guest(RC_SKIP) => {
                    report.verdict = Verdict::Skip(skip_reason(&logp));
                    break;
                }
                Outcome::Guest(RC_POWERCUT) => {
                    report.verdict = Verdict::Fail(format!(
                        "boot {boot}: power cut (rc {RC_POWERCUT}) with no later boot or host hook to check the aftermath"
                    ));
                    break;
                }
                o => {
                    report.verdict = Verdict::Fail(format!("boot {boot}: {o}"));
                    break;
                }
            }
        }
        if let Some(hook) = case.hosts.get(&boot) {
            let logp = w.dir.join(format!("host{boot}.log"));
            report.log = Some(logp.clone());
            report.guest_reported = true;
            let rc = host_hook(env, case, &w, hook, boot, &logp)?;
            log(format!(
                "  {} {}: rc {rc}",
                case.name,
                hook.file_name().unwrap().to_string_lossy()
            ));
            match rc {
                0 => {}
                RC_SKIP => {
                    report.verdict = Verdict::Skip(skip_reason(&logp));
                    break;
                }
                rc => {
                    report.verdict =
                        Verdict::Fail(format!("host hook {} exited {rc}", hook.display()));
                    break;
                }
            }
        }
    }
    report.wall = t.elapsed();
    Ok(report)
}

/// The text after the last `SKIP:` in a log.
fn skip_reason(log: &Path) -> String {
    let text = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    text.lines()
        .rev()
        .find_map(|l| l.split_once("SKIP:").map(|(_, r)| r.trim().to_owned()))
        .unwrap_or_else(|| "no reason given".into())
}

/// Runs a host hook with `sh`; /dev/pmem0's region is extracted to
/// `pmem0.img` first and written back afterwards if the hook changed it.
fn host_hook(
    env: &Env,
    case: &Case,
    w: &Workdir,
    hook: &Path,
    boot: usize,
    logp: &Path,
) -> Result<i32> {
    let pmem0 = w.dir.join("pmem0.img");
    util::remove_any(&pmem0)?;
    util::copy_range(&w.pmem, w.layout.offset, &pmem0, 0, w.layout.bytes)?;
    let before = fs::metadata(&pmem0)?.modified()?;
    let path = format!(
        "{}:{}",
        env.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let logf = fs::File::create(logp)?;
    let st = Command::new("sh")
        .args(["-c", ". \"$XT_LIB\" && . \"$1\"", "sh"])
        .arg(hook)
        .current_dir(&w.dir)
        .env("PATH", path)
        .env("XT_LIB", env.lib_sh)
        .env("XT_SIDE", "host")
        .env("CASE", &case.name)
        .env("CASE_DIR", &w.dir)
        .env("BOOT", boot.to_string())
        .env("NBOOTS", case.boots.len().to_string())
        .env("OUT", &w.out)
        .env("PMEM_IMG", &w.pmem)
        .env("PMEM0_IMG", &pmem0)
        .env("PMEM0_OFFSET", w.layout.offset.to_string())
        .env("PMEM0_BYTES", w.layout.bytes.to_string())
        .env("BACKING_IMG", &w.backing)
        .env("XT_BIN", env.bin_dir)
        .env("REPO", env.repo)
        .stdin(std::process::Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .status()
        .with_context(|| format!("cannot run {}", hook.display()))?;
    if fs::metadata(&pmem0)?.modified()? != before {
        log(format!(
            "  {}: pmem0.img changed: writing it back into pmem.img",
            case.name
        ));
        ensure!(
            fs::metadata(&pmem0)?.len() == w.layout.bytes,
            "host hook changed the size of pmem0.img"
        );
        util::copy_range(&pmem0, 0, &w.pmem, w.layout.offset, w.layout.bytes)?;
    }
    Ok(st.code().unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse() {
        let mut d = Directives::default();
        d.parse_into(
            "#!/bin/sh\n# xtask: quick timeout=60 pmem_mb=514\n",
            Path::new("x"),
        )
        .unwrap();
        assert!(d.quick && d.skip.is_none());
        assert_eq!((d.timeout.as_secs(), d.pmem_mb), (60, 514));
        d.parse_into(
            "# xtask: skip=needs pcache-ublk (not written yet)\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            d.skip.as_deref(),
            Some("needs pcache-ublk (not written yet)")
        );
        assert!(d.parse_into("# xtask: bogus\n", Path::new("x")).is_err());
        d.parse_into(
            "# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            d.needs,
            [
                ("pcache-mkfs".to_owned(), vec![]),
                (
                    "pcache-ublk".to_owned(),
                    vec!["add".to_owned(), "del".to_owned()]
                )
            ]
        );
        assert!(d.parse_into("# xtask: needs=\n", Path::new("x")).is_err());
        assert!(d
            .parse_into("# xtask: pmem_mb=256\n", Path::new("x"))
            .is_err());
        assert!(valid_name("00-kernel-smoke") && !valid_name("kernel") && !valid_name("0a-x"));
    }
}
