//! The base initramfs (`base.cpio`): busybox, guest tools with their
//! libraries, and the kernel modules the tests need (plus the out-of-tree
//! dm-pcache.ko), all taken from the trixie chroot. `/init` and the test
//! scripts are not in it: each run appends them in its payload.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::cpio;
use super::setup::{copy_from_chroot, inchroot, need_root, suffixed, Config};
use super::util::{self, log, output, run};

/// Dynamically linked programs copied (with their libraries) into the initramfs.
pub const GUEST_TOOLS: &[&str] = &[
    "/usr/bin/fio",
    "/usr/sbin/dmsetup",
    "/usr/bin/ndctl",
    "/usr/bin/daxctl",
    "/usr/sbin/blockdev",
    "/usr/sbin/blkdiscard",
    "/usr/bin/strace",
    "/usr/sbin/mke2fs",
    "/usr/sbin/e2fsck",
    "/usr/sbin/mkfs.xfs",
    "/usr/sbin/xfs_repair",
];

/// Libraries always copied: Rust binaries built on the host need them.
pub const GUEST_LIBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
];

/// Kernel modules (plus their dependencies) in the initramfs.
pub const GUEST_MODULES: &[&str] = &[
    "ublk_drv",
    "dm_mod",
    "dm_pcache",
    "dm_writecache",
    "dm_flakey",
    "dm_delay",
    "nd_pmem",
    "nd_e820",
    "nd_btt",
    "nfit",
    "dax_pmem",
    "device_dax",
    "virtio_blk",
    "virtio_pmem",
    "null_blk",
    "loop",
    "9pnet_virtio",
    "9p",
    "ext4",
    "xfs",
];

/// `ldd` output -> library paths (inside the chroot).
fn parse_ldd(s: &str) -> Vec<String> {
    let mut v = vec![];
    for l in s.lines().map(str::trim) {
        if let Some((_, rest)) = l.split_once("=> ") {
            if let Some(p) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                v.push(p.to_owned());
            }
        } else if l.starts_with('/') && l.contains("ld-linux") {
            v.push(l.split_whitespace().next().unwrap().to_owned());
        }
    }
    v
}

/// `/lib/x` -> `usr/lib/x` (the initramfs is merged-usr).
fn usr_path(p: &str) -> String {
    let p = p.trim_start_matches('/');
    if p.starts_with("usr/") {
        p.to_owned()
    } else {
        format!("usr/{p}")
    }
}

/// Builds base.cpio: busybox, tools + libraries, modules (+ dm-pcache.ko).
/// /init and the test scripts are not in it: they come with each run's payload.
pub fn build(cfg: &Config) -> Result<()> {
    need_root("the chroot")?;
    let r = cfg.root();
    let kver = cfg.kver();
    let o = r.join("tmp/initramfs");
    util::remove_any(&o)?;
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "usr/local/bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "mnt",
        "etc",
        "root",
        "var",
    ] {
        fs::create_dir_all(o.join(d))?;
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(t, o.join(l))?;
    }
    fs::write(o.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(o.join("etc/group"), "root:x:0:\n")?;
    // Tools first, so busybox applets do not shadow them.
    for t in GUEST_TOOLS {
        copy_from_chroot(&r, t, &o.join(usr_path(t)))?;
    }
    let mut libs = parse_ldd(&output(inchroot(cfg).arg("ldd").args(GUEST_TOOLS))?);
    libs.extend(GUEST_LIBS.iter().map(|s| s.to_string()));
    libs.sort();
    libs.dedup();
    for l in &libs {
        copy_from_chroot(&r, l, &o.join(usr_path(l)))?;
    }
    copy_from_chroot(&r, "/usr/bin/busybox", &o.join("usr/bin/busybox"))?;
    for a in output(inchroot(cfg).args(["busybox", "--list"]))?.split_whitespace() {
        let (p, t) = (o.join("usr/bin").join(a), "busybox");
        if !p.exists() && !o.join("usr/sbin").join(a).exists() {
            std::os::unix::fs::symlink(t, p)?;
        }
    }
    // The kernel's request_module() runs /sbin/modprobe (dm target autoload).
    if !o.join("usr/sbin/modprobe").exists() {
        std::os::unix::fs::symlink("../bin/busybox", o.join("usr/sbin/modprobe"))?;
    }
    modules(cfg, &o, &kver)?;

    let tmp = suffixed(&cfg.base_cpio(), ".tmp");
    let mut w = cpio::Writer::new(std::io::BufWriter::new(fs::File::create(&tmp)?));
    w.tree(&o)?;
    w.finish()?;
    fs::rename(&tmp, cfg.base_cpio())?;
    let manifest = output(Command::new("find").arg(".").current_dir(&o))?;
    let manifest: String = manifest
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("./")))
        .collect();
    fs::write(cfg.base_manifest(), manifest)?;
    let mb = fs::metadata(cfg.base_cpio())?.len() as f64 / 1048576.0;
    log(format!("setup:   base.cpio: {mb:.1} MiB"));
    util::remove_any(&o)
}

