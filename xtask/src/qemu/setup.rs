//! One-time, cached setup: host packages (qemu, debootstrap), a Debian trixie
//! chroot, the Debian kernel, an out-of-tree `dm-pcache.ko`, and the base
//! busybox initramfs (`base.cpio`). Each piece is rebuilt only when the inputs
//! recorded in its stamp file change. The facts behind every step are in
//! `/work/shared/docs/qemu-recipe.md` (and docs/qemu.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use super::initramfs;
use super::util::{self, fmt_dur, log, output, run, run_logged, Stamp};

/// Bump when a step changes in a way its other inputs do not show.
const SETUP_VERSION: &str = "1";

/// Default Debian kernel ABI (trixie-backports). It needs dm-pcache sources (>= 6.18).
const DEFAULT_KV: &str = "7.3.4+deb13";
const FLAVOUR: &str = "amd64";
const SUITE: &str = "trixie";

/// Installed in the chroot: module build environment and donor of guest userspace.
const CHROOT_PKGS: &[&str] = &[
    "binutils",
    "make",
    "kmod",
    "xz-utils",
    "zstd",
    "busybox-static",
    "fio",
    "dmsetup",
    "ndctl",
    "daxctl",
    "util-linux",
    "strace",
    "e2fsprogs",
    "xfsprogs",
];

const DM_PCACHE_MAKEFILE: &str = "obj-m := dm-pcache.o
dm-pcache-y := dm_pcache.o cache_dev.o segment.o backing_dev.o cache.o cache_gc.o \
cache_writeback.o cache_segment.o cache_key.o cache_req.o
";

/// Where everything lives, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub cache: PathBuf,
    /// Debian kernel ABI without flavour, e.g. `7.3.4+deb13`.
    pub kv: String,
    pub mirror: String,
}

