//! Booting one test VM (QEMU TCG, NFIT nvdimm backed by a host file, a virtio
//! backing disk, results over 9p) and decoding how it ended; the cached fsdax
//! pmem templates; the pfn info block that locates /dev/pmem0 in the file.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::util::{self, fmt_dur, log, Stamp};

/// Everything one boot needs.
#[derive(Debug)]
pub struct Boot<'a> {
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub pmem: &'a Path,
    pub pmem_mb: u64,
    pub backing: &'a Path,
    /// Host directory shared over 9p (mounted at /mnt/host in the guest).
    pub share: &'a Path,
    pub mem_mb: u64,
    /// Extra kernel command-line words (`key=value` become init's environment).
    pub append: String,
    pub timeout: Duration,
    /// Serial console log; QEMU's own stderr goes to `<log>.stderr`.
    pub log: &'a Path,
    /// Copy the serial console to our stdout as it arrives.
    pub echo: bool,
    /// Interactive: serial console on our terminal (`mon:stdio`), no timeout.
    pub interactive: bool,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest reported this rc through isa-debug-exit.
    Guest(i32),
    /// QEMU exited 0 (or was killed by a signal): the guest powered off or
    /// panicked without reporting.
    NoReport(String),
    /// QEMU exited with an even status (its own error) or 1 with no guest marker.
    QemuError(String),
    /// Killed by the harness after the timeout.
    Timeout(Duration),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Guest(rc) => write!(f, "guest rc {rc}"),
            Outcome::NoReport(s) => {
                write!(f, "guest never reported a result ({s}; panic or poweroff?)")
            }
            Outcome::QemuError(s) => write!(f, "QEMU error ({s})"),
            Outcome::Timeout(d) => write!(f, "timeout after {}: QEMU killed", fmt_dur(*d)),
        }
    }
}

/// Turns QEMU's exit status into an [`Outcome`]. With isa-debug-exit, the
/// status is `(guest_rc << 1) | 1`; a guest rc of 0 gives 1, which QEMU also
/// uses for its own errors, so rc 0 also needs the `XTASK_RC=0` serial marker.
pub fn decode(status: ExitStatus, marker: Option<i32>) -> Outcome {
    let Some(code) = status.code() else {
        return Outcome::NoReport(format!("QEMU {status}"));
    };
    match code {
        0 => Outcome::NoReport("QEMU exit 0".into()),
        1 if marker != Some(0) => {
            Outcome::QemuError("exit 1 without the guest's XTASK_RC=0 marker".into())
        }
        c if c & 1 == 1 => Outcome::Guest(c >> 1),
        c => Outcome::QemuError(format!("exit {c}")),
    }
}

/// Parses `XTASK_RC=<n>` on a serial console line.
fn marker(line: &str) -> Option<i32> {
    let i = line.find("XTASK_RC=")?;
    let rest = &line[i + 9..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Boots once; returns the outcome and the wall time.
pub fn boot(b: &Boot) -> Result<(Outcome, Duration)> {
    let mut cmd = Command::new(b.qemu);
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", if b.interactive { "mon:stdio" } else { "stdio" }])
        .args(["-machine", "pc,nvdimm=on"])
        .arg("-m")
        .arg(format!(
            "{}M,slots=2,maxmem={}M",
            b.mem_mb,
            b.mem_mb + b.pmem_mb + 1024
        ))
        .arg("-object")
        .arg(format!(
            "memory-backend-file,id=mem1,share=on,mem-path={},size={}M",
            b.pmem.display(),
            b.pmem_mb
        ))
        .args(["-device", "nvdimm,id=nv1,memdev=mem1"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,cache=none",
            b.backing.display()
        ))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=host0,security_model=none,id=host0",
            b.share.display()
        ))
        .arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet xt_share=host0 {}",
            b.append
        ));
    let t = Instant::now();
    if b.interactive {
        let st = cmd
            .status()
            .with_context(|| format!("cannot run {}", b.qemu.display()))?;
        return Ok((decode(st, Some(0)), t.elapsed()));
    }
    let stderr_path = PathBuf::from(format!("{}.stderr", b.log.display()));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path)?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", b.qemu.display()))?;
    let stdout = child.stdout.take().unwrap();
    let mut logf =
        fs::File::create(b.log).with_context(|| format!("cannot create {}", b.log.display()))?;
    let echo = b.echo;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut last = None;
        while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = logf.write_all(&line);
            if echo {
                let _ = std::io::stdout().write_all(&line);
            }
            if let Some(m) = marker(&String::from_utf8_lossy(&line)) {
                last = Some(m);
            }
            line.clear();
        }
        let _ = tx.send(last);
    });
    let deadline = t + b.timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let marker = rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
    let _ = reader.join();
    let outcome = match status {
        None => Outcome::Timeout(b.timeout),
        Some(st) => decode(st, marker),
    };
    let err = fs::read_to_string(&stderr_path).unwrap_or_default();
    if err.trim().is_empty() {
        let _ = fs::remove_file(&stderr_path);
    } else if matches!(outcome, Outcome::QemuError(_)) {
        eprintln!(
            "QEMU stderr ({}):\n{}",
            stderr_path.display(),
            util::tail(&stderr_path, 20)
        );
    }
    Ok((outcome, t.elapsed()))
}