/// Copies GUEST_MODULES and their dependencies (decompressed) into `o`, runs depmod.
fn modules(cfg: &Config, o: &Path, kver: &str) -> Result<()> {
    let r = cfg.root();
    // Stage the whole tree (+ dm-pcache.ko in updates/) so modprobe can resolve dependencies.
    let stage = r.join("tmp/kmods");
    util::remove_any(&stage)?;
    fs::create_dir_all(stage.join("lib/modules"))?;
    let moddir = cfg.kernel_dir().join("moddir").canonicalize()?;
    let smod = stage.join("lib/modules").join(kver);
    run(Command::new("cp").arg("-al").arg(&moddir).arg(&smod))?;
    let _ = fs::remove_file(smod.join("vmlinuz")); // not a module; saves nothing to copy
    if cfg.module_ko().is_file() {
        fs::create_dir_all(smod.join("updates"))?;
        fs::copy(cfg.module_ko(), smod.join("updates/dm-pcache.ko"))?;
    }
    run(inchroot(cfg).args(["depmod", "-b", "/tmp/kmods", kver]))?;
    // -C /dev/null: ndctl's modprobe.d `install libnvdimm` hook would hide libnvdimm.
    let mut files = vec![];
    for m in GUEST_MODULES {
        let deps = output(
            inchroot(cfg)
                .args([
                    "modprobe",
                    "-C",
                    "/dev/null",
                    "-d",
                    "/tmp/kmods",
                    "-S",
                    kver,
                    "--show-depends",
                ])
                .arg(m),
        )
        .with_context(|| format!("module {m}"))?;
        files.extend(
            deps.lines()
                .filter_map(|l| l.strip_prefix("insmod "))
                .map(|l| l.trim().to_owned()),
        );
    }
    files.sort();
    files.dedup();
    let prefix = format!("/tmp/kmods/lib/modules/{kver}/");
    let odir = o.join("usr/lib/modules").join(kver);
    for f in &files {
        let rel = f
            .strip_prefix(&prefix)
            .with_context(|| format!("unexpected module path {f}"))?;
        let (rel_ko, tool) = if let Some(x) = rel.strip_suffix(".xz") {
            (x, Some("xz"))
        } else if let Some(x) = rel.strip_suffix(".zst") {
            (x, Some("zstd"))
        } else {
            (rel, None)
        };
        let dst = odir.join(rel_ko);
        fs::create_dir_all(dst.parent().unwrap())?;
        match tool {
            None => {
                fs::copy(r.join(&f[1..]), &dst)?;
            }
            Some(t) => {
                let out = inchroot(cfg).args([t, "-dc", f]).output()?;
                ensure!(out.status.success(), "{t} -dc {f} failed");
                fs::write(&dst, out.stdout)?;
            }
        }
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if smod.join(f).is_file() {
            fs::copy(smod.join(f), odir.join(f))?;
        }
    }
    util::remove_any(&stage)?;
    let orel = o.strip_prefix(&r)?;
    run(inchroot(cfg)
        .args(["depmod", "-b"])
        .arg(Path::new("/").join(orel))
        .arg(kver))?;
    log(format!(
        "setup:   {} module files in the initramfs",
        files.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_become_paths() {
        let s = "/usr/bin/fio:\n\tlinux-vdso.so.1 (0x1)\n\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(s),
            [
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(
            usr_path("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
    }
}
