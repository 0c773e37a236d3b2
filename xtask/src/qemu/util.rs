//! Helpers shared by the qemu-test modules: progress log, running commands,
//! stamp files, small file utilities.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Starts the clock used by [`log`]; call once early.
pub fn start_clock() {
    t0();
}

/// Prints a progress line prefixed with the time since start.
pub fn log(msg: impl AsRef<str>) {
    println!("[{:7.1}s] {}", t0().elapsed().as_secs_f64(), msg.as_ref());
}

/// `1.2s` / `3m04s`.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// The command line of `cmd`, for error messages.
pub fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", cmd_line(cmd)))?;
    if !st.success() {
        bail!("`{}` failed ({st})", cmd_line(cmd));
    }
    Ok(())
}

/// Runs `cmd`, returns its stdout; stderr is inherited. Fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{}`", cmd_line(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", cmd_line(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with all output captured to `log_path`; on failure the error
/// includes the last lines of that log.
pub fn run_logged(cmd: &mut Command, log_path: &Path) -> Result<()> {
    let f = fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let st = cmd
        .stdout(f.try_clone()?)
        .stderr(f)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run `{}`", cmd_line(cmd)))?;
    if !st.success() {
        bail!(
            "`{}` failed ({st}); last lines of {}:\n{}",
            cmd_line(cmd),
            log_path.display(),
            tail(log_path, 25)
        );
    }
    Ok(())
}

/// Today's date (UTC, `YYYY-MM-DD`), or `?`.
pub fn today() -> String {
    Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Is a command on PATH?
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Are we root (effective uid 0)?
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The last `n` lines of a text file (lossy), or a note that it is unreadable.
pub fn tail(path: &Path, n: usize) -> String {
    tail_filtered(path, n, |_| false)
}

/// A console line as a terminal would leave it: what follows its last `\r`
/// (progress meters rewrite their line), cut to its last 300 characters.
fn display_line(l: &str) -> String {
    let l = l.trim_end_matches('\r');
    let l = l.rsplit('\r').next().unwrap_or(l);
    let chars: Vec<char> = l.chars().collect();
    if chars.len() > 300 {
        format!("…{}", chars[chars.len() - 300..].iter().collect::<String>())
    } else {
        l.to_owned()
    }
}

/// The last `n` lines of a text file for which `skip` is false (as a
/// terminal would show them, see [`display_line`]).
pub fn tail_filtered(path: &Path, n: usize, skip: fn(&str) -> bool) -> String {
    match fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<String> = s.lines().map(display_line).filter(|l| !skip(l)).collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A kernel console line: `[   12.345678] ...`.
pub fn is_kernel_line(l: &str) -> bool {
    let l = l.trim_start_matches('\r');
    l.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .is_some_and(|(ts, _)| {
            let ts = ts.trim();
            !ts.is_empty() && ts.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        })
}

/// A stamp file records the inputs a cached artefact was built from. The
/// artefact is reused only if the stamp exists and its content equals `want`.
#[derive(Debug)]
pub struct Stamp {
    path: PathBuf,
    want: String,
}

impl Stamp {
    pub fn new(path: impl Into<PathBuf>, want: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            want: want.into(),
        }
    }
    pub fn fresh(&self) -> bool {
        fs::read_to_string(&self.path).is_ok_and(|s| s == self.want)
    }
    /// Removes the stamp: call before rebuilding, so that an interrupted
    /// rebuild is never taken for a finished one.
    pub fn clear(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
    pub fn write(&self) -> Result<()> {
        fs::write(&self.path, &self.want)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Removes a file or directory tree if it exists.
pub fn remove_any(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    r.with_context(|| format!("cannot remove {}", path.display()))
}

/// Creates (or truncates) a sparse file of `bytes` bytes.
pub fn sparse_file(path: &Path, bytes: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.set_len(bytes)?;
    Ok(())
}

/// Reads `len` bytes at `off` of a file.
pub fn read_at(path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0; len];
    f.read_exact(&mut buf)
        .with_context(|| format!("short read at {off} in {}", path.display()))?;
    Ok(buf)
}

const CHUNK: usize = 1 << 20;

/// Copies `len` bytes from `src` at `src_off` into `dst` at `dst_off`,
/// writing only the 1 MiB chunks that differ from what `dst` already holds
/// (so a sparse `dst` stays sparse where the data is zero). `dst` is
/// extended to at least `dst_off + len`.
pub fn copy_range(src: &Path, src_off: u64, dst: &Path, dst_off: u64, len: u64) -> Result<()> {
    let mut s = fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut d = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)
        .with_context(|| format!("cannot open {}", dst.display()))?;
    if d.metadata()?.len() < dst_off + len {
        d.set_len(dst_off + len)?;
    }
    s.seek(SeekFrom::Start(src_off))?;
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut done = 0u64;
    while done < len {
        let n = CHUNK.min((len - done) as usize);
        s.read_exact(&mut a[..n])
            .with_context(|| format!("short read in {}", src.display()))?;
        d.seek(SeekFrom::Start(dst_off + done))?;
        d.read_exact(&mut b[..n])?;
        if a[..n] != b[..n] {
            d.seek(SeekFrom::Start(dst_off + done))?;
            d.write_all(&a[..n])?;
        }
        done += n as u64;
    }
    Ok(())
}

/// Guest rc values with a meaning of their own (see docs/qemu.md).
pub const RC_SKIP: i32 = 77;
pub const RC_POWERCUT: i32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines() {
        assert!(is_kernel_line(
            "[   20.429664] dm-pcache: writeback error: -5"
        ));
        assert!(is_kernel_line("\r[    1.0] x"));
        assert!(!is_kernel_line("XT: ready"));
        assert!(!is_kernel_line("[qd1] fio"));
        assert!(!is_kernel_line("[] x"));
        assert_eq!(display_line("Jobs: 1\rJobs: 2\rXT: done\r"), "XT: done");
        assert_eq!(display_line(&"x".repeat(500)).chars().count(), 301);
    }
}