/// Where /dev/pmem0 lives inside the NVDIMM's backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmemLayout {
    /// File offset of pmem0's byte 0 (`start_pad + dataoff`, 2 MiB here).
    pub offset: u64,
    /// Size of /dev/pmem0 in bytes.
    pub bytes: u64,
}

/// Reads the fsdax pfn info block (`struct nd_pfn_sb`, at namespace offset
/// 4096) of an NVDIMM backing file: signature, dataoff, start_pad, end_trunc.
pub fn pmem_layout(file: &Path) -> Result<PmemLayout> {
    let sb = util::read_at(file, 4096, 96)?;
    ensure!(
        &sb[..16] == b"NVDIMM_PFN_INFO\0",
        "{}: no NVDIMM_PFN_INFO block at 4096 (not an fsdax namespace?)",
        file.display()
    );
    let le64 = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().unwrap());
    let le32 = |o: usize| u64::from(u32::from_le_bytes(sb[o..o + 4].try_into().unwrap()));
    let (dataoff, start_pad, end_trunc) = (le64(56), le32(76), le32(80));
    let size = fs::metadata(file)?.len();
    ensure!(
        start_pad + dataoff + end_trunc < size,
        "{}: bad pfn info block",
        file.display()
    );
    Ok(PmemLayout {
        offset: start_pad + dataoff,
        bytes: size - start_pad - dataoff - end_trunc,
    })
}

/// What a template needs to be built.
#[derive(Debug)]
pub struct TemplateCtx<'a> {
    pub cache: &'a Path,
    pub kver: &'a str,
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
}

/// Returns the cached pmem image of `mb` MiB already converted to fsdax, building
/// it if needed: a label-less NVDIMM comes up in raw mode (no DAX), and the one-time
/// `ndctl create-namespace -m fsdax` writes a pfn info block into the image.
pub fn template(ctx: &TemplateCtx, mb: u64) -> Result<(PathBuf, PmemLayout)> {
    let path = ctx.cache.join(format!("pmem-{mb}M.fsdax.img"));
    let stamp = Stamp::new(
        ctx.cache.join(format!("pmem-{mb}M.fsdax.stamp")),
        format!("v2\n{}\n{mb}\n", ctx.kver),
    );
    if stamp.fresh() {
        return Ok((path.clone(), pmem_layout(&path)?));
    }
    // Another run may be building the same template: take the setup lock,
    // then look again.
    let lock = fs::File::create(ctx.cache.join(".setup.lock"))?;
    lock.lock().context("cannot lock the cache dir")?;
    if stamp.fresh() {
        return Ok((path.clone(), pmem_layout(&path)?));
    }
    log(format!(
        "setup: pmem template {mb} MiB (ndctl create-namespace -m fsdax) ..."
    ));
    let t = Instant::now();
    stamp.clear()?;
    let dir = ctx.cache.join(format!("pmem-{mb}M.work"));
    util::remove_any(&dir)?;
    fs::create_dir_all(dir.join("out"))?;
    let tmp = dir.join("pmem.img");
    util::sparse_file(&tmp, mb << 20)?;
    util::sparse_file(&dir.join("backing.img"), 64 << 20)?;
    let logp = dir.join("serial.log");
    let (outcome, _) = boot(&Boot {
        qemu: ctx.qemu,
        kernel: ctx.kernel,
        initrd: ctx.initrd,
        pmem: &tmp,
        pmem_mb: mb,
        backing: &dir.join("backing.img"),
        share: &dir.join("out"),
        mem_mb: 1024,
        append: "xt_mode=template".into(),
        timeout: Duration::from_secs(240),
        log: &logp,
        echo: false,
        interactive: false,
    })?;
    if outcome != Outcome::Guest(0) {
        bail!(
            "pmem template boot failed: {outcome}; serial log {}:\n{}",
            logp.display(),
            util::tail(&logp, 30)
        );
    }
    let layout = pmem_layout(&tmp)?;
    let guest: u64 = fs::read_to_string(dir.join("out/pmem0.bytes"))
        .context("the template boot did not write pmem0.bytes")?
        .trim()
        .parse()?;
    ensure!(
        guest == layout.bytes,
        "pmem0 is {guest} bytes in the guest but the pfn info block says {}",
        layout.bytes
    );
    fs::rename(&tmp, &path)?;
    util::remove_any(&dir)?;
    stamp.write()?;
    log(format!(
        "setup: pmem template {mb} MiB: /dev/pmem0 = {} MiB at file offset {} KiB; done in {}",
        layout.bytes >> 20,
        layout.offset >> 10,
        fmt_dur(t.elapsed())
    ));
    Ok((path, layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_status_protocol() {
        let st = |c: i32| ExitStatus::from_raw(c << 8);
        assert_eq!(decode(st(1), Some(0)), Outcome::Guest(0));
        assert!(matches!(decode(st(1), None), Outcome::QemuError(_)));
        assert_eq!(decode(st(7), None), Outcome::Guest(3));
        assert_eq!(decode(st(155), None), Outcome::Guest(77));
        assert!(matches!(decode(st(0), Some(0)), Outcome::NoReport(_)));
        assert!(matches!(decode(st(2), None), Outcome::QemuError(_)));
        assert!(matches!(
            decode(ExitStatus::from_raw(9), None),
            Outcome::NoReport(_)
        ));
        assert_eq!(marker("XTASK_RC=77\r"), Some(77));
        assert_eq!(marker("foo"), None);
    }
}
