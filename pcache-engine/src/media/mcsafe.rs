//! Copies out of the cache media that survive a machine check or a `SIGBUS`.
//!
//! A load from a poisoned line of persistent memory raises a machine check; Linux turns
//! it into a `SIGBUS` with `BUS_MCEERR_AR` for the thread that consumed the poison. A
//! load from a page of a mapped file beyond its end (the file was truncated under the
//! mapping) raises a `SIGBUS` with `BUS_ADRERR`. Either kills the process by default.
//! [`copy_from_media`] turns both into an error for the one copy that hit them, the way
//! the kernel's exception tables do for its own `copy_mc_to_kernel`:
//!
//! - the copy is a tiny assembly routine (`rep movsb`) whose only instruction that can
//!   fault lies between two labels, `pcache_mcsafe_copy_fault_start` and `_end`;
//! - a `SIGBUS` handler (installed once, `SA_SIGINFO | SA_ONSTACK`) looks at the
//!   interrupted instruction pointer: inside that range, and for a fault the kernel
//!   raised synchronously (`BUS_ADRERR`, `BUS_OBJERR`, `BUS_MCEERR_AR`), it moves the
//!   instruction pointer to the routine's fixup label and returns. `rep movsb` leaves the
//!   count of bytes not yet copied in `rcx`; the fixup returns it, so the copy returns
//!   "`n` bytes short" instead of dying;
//! - every other `SIGBUS` is handled as if the handler were not there: it is passed to
//!   the handler installed before ours if that was a real one (Rust's runtime installs
//!   one to report stack overflows; it restores the default action for any other fault),
//!   otherwise the default action is restored and the signal takes its course (a fault
//!   re-executes and kills the process, a signal sent with `kill` is raised again; one
//!   that was ignored stays ignored).
//!
//! The handler only reads its arguments and a few atomics, and calls `sigaction` and
//! `raise`, which are async-signal-safe: no allocation, no locks.
//!
//! This is x86-64 Linux only. Elsewhere [`copy_from_media`] is a plain copy and a media
//! error still kills the process.
//!
//! What it cannot catch: a `SIGBUS` while the signal is blocked in the faulting thread
//! (the kernel then kills the process), a handler that someone installs over ours later,
//! and a machine check the CPU reports without a restartable instruction pointer (the
//! kernel kills the process itself). Only this copy is protected: stores, `msync`,
//! cache-line flushes and any other access to the mapping are not.

/// Copies `dst.len()` bytes from `src` into `dst`, or reports where the source could not
/// be read.
///
/// `Err(done)`: the copy stopped at byte `done` (`done < dst.len()`) because reading the
/// source there raised a machine check or a `SIGBUS`. `dst[..done]` holds the bytes
/// before it; the rest of `dst` is unspecified. On a platform without protection (not
/// x86-64 Linux), such a fault kills the process instead.
///
/// # Safety
/// `[src, src + dst.len())` must lie inside one live mapping that stays mapped for the
/// call, must not overlap `dst`, and must not be written concurrently.
pub(crate) unsafe fn copy_from_media(dst: &mut [u8], src: *const u8) -> Result<(), usize> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: the caller's contract is the one `imp::copy` needs.
        unsafe { imp::copy(dst, src) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        // SAFETY: the caller guarantees that the source range is mapped, readable as far
        // as the platform knows, not aliased by `dst` and not written concurrently.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
}

