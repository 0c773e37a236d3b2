//! Cache-line write-back and store fences for persistent memory mapped with DAX.
//!
//! The instruction is chosen once at start-up from the CPU's features, best first:
//! CLWB (writes the line back and may keep it cached), CLFLUSHOPT (writes back and
//! evicts, weakly ordered), CLFLUSH (always present on x86-64, but serialising). A
//! `SFENCE` after the flushes makes them durable in order with later stores.

/// The cache-line flush instruction in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushInstr {
    /// `CLWB`.
    Clwb,
    /// `CLFLUSHOPT`.
    ClflushOpt,
    /// `CLFLUSH`.
    Clflush,
}

/// Size of a CPU cache line.
pub(crate) const CACHE_LINE: usize = 64;

impl FlushInstr {
    /// The best flush instruction this CPU has, or `None` on a CPU without one (not
    /// x86-64).
    #[must_use]
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            if leaf7.ebx & (1 << 24) != 0 {
                Some(Self::Clwb)
            } else if leaf7.ebx & (1 << 23) != 0 {
                Some(Self::ClflushOpt)
            } else {
                Some(Self::Clflush)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

/// Writes back every cache line that overlaps `[ptr, ptr + len)`.
pub(crate) fn flush_range(instr: FlushInstr, ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let start = (ptr as usize) & !(CACHE_LINE - 1);
    let end = (ptr as usize).saturating_add(len);
    let mut line = start;
    while line < end {
        flush_line(instr, line as *const u8);
        line += CACHE_LINE;
    }
}

#[cfg(target_arch = "x86_64")]
fn flush_line(instr: FlushInstr, line: *const u8) {
    use std::arch::asm;
    // SAFETY: the flush instructions only write back (or evict) the cache line holding
    // `line`, which lies inside a live mapping (the caller's range); they never change
    // memory contents, and the instruction was chosen from CPUID, so the CPU supports it.
    unsafe {
        match instr {
            FlushInstr::Clwb => asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)),
            FlushInstr::ClflushOpt => {
                asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags));
            }
            FlushInstr::Clflush => {
                asm!("clflush [{0}]", in(reg) line, options(nostack, preserves_flags));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn flush_line(_instr: FlushInstr, _line: *const u8) {}

/// A store fence: earlier flushes are complete (durable) before later stores.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SFENCE has no operands and no effect other than ordering stores.
    unsafe {
        std::arch::asm!("sfence", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}