impl Config {
    pub fn from_env(repo: &Path) -> Result<Self> {
        let cache = std::env::var_os("PCACHE_QEMU_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".qemu-cache"));
        let kv = std::env::var("PCACHE_QEMU_KV").unwrap_or_else(|_| DEFAULT_KV.into());
        let mirror = match std::env::var("PCACHE_QEMU_MIRROR") {
            Ok(m) => m,
            Err(_) => host_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        };
        fs::create_dir_all(&cache)
            .with_context(|| format!("cannot create cache dir {}", cache.display()))?;
        let cache = cache.canonicalize()?;
        Ok(Self { cache, kv, mirror })
    }
    /// Full kernel release, e.g. `7.3.4+deb13-amd64`.
    pub fn kver(&self) -> String {
        format!("{}-{FLAVOUR}", self.kv)
    }
    pub(super) fn root(&self) -> PathBuf {
        self.cache.join(SUITE)
    }
    pub(super) fn kernel_dir(&self) -> PathBuf {
        self.cache.join(format!("kernel-{}", self.kver()))
    }
    pub(super) fn module_ko(&self) -> PathBuf {
        self.cache.join(format!("dm-pcache-{}.ko", self.kver()))
    }
    pub fn base_cpio(&self) -> PathBuf {
        self.cache.join("base.cpio")
    }
    pub fn vmlinuz(&self) -> PathBuf {
        self.kernel_dir().join("vmlinuz")
    }
    /// Library directory of the chroot (for payload binaries' extra libraries).
    pub fn chroot_libdir(&self) -> PathBuf {
        self.root().join("usr/lib/x86_64-linux-gnu")
    }
    /// The file listing every path in base.cpio (one per line, no leading `/`).
    pub fn base_manifest(&self) -> PathBuf {
        self.cache.join("base.files")
    }
}

/// The first `URIs:` of the host's deb822 sources, or the first `deb` line.
fn host_mirror() -> Option<String> {
    let s = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    if let Some(u) = s.lines().find_map(|l| l.strip_prefix("URIs:")) {
        return u.split_whitespace().next().map(str::to_owned);
    }
    let s = fs::read_to_string("/etc/apt/sources.list").ok()?;
    s.lines()
        .find(|l| l.starts_with("deb "))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http")))
        .map(str::to_owned)
}

/// A command run inside the chroot with a clean environment.
pub(super) fn inchroot(cfg: &Config) -> Command {
    let mut c = Command::new("chroot");
    c.arg(cfg.root()).args([
        "/usr/bin/env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LC_ALL=C",
        "DEBIAN_FRONTEND=noninteractive",
    ]);
    for v in ["http_proxy", "https_proxy", "no_proxy"] {
        if let Ok(val) = std::env::var(v) {
            c.arg(format!("{v}={val}"));
        }
    }
    c
}

pub(super) fn need_root(what: &str) -> Result<()> {
    if !util::is_root() {
        bail!("{what} needs root (debootstrap/chroot/apt-get); run once as root, later runs reuse the cache");
    }
    Ok(())
}

/// Runs a setup step unless its stamp is fresh; logs what happens and how long it took.
fn step(name: &str, stamp: &Stamp, build: impl FnOnce() -> Result<()>) -> Result<()> {
    if stamp.fresh() {
        log(format!("setup: {name}: cached"));
        return Ok(());
    }
    log(format!("setup: {name}: building ..."));
    let t = Instant::now();
    stamp.clear()?;
    build().with_context(|| format!("setup step `{name}` failed"))?;
    stamp.write()?;
    log(format!("setup: {name}: done in {}", fmt_dur(t.elapsed())));
    Ok(())
}

/// Makes sure every cached piece exists; returns the qemu binary to use.
pub fn ensure(cfg: &Config) -> Result<PathBuf> {
    let t = Instant::now();
    let lock = fs::File::create(cfg.cache.join(".setup.lock"))?;
    lock.lock().context("cannot lock the cache dir")?;
    let qemu = host_packages(cfg)?;
    let want = |parts: &[&str]| format!("v{SETUP_VERSION}\n{}\n", parts.join("\n"));

    let root = cfg.root();
    let s = Stamp::new(
        cfg.cache.join(format!("{SUITE}.stamp")),
        want(&[SUITE, "minbase", &cfg.mirror]),
    );
    step(&format!("debootstrap {SUITE}"), &s, || {
        need_root("debootstrap")?;
        util::remove_any(&root)?;
        run_logged(
            Command::new("debootstrap")
                .args(["--variant=minbase", SUITE])
                .arg(&root)
                .arg(&cfg.mirror),
            &cfg.cache.join("debootstrap.log"),
        )
    })?;

    let kver = cfg.kver();
    let src_pkg = format!("linux-source-{}", major_minor(&cfg.kv));
    let pkgs = CHROOT_PKGS.join(" ");
    let s = Stamp::new(
        cfg.cache.join(format!("{SUITE}-pkgs.stamp")),
        want(&[&kver, &src_pkg, &pkgs, &cfg.mirror]),
    );
    step("chroot packages", &s, || chroot_packages(cfg, &src_pkg))?;

    let s = Stamp::new(suffixed(&cfg.kernel_dir(), ".stamp"), want(&[&kver]));
    step(&format!("kernel {kver}"), &s, || kernel(cfg))?;

    let s = Stamp::new(
        suffixed(&cfg.module_ko(), ".stamp"),
        want(&[&kver, DM_PCACHE_MAKEFILE]),
    );
    step("dm-pcache.ko (out of tree)", &s, || module(cfg))?;

    let s = Stamp::new(
        suffixed(&cfg.base_cpio(), ".stamp"),
        want(&[
            &kver,
            &pkgs,
            &initramfs::GUEST_TOOLS.join(" "),
            &initramfs::GUEST_LIBS.join(" "),
            &initramfs::GUEST_MODULES.join(" "),
        ]),
    );
    step("base initramfs", &s, || initramfs::build(cfg))?;
    log(format!("setup: ready in {}", fmt_dur(t.elapsed())));
    Ok(qemu)
}

/// `path` with `suffix` appended to its last component (`with_extension` would
/// cut at the dots of a kernel version).
pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Resolves `path` (absolute, as seen inside the chroot `root`) to a host path
/// of a non-symlink, following symlinks *inside* the chroot: an absolute link
/// target must not escape to the host's files.
fn resolve_in(root: &Path, path: &str) -> Result<PathBuf> {
    let mut cur = PathBuf::from("/");
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => cur.push(&c),
        }
        let host = root.join(cur.strip_prefix("/").unwrap());
        if let Ok(t) = fs::read_link(&host) {
            hops += 1;
            ensure!(hops < 40, "symlink loop at {path} in {}", root.display());
            cur.pop();
            let t = t.to_string_lossy().into_owned();
            if t.starts_with('/') {
                cur = PathBuf::from("/");
            }
            todo.extend(t.split('/').rev().map(str::to_owned));
        }
    }
    Ok(root.join(cur.strip_prefix("/").unwrap()))
}

