//! Support for `limits.rs`: an allocator that counts the peak, the binaries run under a
//! heap limit, and a digest of sparse files.

use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The system allocator, counting the bytes allocated now and their peak.
struct Peak;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grown(n: usize) {
    let now = NOW.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` as it came; only counters are added.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grown(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grown(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                grown(new_size - layout.size());
            } else {
                NOW.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// One test at a time: the allocator's counts are the whole process's.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `f`'s result and the most bytes it had allocated at once.
pub fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = NOW.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    (out, peak as u64)
}

/// What a binary did: exit code and output.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `pcache-<tool>` with `args` and at most `heap` bytes of private writable memory
/// (`RLIMIT_DATA`).
pub fn run(tool: &str, heap: u64, args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let exe = match tool {
        "mkfs" => env!("CARGO_BIN_EXE_pcache-mkfs"),
        "dump" => env!("CARGO_BIN_EXE_pcache-dump"),
        "replay" => env!("CARGO_BIN_EXE_pcache-replay"),
        _ => env!("CARGO_BIN_EXE_pcache-fsck"),
    };
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let limit = libc::rlimit {
        rlim_cur: heap,
        rlim_max: heap,
    };
    // SAFETY: between fork and exec the closure only makes one system call, which is
    // async-signal-safe, on a value it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "pcache-{tool} {} (heap at most {} MiB): exit {}, {:?}, {} bytes out",
        args.join(" "),
        heap >> 20,
        r.code,
        t.elapsed(),
        r.stdout.len()
    );
    assert_eq!(r.code, 0, "pcache-{tool}: {}", r.stderr);
    r
}

/// A digest of a (sparse) file: its size and every data extent's offset and bytes, found
/// with `SEEK_DATA`/`SEEK_HOLE`, so a 256 GiB file with 256 MiB of data is read in
/// well under a second.
pub fn digest(path: &Path) -> (u64, u64) {
    use std::hash::Hasher;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let seek = |off: u64, whence| {
        // SAFETY: lseek on a descriptor we own.
        let r = unsafe { libc::lseek(f.as_raw_fd(), i64::try_from(off).unwrap(), whence) };
        u64::try_from(r).ok()
    };
    while pos < len {
        let Some(data) = seek(pos, libc::SEEK_DATA) else {
            break;
        };
        let hole = seek(data, libc::SEEK_HOLE).unwrap_or(len);
        h.write_u64(data);
        let mut at = data;
        while at < hole {
            let n = usize::try_from((hole - at).min(buf.len() as u64)).unwrap();
            f.read_exact_at(&mut buf[..n], at).unwrap();
            h.write(&buf[..n]);
            at += n as u64;
        }
        pos = hole;
    }
    (len, h.finish())
}

pub fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}
