//! `cargo xtask install` and `cargo xtask deb`: the release binaries, man pages and shell
//! completions (generated from the clap definitions by the `tools-docgen` and `ublk-docgen` examples of
//! pcache-tools and pcache-ublk), the systemd unit and the docs, installed under a prefix
//! the way `make install` does (`--destdir` stages); `deb` packages exactly that tree for
//! `--prefix /usr` with `dpkg-deb`.
//!
//! The release build is the one `qemu-test` runs (same command, profile and target dir,
//! see [`crate::qemu::target_dir`]), so CI builds release once for both.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::qemu::{fmt_dur, have, output, run, target_dir, BINS};

const HELP: &str = "\
usage: cargo xtask install [--prefix P] [--destdir D] [--check]

Builds the release binaries (cargo build --release --workspace --bins) and installs
  P/bin/                              pcache-mkfs pcache-fsck pcache-dump pcache-replay pcache-shared
                                      pcache-ublk
  P/share/man/man8/                   a page per binary and per subcommand
  P/share/bash-completion/completions/, P/share/zsh/site-functions/,
  P/share/fish/vendor_completions.d/  completions
  P/lib/systemd/system/               pcache-ublk@.service (running P/bin/pcache-ublk)
  P/share/doc/pcache/                 README.md, LICENSE, docs/*.md

  --prefix P    where it goes (default /usr/local)
  --destdir D   stage under D (D/P/...), as DESTDIR in `make install`
  --check       then check the result: every file present and non-empty, each man page
                renders without a warning (man -l), the bash completions load, the
                binaries run and carry no debug info (readelf)";

const DEB_HELP: &str = "\
usage: cargo xtask deb

Builds target/debian/pcache_<version>_<arch>.deb: what `cargo xtask install --prefix /usr`
installs (staged with the same code), with Depends from dpkg-shlibdeps (libc6 when it is
not installed), built by `dpkg-deb --build --root-owner-group`.
Install it with `apt install ./target/debian/pcache_*.deb`.";

/// Where `deb` writes the package, relative to the repository (documented path).
const DEB_DIR: &str = "target/debian";

/// The options of `install`.
#[derive(Debug, PartialEq)]
struct Opts {
    prefix: PathBuf,
    destdir: Option<PathBuf>,
    check: bool,
}

/// Parses `install`'s arguments: `Ok(None)` for --help, `Err` for a usage error.
fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    let mut o = Opts {
        prefix: PathBuf::from("/usr/local"),
        destdir: None,
        check: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a directory"))
        };
        match flag {
            "--prefix" => o.prefix = PathBuf::from(value()?),
            "--destdir" => o.destdir = Some(PathBuf::from(value()?)),
            "--check" if inline.is_none() => o.check = true,
            "-h" | "--help" if inline.is_none() => return Ok(None),
            _ => return Err(format!("unknown argument `{a}`")),
        }
    }
    if !o.prefix.is_absolute() {
        return Err(format!(
            "--prefix must be an absolute path, not `{}`",
            o.prefix.display()
        ));
    }
    if o.prefix.components().any(|c| c == Component::ParentDir) {
        return Err("--prefix must not contain `..`".into());
    }
    // "/usr/" and "/usr" are the same prefix.
    o.prefix = o.prefix.components().collect();
    Ok(Some(o))
}

/// `$DESTDIR$PREFIX`: where the files are written.
fn root_of(o: &Opts) -> PathBuf {
    match &o.destdir {
        Some(d) => d.join(o.prefix.strip_prefix("/").unwrap_or(&o.prefix)),
        None => o.prefix.clone(),
    }
}

fn usage_error(msg: &str, help: &str) -> ExitCode {
    eprintln!("xtask: {msg}\n\n{help}");
    ExitCode::from(2)
}

fn repo() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the repository")?
        .to_path_buf())
}

/// Entry point of `cargo xtask install`.
pub fn main(args: &[String]) -> Result<ExitCode> {
    let o = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Ok(usage_error(&e, HELP)),
    };
    let repo = repo()?;
    let t = Instant::now();
    let built = build(&repo)?;
    let installed = install(&repo, &built, &o)?;
    report(&installed);
    if o.check {
        check(&installed, &o.prefix)?;
    }
    println!("install: done in {}", fmt_dur(t.elapsed()));
    Ok(ExitCode::SUCCESS)
}

/// What the build produced: the release binaries and the generated `share/` tree.
struct Built {
    release: PathBuf,
    share: PathBuf,
}

/// `cargo build --release --workspace --bins`, then both docgen examples into a fresh
/// `<target>/xtask-install/share`.
fn build(repo: &Path) -> Result<Built> {
    let target = target_dir(repo);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_cmd = || {
        let mut c = Command::new(&cargo);
        c.current_dir(repo)
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null());
        c
    };
    println!(
        "install: cargo build --release --workspace --bins (target dir {})",
        target.display()
    );
    run(cargo_cmd().args(["build", "--release", "--workspace", "--bins"]))?;
    let share = target.join("xtask-install/share");
    if share.exists() {
        fs::remove_dir_all(&share).with_context(|| format!("cannot clear {}", share.display()))?;
    }
    fs::create_dir_all(&share)?;
    for (pkg, example) in [
        ("pcache-tools", "tools-docgen"),
        ("pcache-ublk", "ublk-docgen"),
    ] {
        println!("install: man pages and completions of {pkg} (its {example} example)");
        run(cargo_cmd()
            .args([
                "run",
                "--quiet",
                "--release",
                "--example",
                example,
                "-p",
                pkg,
                "--",
            ])
            .arg(&share))?;
    }
    Ok(Built {
        release: target.join("release"),
        share,
    })
}

/// One file to install: where from, where to (relative to the prefix), its mode, and
/// new contents when it is not a plain copy.
struct Item {
    src: PathBuf,
    rel: PathBuf,
    mode: u32,
    contents: Option<String>,
}

/// Every file `install` writes, relative to the prefix.
fn plan(repo: &Path, built: &Built, prefix: &Path) -> Result<Vec<Item>> {
    let mut items = vec![];
    let file = |src: PathBuf, dir: &str, mode: u32| -> Result<Item> {
        let name = src
            .file_name()
            .with_context(|| format!("{} has no file name", src.display()))?;
        Ok(Item {
            rel: Path::new(dir).join(name),
            src,
            mode,
            contents: None,
        })
    };
    for b in BINS {
        items.push(file(built.release.join(b), "bin", 0o755)?);
    }
    for (gen, dest) in [
        ("man/man8", "share/man/man8"),
        (
            "bash-completion/completions",
            "share/bash-completion/completions",
        ),
        ("zsh/site-functions", "share/zsh/site-functions"),
        (
            "fish/vendor_completions.d",
            "share/fish/vendor_completions.d",
        ),
    ] {
        for src in sorted_files(&built.share.join(gen))? {
            items.push(file(src, dest, 0o644)?);
        }
    }
    let unit_src = repo.join("pcache-ublk/contrib/pcache-ublk@.service");
    let unit = fs::read_to_string(&unit_src)
        .with_context(|| format!("cannot read {}", unit_src.display()))?;
    items.push(Item {
        contents: Some(unit_for(&unit, prefix)?),
        ..file(unit_src, "lib/systemd/system", 0o644)?
    });
    let docs = [repo.join("README.md"), repo.join("LICENSE")]
        .into_iter()
        .chain(
            sorted_files(&repo.join("docs"))?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "md")),
        );
    for src in docs {
        items.push(file(src, "share/doc/pcache", 0o644)?);
    }
    Ok(items)
}

/// The unit with its paths moved from /usr to `prefix`: the binary and the docs.
fn unit_for(unit: &str, prefix: &Path) -> Result<String> {
    let p = prefix.display().to_string();
    let p = p.trim_end_matches('/');
    let out = unit
        .replace("/usr/bin/", &format!("{p}/bin/"))
        .replace("/usr/share/doc/pcache/", &format!("{p}/share/doc/pcache/"));
    ensure!(
        out.contains(&format!("{p}/bin/pcache-ublk ")),
        "pcache-ublk@.service no longer runs /usr/bin/pcache-ublk; update xtask/src/install.rs"
    );
    Ok(out)
}

/// The regular files in `dir`, sorted by name.
fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = vec![];
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Installs the [`plan`] under `$DESTDIR$PREFIX`; returns the files written, by
/// directory (absolute paths).
fn install(repo: &Path, built: &Built, o: &Opts) -> Result<BTreeMap<PathBuf, Vec<PathBuf>>> {
    use std::os::unix::fs::PermissionsExt;
    let root = root_of(o);
    let mut done: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for it in plan(repo, built, &o.prefix)? {
        let dest = root.join(&it.rel);
        let dir = dest.parent().context("an installed file has a directory")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Replace, never write through: a running binary stays intact ("text file busy").
        match fs::remove_file(&dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", dest.display()))
            }
            _ => {}
        }
        match &it.contents {
            Some(text) => fs::write(&dest, text).map(|_| ()),
            None => fs::copy(&it.src, &dest).map(|_| ()),
        }
        .with_context(|| format!("cannot install {} as {}", it.src.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(it.mode))?;
        done.entry(dir.to_path_buf()).or_default().push(dest);
    }
    Ok(done)
}

/// One line per directory: how many files and their names.
fn report(installed: &BTreeMap<PathBuf, Vec<PathBuf>>) {
    for (dir, files) in installed {
        let names: Vec<_> = files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|n| n.to_string_lossy())
            .collect();
        println!(
            "installed {:>2} in {}: {}",
            files.len(),
            dir.display(),
            names.join(" ")
        );
    }
}

/// `--check`: see [`HELP`].
fn check(installed: &BTreeMap<PathBuf, Vec<PathBuf>>, prefix: &Path) -> Result<()> {
    let all: Vec<&PathBuf> = installed.values().flatten().collect();
    let named = |name: &str| all.iter().copied().find(|p| p.ends_with(name));
    let bin = |b: &str| named(&format!("bin/{b}")).with_context(|| format!("{b} not installed"));
    // The pages the binaries call for: one per binary and per pcache-ublk subcommand.
    let ublk_help = output(Command::new(bin("pcache-ublk")?).arg("--help"))?;
    let mut expected = vec![];
    for b in BINS {
        expected.push(format!("bin/{b}"));
        expected.push(format!("man8/{b}.8"));
        expected.push(format!("completions/{b}"));
        expected.push(format!("site-functions/_{b}"));
        expected.push(format!("vendor_completions.d/{b}.fish"));
    }
    for sub in subcommands(&ublk_help) {
        expected.push(format!("man8/pcache-ublk-{sub}.8"));
    }
    for f in [
        "system/pcache-ublk@.service",
        "README.md",
        "LICENSE",
        "operations.md",
    ] {
        expected.push(f.into());
    }
    for e in &expected {
        ensure!(named(e).is_some(), "expected file not installed: .../{e}");
    }
    for f in &all {
        let len = fs::metadata(f)?.len();
        ensure!(len > 0, "{} is empty", f.display());
    }
    // Man pages render without a warning.
    ensure!(
        have("man"),
        "`man` is not installed (apt-get install man-db)"
    );
    let pages: Vec<_> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "8"))
        .collect();
    ensure!(!pages.is_empty(), "no man page (section 8) was installed");
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_DISABLE_SECCOMP", "1")
            .stdout(Stdio::null())
            .output()
            .context("cannot run man")?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && err.trim().is_empty(),
            "man -l {} ({}): {err}",
            page.display(),
            out.status
        );
    }
    // Binaries run, report the workspace version and carry no debug info.
    ensure!(
        have("readelf"),
        "`readelf` is not installed (apt-get install binutils)"
    );
    for b in BINS {
        let path = bin(b)?;
        let v = output(Command::new(path).arg("--version"))?;
        ensure!(
            v.starts_with(&format!("{b} ")),
            "`{b} --version` printed {v:?}"
        );
        let sections = output(Command::new("readelf").args(["-S", "-W"]).arg(path))?;
        ensure!(
            !sections.contains(".debug_info"),
            "{} has debug info ([profile.release] in Cargo.toml)",
            path.display()
        );
    }
    // Completions load: bash always; zsh and fish when installed.
    for f in all
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("completions")))
    {
        let b = f.file_name().unwrap_or_default().to_string_lossy();
        let script = format!("source '{}' && complete -p {b} >/dev/null", f.display());
        run(Command::new("bash").args(["-c", &script]))?;
    }
    for (shell, dir, flag) in [
        ("zsh", "site-functions", "-n"),
        ("fish", "vendor_completions.d", "--no-execute"),
    ] {
        if !have(shell) {
            continue;
        }
        for f in all
            .iter()
            .filter(|p| p.parent().is_some_and(|d| d.ends_with(dir)))
        {
            run(Command::new(shell).arg(flag).arg(f))?;
        }
    }
    let unit = named("system/pcache-ublk@.service").context("unit not installed")?;
    let text = fs::read_to_string(unit)?;
    let exec = format!("ExecStart={}/bin/pcache-ublk ", prefix.display());
    let exec = exec.replace("//", "/");
    ensure!(text.contains(&exec), "{}: no `{exec}`", unit.display());
    println!(
        "check: {} files present and non-empty; {} man pages render; {} binaries run, no \
         .debug_info; completions load; the unit runs {}",
        all.len(),
        pages.len(),
        BINS.len(),
        exec.trim_start_matches("ExecStart=").trim_end()
    );
    Ok(())
}

/// The subcommands listed in clap's `--help` (`Commands:` up to the next blank line),
/// without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .map(str::to_owned)
        .collect()
}

/// Entry point of `cargo xtask deb`.
pub fn deb_main(args: &[String]) -> Result<ExitCode> {
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") if args.len() == 1 => {
            println!("{DEB_HELP}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(_) => {
            return Ok(usage_error(
                &format!("unknown argument `{}`", args[0]),
                DEB_HELP,
            ))
        }
    }
    let t = Instant::now();
    for tool in ["dpkg-deb", "dpkg"] {
        ensure!(
            have(tool),
            "`{tool}` is not installed (a Debian system is needed)"
        );
    }
    let repo = repo()?;
    let version = version(&repo)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let out_dir = repo.join(DEB_DIR);
    let name = format!("pcache_{version}_{arch}");
    let stage = out_dir.join(format!("{name}.stage"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let o = Opts {
        prefix: PathBuf::from("/usr"),
        destdir: Some(stage.clone()),
        check: false,
    };
    let built = build(&repo)?;
    let installed = install(&repo, &built, &o)?;
    let files: Vec<&PathBuf> = installed.values().flatten().collect();
    let bins: Vec<&PathBuf> = files
        .iter()
        .copied()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("usr/bin")))
        .collect();
    let depends = depends(&out_dir, &bins)?;
    let kib: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len().div_ceil(1024)))
        .sum::<std::io::Result<u64>>()?;
    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    fs::write(
        control_dir.join("control"),
        control(&version, &arch, &depends, kib),
    )?;
    for script in ["postinst", "postrm"] {
        use std::os::unix::fs::PermissionsExt;
        let p = control_dir.join(script);
        fs::write(&p, DAEMON_RELOAD)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
    }
    let deb = out_dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb)
        .stdout(Stdio::null()))?;
    fs::remove_dir_all(&stage)?;
    println!(
        "deb: {} ({} KiB; {} files; Depends: {depends}) in {}",
        deb.strip_prefix(&repo).unwrap_or(&deb).display(),
        fs::metadata(&deb)?.len().div_ceil(1024),
        files.len(),
        fmt_dur(t.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

/// postinst and postrm: systemd picks up (or forgets) the unit.
const DAEMON_RELOAD: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
";

/// The workspace version (pcache-ublk's, as `cargo metadata` reports it).
fn version(repo: &Path) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let meta = output(Command::new(cargo).current_dir(repo).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("cargo metadata")?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "pcache-ublk")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("cargo metadata lists no pcache-ublk version")
}

/// `Depends:` from dpkg-shlibdeps (which wants a `debian/control`, hence the scratch
/// directory), or `libc6` without it.
fn depends(scratch: &Path, bins: &[&PathBuf]) -> Result<String> {
    if !have("dpkg-shlibdeps") {
        println!("deb: dpkg-shlibdeps not found (dpkg-dev); Depends: libc6");
        return Ok("libc6".into());
    }
    let dir = scratch.join("shlibdeps");
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        "Source: pcache\n\nPackage: pcache\nArchitecture: any\n",
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&dir).arg("-O");
    for b in bins {
        cmd.arg(format!("-e{}", b.display()));
    }
    // Its warning that the binaries are not under debian/pcache/ is noise here.
    let out = cmd.output();
    fs::remove_dir_all(&dir)?;
    let out = out.context("cannot run dpkg-shlibdeps")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "deb: dpkg-shlibdeps failed ({}): {err}Depends: libc6",
            out.status
        );
    }
    let deps = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("libc6");
    Ok(deps.to_owned())
}

/// DEBIAN/control.
fn control(version: &str, arch: &str, depends: &str, kib: u64) -> String {
    format!(
        "Package: pcache
Version: {version}
Architecture: {arch}
Maintainer: pcache developers <pcache@example.invalid>
Installed-Size: {kib}
Depends: {depends}
Section: admin
Priority: optional
Homepage: https://example.invalid/pcache
Description: persistent-memory write-back cache for block devices (dm-pcache in userspace)
 pcache serves a slow backing device behind a fast persistent-memory cache (pmem,
 device DAX, CXL memory) as a ublk block device, /dev/ublkbN. The on-media format is
 that of Linux's dm-pcache, so a cache moves between the kernel target and pcache.
 .
 This package holds the daemon pcache-ublk (with a systemd unit template,
 pcache-ublk@.service) and the tools pcache-mkfs, pcache-fsck, pcache-dump,
 pcache-replay and pcache-shared, with their man pages and bash, zsh and fish completions.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags() {
        let o = parse(&args("--prefix /usr/ --destdir=/tmp/x --check"))
            .unwrap()
            .unwrap();
        assert_eq!(o.prefix, Path::new("/usr"));
        assert_eq!(root_of(&o), Path::new("/tmp/x/usr"));
        assert!(o.check);
        let d = parse(&[]).unwrap().unwrap();
        assert_eq!(root_of(&d), Path::new("/usr/local"));
        assert!(parse(&args("--help")).unwrap().is_none());
        for bad in [
            "--prefix",
            "--prefix usr",
            "--prefix /a/../b",
            "--destdir=",
            "--frob",
            "x",
            "--check=1",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_paths_follow_the_prefix() {
        let unit = "Documentation=file:///usr/share/doc/pcache/operations.md\n\
                    ExecStart=/usr/bin/pcache-ublk add --id %i\n";
        let u = unit_for(unit, Path::new("/opt/p")).unwrap();
        assert!(u.contains("ExecStart=/opt/p/bin/pcache-ublk add"), "{u}");
        assert!(
            u.contains("file:///opt/p/share/doc/pcache/operations.md"),
            "{u}"
        );
        assert_eq!(unit_for(unit, Path::new("/usr")).unwrap(), unit);
        assert!(unit_for("ExecStart=/sbin/other\n", Path::new("/usr")).is_err());
    }

    #[test]
    fn subcommands_from_help() {
        let help = "Serves...\n\nUsage: pcache-ublk <COMMAND>\n\nCommands:\n  add      Start\n  \
                    del      Stop\n  help     Print this message\n\nOptions:\n  -h, --help\n";
        assert_eq!(subcommands(help), ["add", "del"]);
    }
}