/// Copies the chroot file `path` (symlinks resolved inside the chroot) to `dst`.
pub(super) fn copy_from_chroot(root: &Path, path: &str, dst: &Path) -> Result<()> {
    let src = resolve_in(root, path)?;
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(&src, dst).with_context(|| format!("cannot copy {path} out of the chroot"))?;
    Ok(())
}

fn major_minor(kv: &str) -> String {
    kv.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Installs qemu-system-x86 (bookworm-backports' if the host is bookworm),
/// debootstrap; returns the qemu binary.
fn host_packages(cfg: &Config) -> Result<PathBuf> {
    let qemu = std::env::var("PCACHE_QEMU_BIN").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let mut need = vec![];
    if !util::have(&qemu) {
        need.push("qemu-system-x86");
    }
    if !util::have("debootstrap") {
        need.push("debootstrap");
    }
    if !need.is_empty() {
        need_root("installing host packages")?;
        let t = Instant::now();
        log(format!(
            "setup: host packages: installing {} ...",
            need.join(" ")
        ));
        let codename = fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_owned))
            .unwrap_or_default();
        let bpo =
            codename == "bookworm" && std::env::var("PCACHE_QEMU_BACKPORTS").as_deref() != Ok("0");
        let mut done = false;
        if bpo && need.contains(&"qemu-system-x86") {
            match install_from_backports(cfg, &codename, &need) {
                Ok(()) => done = true,
                Err(e) => log(format!(
                    "setup: backports install failed ({e:#}); using {codename}'s qemu"
                )),
            }
        }
        if !done {
            let mut c = Command::new("apt-get");
            c.args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&need);
            run_logged(
                c.env("DEBIAN_FRONTEND", "noninteractive"),
                &cfg.cache.join("host-apt.log"),
            )?;
        }
        log(format!(
            "setup: host packages: done in {}",
            fmt_dur(t.elapsed())
        ));
    }
    let v = output(Command::new(&qemu).arg("--version"))?;
    log(format!("setup: host: {}", v.lines().next().unwrap_or("?")));
    Ok(PathBuf::from(qemu))
}

/// `apt-get install -t <codename>-backports` through a private sources dir
/// (the host's sources plus backports), so the host's apt configuration is
/// not changed.
fn install_from_backports(cfg: &Config, codename: &str, pkgs: &[&str]) -> Result<()> {
    let parts = cfg.cache.join("apt-sources.d");
    util::remove_any(&parts)?;
    fs::create_dir_all(&parts)?;
    for e in fs::read_dir("/etc/apt/sources.list.d")? {
        let p = e?.path();
        let keep = p.extension().is_some_and(|x| x == "list" || x == "sources");
        if keep {
            fs::copy(&p, parts.join(p.file_name().unwrap()))?;
        }
    }
    fs::write(
        parts.join("xtask-backports.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: {codename}-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            cfg.mirror
        ),
    )?;
    let opt = format!("Dir::Etc::SourceParts={}", parts.display());
    let logf = |n: &str| cfg.cache.join(format!("host-apt-{n}.log"));
    run_logged(
        Command::new("apt-get").args(["-q", "-o", &opt, "update"]),
        &logf("update"),
    )?;
    let mut c = Command::new("apt-get");
    c.args([
        "-q",
        "-o",
        &opt,
        "install",
        "-y",
        "--no-install-recommends",
        "-t",
    ])
    .arg(format!("{codename}-backports"))
    .args(pkgs);
    run_logged(c.env("DEBIAN_FRONTEND", "noninteractive"), &logf("install"))
}