/// Installs the `SIGBUS` handler (once per process; later calls do nothing). The first
/// [`copy_from_media`] does it too; mapping a file does it early, so that whatever
/// handler was there before is what the process started with.
pub(crate) fn install() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    imp::install();
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use libc::{c_int, c_void, siginfo_t};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    // pcache_mcsafe_copy(dst: rdi, src: rsi, len: rdx) -> rax: bytes not copied.
    //
    // `rep movsb` is the only instruction that touches the source. On a fault it leaves
    // rcx at the number of bytes not yet copied (it is restartable), rsi/rdi at the
    // faulting position. The signal handler sends a fault in [fault_start, fault_end) to
    // fixup, which returns rcx: at least 1, since the faulting byte was not copied (made
    // sure of, so that a fault can never look like success). The direction flag is clear
    // on entry, as the System V ABI guarantees; rax, rcx, rsi and rdi are caller-saved.
    core::arch::global_asm!(
        ".pushsection .text.pcache_mcsafe_copy,\"ax\",@progbits",
        ".p2align 4",
        ".globl pcache_mcsafe_copy",
        ".hidden pcache_mcsafe_copy",
        ".type pcache_mcsafe_copy,@function",
        "pcache_mcsafe_copy:",
        "    mov rcx, rdx",
        ".globl pcache_mcsafe_copy_fault_start",
        ".hidden pcache_mcsafe_copy_fault_start",
        "pcache_mcsafe_copy_fault_start:",
        "    rep movsb",
        ".globl pcache_mcsafe_copy_fault_end",
        ".hidden pcache_mcsafe_copy_fault_end",
        "pcache_mcsafe_copy_fault_end:",
        "    xor eax, eax",
        "    ret",
        ".globl pcache_mcsafe_copy_fixup",
        ".hidden pcache_mcsafe_copy_fixup",
        "pcache_mcsafe_copy_fixup:",
        "    mov rax, rcx",
        "    test rax, rax",
        "    jnz .Lpcache_mcsafe_copy_short",
        "    mov eax, 1",
        ".Lpcache_mcsafe_copy_short:",
        "    ret",
        ".size pcache_mcsafe_copy, . - pcache_mcsafe_copy",
        ".popsection",
    );

    extern "C" {
        fn pcache_mcsafe_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
        // Labels inside pcache_mcsafe_copy; only their addresses are used, never called.
        fn pcache_mcsafe_copy_fault_start();
        fn pcache_mcsafe_copy_fault_end();
        fn pcache_mcsafe_copy_fixup();
    }

    /// See [`super::copy_from_media`]; same contract.
    pub(super) unsafe fn copy(dst: &mut [u8], src: *const u8) -> Result<(), usize> {
        install();
        let len = dst.len();
        // SAFETY: the routine reads `len` bytes at `src` (a live, unaliased, not
        // concurrently written mapping: the caller's contract) and writes `len` bytes at
        // `dst`, which the exclusive borrow makes valid and unaliased; it follows the C
        // ABI and touches no other memory. A fault while reading the source comes back as
        // a short count through the SIGBUS handler, which `install` has put in place.
        let left = unsafe { pcache_mcsafe_copy(dst.as_mut_ptr(), src, len) };
        if left == 0 {
            Ok(())
        } else {
            Err(len.saturating_sub(left))
        }
    }

    static INSTALL: Once = Once::new();
    /// `sa_sigaction` of the handler installed before ours.
    static PREV_ACTION: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
    /// Whether that handler takes `SA_SIGINFO` arguments.
    static PREV_SIGINFO: AtomicBool = AtomicBool::new(false);

    pub(super) fn install() {
        INSTALL.call_once(|| {
            // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask, no
            // flags); `sigaction` with a null new action only reads the current one into
            // `old`, which is valid for writes.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &raw mut old) } != 0 {
                tracing::warn!(
                    "cannot read the SIGBUS action ({}); media errors on reads will kill the process",
                    std::io::Error::last_os_error()
                );
                return;
            }
            // Recorded before our handler can run, so that it always sees them.
            PREV_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
            PREV_ACTION.store(old.sa_sigaction, Ordering::Release);
            // SAFETY: as above, an all-zero `sigaction` is valid.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `new.sa_mask` is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&raw mut new.sa_mask) };
            // SAFETY: installs a handler with the signature SA_SIGINFO requires; it is
            // async-signal-safe (see `on_sigbus`) and lives as long as the process.
            if unsafe { libc::sigaction(libc::SIGBUS, &raw const new, std::ptr::null_mut()) }
                != 0
            {
                tracing::warn!(
                    "cannot install the SIGBUS handler ({}); media errors on reads will kill the process",
                    std::io::Error::last_os_error()
                );
            }
        });
    }

    /// Whether a SIGBUS with this `si_code` was raised by the faulting instruction
    /// itself, so that returning re-executes the instruction and faults again.
    fn synchronous(code: c_int) -> bool {
        matches!(
            code,
            libc::BUS_ADRALN | libc::BUS_ADRERR | libc::BUS_OBJERR | libc::BUS_MCEERR_AR
        )
    }

    /// The SIGBUS handler. Async-signal-safe: it reads its arguments and atomics and
    /// calls only `sigaction`, `raise` and the previous handler.
    extern "C" fn on_sigbus(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
        let code = if info.is_null() {
            0
        } else {
            // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo_t.
            unsafe { (*info).si_code }
        };
        if synchronous(code) && !ctx.is_null() {
            let uc = ctx.cast::<libc::ucontext_t>();
            // SAFETY: for an SA_SIGINFO handler `ctx` is the interrupted thread's
            // ucontext_t, valid for reads and writes until the handler returns; the kernel
            // restores the registers from it on return. REG_RIP indexes gregs.
            let rip = unsafe { &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] };
            #[allow(clippy::cast_sign_loss)] // an address, stored as greg_t (i64)
            let pc = *rip as usize;
            let start = pcache_mcsafe_copy_fault_start as *const () as usize;
            let end = pcache_mcsafe_copy_fault_end as *const () as usize;
            if (start..end).contains(&pc) {
                // Resume at the fixup, which returns the count rep movsb left in rcx.
                #[allow(clippy::cast_possible_wrap)] // an address, stored as greg_t
                {
                    *rip = pcache_mcsafe_copy_fixup as *const () as usize as i64;
                }
                return;
            }
        }
        not_ours(sig, info, ctx, code);
    }

    /// A SIGBUS that is not a fault of our copy: what would have happened without us.
    fn not_ours(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void, code: c_int) {
        let prev = PREV_ACTION.load(Ordering::Acquire);
        if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
            if PREV_SIGINFO.load(Ordering::Acquire) {
                // SAFETY: `prev` is the sa_sigaction of the handler installed before ours,
                // with SA_SIGINFO, so it has this signature; the arguments are the ones the
                // kernel gave us.
                let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(prev) };
                f(sig, info, ctx);
            } else {
                // SAFETY: `prev` is the sa_handler of the handler installed before ours,
                // without SA_SIGINFO, so it takes the signal number only.
                let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(prev) };
                f(sig);
            }
            return;
        }
        if prev == libc::SIG_IGN && !synchronous(code) {
            // An ignored signal someone sent: ignored. (A synchronous fault is never
            // ignored: the kernel forces the default action, as restored below.)
            return;
        }
        // SAFETY: an all-zero `sigaction` is SIG_DFL with an empty mask and no flags;
        // sigaction(2) is async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &raw const dfl, std::ptr::null_mut());
        }
        if !synchronous(code) {
            // A fault re-executes and faults again into the default action; a signal
            // that was sent must be sent again. It is blocked while we run, so it is
            // delivered, with the default action, as soon as the handler returns.
            // SAFETY: raise(3) is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_like_memcpy() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for (off, len) in [(0, 0), (0, 1), (3, 7), (1, 4096), (17, 12_345), (0, 20_000)] {
            let mut dst = vec![0xAA; len];
            // SAFETY: `src` is a live allocation covering [off, off + len), distinct from
            // `dst`, and nobody writes it.
            let r = unsafe { copy_from_media(&mut dst, src.as_ptr().wrapping_add(off)) };
            assert_eq!(r, Ok(()));
            assert_eq!(dst, src[off..off + len]);
        }
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    mod sigbus {
        use super::super::{copy_from_media, install};
        use crate::media::map::{page_size, Mapping};
        use std::os::unix::process::ExitStatusExt;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        const CHILD_ENV: &str = "PCACHE_MCSAFE_CHILD";

        /// A mapping of a file of `pages` pages, each filled with its index + 1, then
        /// truncated to `keep` pages: the pages after that raise SIGBUS (BUS_ADRERR).
        fn truncated(pages: usize, keep: usize) -> (tempfile::NamedTempFile, Mapping) {
            let page = usize::try_from(page_size()).unwrap();
            let file = tempfile::NamedTempFile::new().unwrap();
            let data: Vec<u8> = (0..pages * page).map(|i| (i / page + 1) as u8).collect();
            std::fs::write(file.path(), &data).unwrap();
            let (map, _) = Mapping::file(file.as_file(), pages * page, false, false).unwrap();
            file.as_file().set_len((keep * page) as u64).unwrap();
            (file, map)
        }

        #[test]
        fn a_fault_in_the_copy_is_a_short_count() {
            let page = usize::try_from(page_size()).unwrap();
            let (_file, map) = truncated(4, 2);
            let base = map.at(0).cast_const();
            let mut buf = vec![0; 2 * page];
            // SAFETY: [base, base + 2 pages) is inside the mapping, which is read-only
            // and outlives the call; pages past the file's end fault (the point).
            let r = unsafe { copy_from_media(&mut buf, base) };
            assert_eq!(r, Ok(()));
            assert!(buf[..page].iter().all(|&b| b == 1));
            assert!(buf[page..].iter().all(|&b| b == 2));
            // Straddling the end: stops exactly at it.
            // SAFETY: as above, [base + page, base + 3 pages) is inside the mapping.
            let r = unsafe { copy_from_media(&mut buf, base.wrapping_add(page)) };
            assert_eq!(r, Err(page));
            assert!(buf[..page].iter().all(|&b| b == 2));
            // Wholly past the end, twice (the handler stays installed), at an odd offset.
            for _ in 0..2 {
                let mut small = [0u8; 100];
                // SAFETY: as above, 3 pages + 5 + 100 bytes is inside the 4-page mapping.
                let r = unsafe { copy_from_media(&mut small, base.wrapping_add(3 * page + 5)) };
                assert_eq!(r, Err(0));
            }
        }

        /// The name libtest knows [`sigbus_child`] by.
        fn child_test_name() -> String {
            let module = module_path!().split_once("::").unwrap().1;
            format!("{module}::sigbus_child")
        }

        /// Runs [`sigbus_child`] in a child process in `mode`. A child that has not ended
        /// after a minute (a swallowed fault re-executes forever) is killed and fails.
        fn run_child(mode: &str) -> std::process::Output {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    &child_test_name(),
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, mode)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "child {mode} hangs; stdout: {}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().unwrap()
        }

        /// A SIGBUS that is not a fault of the copy is not swallowed: with Rust's runtime
        /// handler before ours, with the default action, for a fault and for a signal sent
        /// with raise; and a signal that was ignored stays ignored. This needs a process
        /// that may die, so the work is done by [`sigbus_child`] in a child process.
        #[test]
        fn an_unrelated_sigbus_is_not_swallowed() {
            for (mode, dies) in [
                ("runtime-fault", true),
                ("default-fault", true),
                ("default-raise", true),
                ("ignore-raise", false),
            ] {
                let out = run_child(mode);
                let why = format!(
                    "child {mode}: {:?}\nstdout: {}\nstderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if dies {
                    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{why}");
                } else {
                    assert!(out.status.success(), "{why}");
                    assert!(
                        String::from_utf8_lossy(&out.stdout).contains("survived"),
                        "{why}"
                    );
                }
            }
        }

        /// Not a test by itself: what [`an_unrelated_sigbus_is_not_swallowed`] runs in
        /// a child process (does nothing without the environment variable).
        #[test]
        fn sigbus_child() {
            let Ok(mode) = std::env::var(CHILD_ENV) else {
                return;
            };
            // SAFETY: prctl(PR_SET_DUMPABLE, 0) only stops this process dumping core when
            // it dies below.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            let (before, how) = mode.split_once('-').unwrap();
            let prev = match before {
                "runtime" => None,
                "default" => Some(libc::SIG_DFL),
                "ignore" => Some(libc::SIG_IGN),
                other => panic!("bad mode {other}"),
            };
            if let Some(action) = prev {
                // SAFETY: sets SIGBUS's disposition to SIG_DFL or SIG_IGN, before our
                // handler is installed (nothing in this process installed it yet).
                unsafe { libc::signal(libc::SIGBUS, action) };
            }
            install();
            // Our copy is still caught with whatever handler came before.
            let (_file, map) = truncated(2, 1);
            let page = usize::try_from(page_size()).unwrap();
            let base = map.at(0).cast_const();
            let mut buf = vec![0; 16];
            // SAFETY: [base + page, + 16) is inside the read-only mapping; it faults.
            let r = unsafe { copy_from_media(&mut buf, base.wrapping_add(page)) };
            assert_eq!(r, Err(0));
            match how {
                "fault" => {
                    // SAFETY: the address is inside the mapping, past the file's end: the
                    // load raises SIGBUS outside the copy routine, which must kill us.
                    let b = unsafe { std::ptr::read_volatile(base.wrapping_add(page)) };
                    println!("read {b} past the end of the file");
                }
                "raise" => {
                    // SAFETY: raise(3) has no memory-safety preconditions.
                    unsafe { libc::raise(libc::SIGBUS) };
                }
                other => panic!("bad mode {other}"),
            }
            println!("survived");
        }
    }
}