fn chroot_packages(cfg: &Config, src_pkg: &str) -> Result<()> {
    need_root("the chroot")?;
    let r = cfg.root();
    let _ = fs::remove_file(r.join("etc/apt/sources.list"));
    fs::write(
        r.join("etc/apt/sources.list.d/debian.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: {SUITE} {SUITE}-updates {SUITE}-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            cfg.mirror
        ),
    )?;
    let logf = cfg.cache.join("chroot-apt.log");
    run_logged(inchroot(cfg).args(["apt-get", "-q", "update"]), &logf)?;
    // Headers + sources for the out-of-tree dm-pcache build (pulls gcc, kbuild, pahole).
    run_logged(
        inchroot(cfg)
            .args([
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-t",
            ])
            .arg(format!("{SUITE}-backports"))
            .arg(format!("linux-headers-{}", cfg.kver()))
            .arg(src_pkg),
        &cfg.cache.join("chroot-apt-kernel.log"),
    )?;
    run_logged(
        inchroot(cfg)
            .args(["apt-get", "install", "-y", "-q", "--no-install-recommends"])
            .args(CHROOT_PKGS),
        &cfg.cache.join("chroot-apt-tools.log"),
    )?;
    run(inchroot(cfg).args(["apt-get", "clean"]))
}

/// Downloads the kernel packages in the chroot and unpacks them into kernel-<kver>/.
fn kernel(cfg: &Config) -> Result<()> {
    need_root("the chroot")?;
    let kver = cfg.kver();
    let dir = cfg.kernel_dir();
    util::remove_any(&dir)?;
    let dl = cfg.root().join("tmp/kdebs");
    util::remove_any(&dl)?;
    fs::create_dir_all(&dl)?;
    // Let apt's sandbox user write there (else apt warns and downloads as root).
    fs::set_permissions(&dl, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    // New packaging: linux-image-X is a meta package over linux-{binary,modules,base}-X.
    let deps = output(
        inchroot(cfg)
            .args(["apt-cache", "depends"])
            .arg(format!("linux-image-{kver}")),
    )?;
    let mut pkgs: Vec<String> = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| {
            ["linux-binary-", "linux-modules-", "linux-base-"]
                .iter()
                .any(|x| p.starts_with(x))
        })
        .map(str::to_owned)
        .collect();
    pkgs.sort();
    pkgs.dedup();
    if pkgs.is_empty() {
        pkgs.push(format!("linux-image-{kver}")); // old packaging: one package
    }
    run_logged(
        inchroot(cfg)
            .args([
                "sh",
                "-c",
                "cd /tmp/kdebs && apt-get download -q \"$@\"",
                "sh",
            ])
            .args(&pkgs),
        &cfg.cache.join("kernel-download.log"),
    )?;
    let tmp = suffixed(&dir, ".tmp");
    util::remove_any(&tmp)?;
    fs::create_dir_all(&tmp)?;
    for e in fs::read_dir(&dl)? {
        run(Command::new("dpkg").arg("-x").arg(e?.path()).arg(&tmp))?;
    }
    util::remove_any(&dl)?;
    let moddir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| tmp.join(d).join(&kver))
        .find(|p| p.is_dir())
        .context("no modules directory in the kernel packages")?;
    let vmlinuz = [
        moddir.join("vmlinuz"),
        tmp.join(format!("boot/vmlinuz-{kver}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .context("no vmlinuz in the kernel packages")?;
    let config = [
        moddir.join("config"),
        tmp.join(format!("boot/config-{kver}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .context("no kernel config in the kernel packages")?;
    fs::rename(&tmp, &dir)?;
    let rel = |p: &Path| p.strip_prefix(&tmp).unwrap().to_path_buf();
    std::os::unix::fs::symlink(rel(&vmlinuz), dir.join("vmlinuz"))?;
    std::os::unix::fs::symlink(rel(&moddir), dir.join("moddir"))?;
    std::os::unix::fs::symlink(rel(&config), dir.join("config"))?;
    let cfgtxt = fs::read_to_string(dir.join("config"))?;
    for key in [
        "DM_PCACHE",
        "BLK_DEV_UBLK",
        "BLK_DEV_PMEM",
        "ACPI_NFIT",
        "FS_DAX",
        "DM_WRITECACHE",
    ] {
        let v = cfgtxt
            .lines()
            .find(|l| {
                l.starts_with(&format!("CONFIG_{key}=")) || l.contains(&format!(" CONFIG_{key} "))
            })
            .unwrap_or("(absent)");
        log(format!("setup:   kernel config: {v}"));
    }
    Ok(())
}

fn kernel_has_dm_pcache(cfg: &Config) -> bool {
    fs::read_to_string(cfg.kernel_dir().join("config")).is_ok_and(|c| {
        c.lines()
            .any(|l| l == "CONFIG_DM_PCACHE=m" || l == "CONFIG_DM_PCACHE=y")
    })
}

/// Unmounts the chroot's /proc when dropped.
struct ProcMount(PathBuf);
impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Builds dm-pcache.ko out of tree against the Debian headers (Debian does not ship it).
fn module(cfg: &Config) -> Result<()> {
    let ko = cfg.module_ko();
    util::remove_any(&ko)?;
    if kernel_has_dm_pcache(cfg) {
        log("setup:   the kernel ships dm-pcache: nothing to build");
        return Ok(());
    }
    need_root("the chroot")?;
    let r = cfg.root();
    let src = format!("/usr/src/linux-source-{}.tar.xz", major_minor(&cfg.kv));
    ensure!(r.join(&src[1..]).is_file(), "{src} missing in the chroot");
    let build = r.join("build");
    util::remove_any(&build)?;
    fs::create_dir_all(&build)?;
    run(inchroot(cfg)
        .args([
            "tar",
            "-xJf",
            &src,
            "-C",
            "/build",
            "--strip-components=1",
            "--wildcards",
        ])
        .args(["*/drivers/md/dm-pcache/*", "*/drivers/md/*.h"]))?;
    // dm-pcache includes "../dm-core.h": keep drivers/md/*.h one level above the module.
    fs::rename(build.join("drivers/md"), build.join("md"))?;
    fs::write(build.join("md/dm-pcache/Makefile"), DM_PCACHE_MAKEFILE)?;
    let proc_dir = r.join("proc");
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(&proc_dir))?; // objtool reads /proc
    let guard = ProcMount(proc_dir);
    run_logged(
        inchroot(cfg)
            .args(["make", "-C"])
            .arg(format!("/usr/src/linux-headers-{}", cfg.kver()))
            .args(["M=/build/md/dm-pcache", "-j2", "modules"]),
        &cfg.cache.join("dm-pcache-build.log"),
    )?;
    drop(guard);
    run(inchroot(cfg).args(["strip", "--strip-debug", "/build/md/dm-pcache/dm-pcache.ko"]))?;
    fs::copy(build.join("md/dm-pcache/dm-pcache.ko"), &ko)?;
    let info = output(inchroot(cfg).args(["modinfo", "/build/md/dm-pcache/dm-pcache.ko"]))?;
    for l in info
        .lines()
        .filter(|l| l.starts_with("vermagic") || l.starts_with("depends"))
    {
        log(format!("setup:   dm-pcache.ko {l}"));
    }
    util::remove_any(&build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_the_chroot() {
        let d = std::env::temp_dir().join(format!("xtask-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("usr/lib/x")).unwrap();
        fs::write(d.join("usr/lib/x/libz.so.1.3"), "z").unwrap();
        std::os::unix::fs::symlink("usr/lib", d.join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/x/libz.so.1.3", d.join("usr/lib/x/libz.so.1"))
            .unwrap();
        let p = resolve_in(&d, "/lib/x/libz.so.1").unwrap();
        assert_eq!(p, d.join("usr/lib/x/libz.so.1.3"));
        fs::remove_dir_all(&d).unwrap();
        assert_eq!(major_minor("7.3.4+deb13"), "7.3");
    }
}
