//! `pcache-fsck`: the verdict on a [`Scan`](crate::Scan), its fsck(8) exit code, and the
//! one kind of repair that needs no guessing — rewriting a damaged copy of a dual record
//! from its good twin.

use crate::device::{Image, ImageMut};
use crate::finding::{count, Findings, Repair, Severity};
use crate::{scan, ScanOptions, Status};
use pcache_format::pcache_crc;
use serde::Serialize;
use std::fmt::Write as _;
use std::io;

/// fsck(8) exit codes; a run's code is the bitwise OR of those that apply.
pub mod exit {
    /// No errors.
    pub const CLEAN: i32 = 0;
    /// Errors were corrected.
    pub const CORRECTED: i32 = 1;
    /// Errors were left uncorrected.
    pub const UNCORRECTED: i32 = 4;
    /// Operational error (the device could not be read or written).
    pub const OPERATIONAL: i32 = 8;
    /// Usage or syntax error.
    pub const USAGE: i32 = 16;
}

/// What to check and whether to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckOptions {
    /// Rewrite damaged copies of dual records from their good twins.
    pub repair: bool,
    /// Size of the backing device, to check that keys lie inside it.
    pub backing_size: Option<u64>,
    /// Verify each key's data CRC when the cache has DATA_CRC.
    pub verify_data_crc: bool,
}

impl Default for FsckOptions {
    fn default() -> Self {
        Self {
            repair: false,
            backing_size: None,
            verify_data_crc: true,
        }
    }
}

impl FsckOptions {
    fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            backing_size: self.backing_size,
            verify_data_crc: self.verify_data_crc,
            ..ScanOptions::check_only()
        }
    }
}

/// The overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong (there may be informational notes).
    Clean,
    /// Nothing damaged, but something the kernel accepts and never writes.
    CleanWithWarnings,
    /// Everything found was repaired.
    Corrected,
    /// Errors or damage remain.
    Errors,
}

/// One change `--repair` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairDone {
    /// The damaged structure, e.g. `cache_info[0]`.
    pub what: String,
    /// The repair.
    #[serde(flatten)]
    pub repair: Repair,
    /// The bytes before, in hex.
    pub before: String,
    /// The bytes written, in hex.
    pub after: String,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The overall result.
    pub verdict: Verdict,
    /// The fsck(8) exit code.
    pub exit_code: i32,
    /// Errors found (after the repairs), counting those left out of the list.
    pub errors: u64,
    /// Warnings found (after the repairs), counting those left out of the list.
    pub warnings: u64,
    /// Whether the kernel would refuse to activate the cache.
    pub kernel_refuses: bool,
    /// Why pcache would refuse to load it (its strict open), when it was asked
    /// ([`verdict::apply`]) and would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcache_refuses: Option<String>,
    /// Whether pcache's verdict was asked (it needs the engine's view of the device).
    #[serde(skip)]
    pub pcache_checked: bool,
    /// One past the highest logical byte a key of the log names (0 without keys).
    #[serde(skip)]
    pub max_key_end: u64,
    /// What `--repair` changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<RepairDone>,
    /// The findings (after the repairs, when any were made).
    pub findings: Findings,
    /// The `dmsetup status` line the kernel would show after activating the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The same line, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_line: Option<String>,
    /// What the log holds, when it could be walked (the summary e2fsck gives of inodes
    /// and blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogCounts>,
}

/// What the log holds, from key_tail to key_head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogCounts {
    /// Ksets, LAST ones included.
    pub ksets: u64,
    /// Keys in them.
    pub keys: u64,
    /// Keys replay would insert (the others are stale or invalid).
    pub live_keys: u64,
    /// Live keys not yet written back.
    pub dirty_keys: u64,
}

impl LogCounts {
    fn of(log: Option<&crate::log::LogView>) -> Option<Self> {
        log.map(|l| Self {
            ksets: l.ksets,
            keys: l.keys,
            live_keys: l.live_keys,
            dirty_keys: l.dirty_keys,
        })
    }
}

/// Why a repair was not made. The device may have been changed only by repairs listed
/// before the failing one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsckError {
    /// Reading or writing the device failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A good copy was no longer good when it was about to be copied: the device changed
    /// under the check. Nothing was written for it.
    #[error("the copy at byte {0:#x} changed during the check; not repaired")]
    Changed(u64),
}

/// Whether the findings leave something to fix: an error, or a damaged copy not yet
/// rewritten.
#[must_use]
pub fn needs_attention(f: &Findings) -> bool {
    f.errors() > 0 || !f.repairs().is_empty()
}

fn verdict(f: &Findings, repaired: bool) -> (Verdict, i32) {
    if needs_attention(f) {
        let code = exit::UNCORRECTED | if repaired { exit::CORRECTED } else { 0 };
        (Verdict::Errors, code)
    } else if repaired {
        (Verdict::Corrected, exit::CORRECTED)
    } else if f.warnings() > 0 {
        (Verdict::CleanWithWarnings, exit::CLEAN)
    } else {
        (Verdict::Clean, exit::CLEAN)
    }
}

fn report(scan: crate::Scan, repaired: Vec<RepairDone>) -> Report {
    let max_key_end = scan.log.as_ref().map_or(0, |l| l.max_key_end);
    let log = LogCounts::of(scan.log.as_ref());
    let (findings, status) = (scan.findings, scan.status);
    let (verdict, exit_code) = verdict(&findings, !repaired.is_empty());
    Report {
        verdict,
        exit_code,
        errors: findings.errors(),
        warnings: findings.warnings(),
        kernel_refuses: findings.kernel_refuses(),
        pcache_refuses: None,
        pcache_checked: false,
        max_key_end,
        repaired,
        findings,
        status_line: status.map(|s| s.to_string()),
        status,
        log,
    }
}

/// Checks the device without writing anything.
///
/// # Errors
/// A read failed.
pub fn check<M: Image + ?Sized>(m: &M, opts: &FsckOptions) -> io::Result<Report> {
    Ok(report(scan(m, &opts.scan_options())?, Vec::new()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Repair passes at most: a repair can let the check read what lies behind the record it
/// fixed (a cache_info copy moved from where 6.18 kernels wrote it to its slot lets the
/// check read the segments and tails, whose damaged copies the first pass never saw), and
/// what lies behind that holds no record that could hide more.
pub const REPAIR_PASSES: usize = 3;

/// Checks the device and, with `opts.repair`, rewrites every damaged copy that has a good
/// twin, then checks again, and repairs again what that check found behind the first
/// repairs (up to [`REPAIR_PASSES`]). Without `opts.repair` this is [`check`].
///
/// # Persistence
/// Each pass's rewritten copies are made durable with [`ImageMut::sync`] before the next
/// check.
///
/// # Errors
/// A read or write failed, or the device changed during the check.
pub fn check_and_repair<M: ImageMut + ?Sized>(
    m: &mut M,
    opts: &FsckOptions,
) -> Result<Report, FsckError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| FsckError::Io { what, source }
    };
    let mut scanned = scan(&*m, &opts.scan_options()).map_err(io("reading the device"))?;
    let mut done: Vec<RepairDone> = Vec::new();
    for _ in 0..REPAIR_PASSES {
        // A copy already rewritten and damaged again: the device changes under the check.
        let fresh = |r: &Repair| !done.iter().any(|d| d.repair == *r);
        if !opts.repair
            || scanned.findings.repairs().is_empty()
            || !scanned.findings.repairs().iter().all(fresh)
        {
            break;
        }
        for &r in scanned.findings.repairs() {
            done.push(repair_one(m, &scanned.findings, r)?);
        }
        m.sync().map_err(io("flushing the repairs"))?;
        scanned = scan(&*m, &opts.scan_options()).map_err(io("reading the device"))?;
    }
    Ok(report(scanned, done))
}

/// Rewrites the damaged copy of `r` from its twin, once the twin's CRC is checked again.
fn repair_one<M: ImageMut + ?Sized>(
    m: &mut M,
    findings: &Findings,
    r: Repair,
) -> Result<RepairDone, FsckError> {
    let len = r.len as usize;
    let mut good = vec![0; len];
    let mut bad = vec![0; len];
    m.read_at(r.from, &mut good)
        .and_then(|()| m.read_at(r.to, &mut bad))
        .map_err(|source| FsckError::Io {
            what: format!("reading the copies at {:#x} and {:#x}", r.from, r.to),
            source,
        })?;
    // Every dual record starts with a CRC of the rest of it.
    let stored = good
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if len < 8 || stored != Some(pcache_crc(&good[4..])) {
        return Err(FsckError::Changed(r.from));
    }
    m.write_at(r.to, &good).map_err(|source| FsckError::Io {
        what: format!("writing the copy at {:#x}", r.to),
        source,
    })?;
    let what = findings
        .list
        .iter()
        .find(|f| f.repair == Some(r))
        .map_or_else(|| format!("copy at {:#x}", r.to), |f| f.what.clone());
    Ok(RepairDone {
        what,
        repair: r,
        before: hex(&bad),
        after: hex(&good),
    })
}

/// The report for people: findings, repairs, and a verdict line naming the device.
#[must_use]
pub fn text(r: &Report, device: &str) -> String {
    let mut out = String::new();
    for f in &r.findings.list {
        let _ = writeln!(out, "{device}: {f}");
    }
    for (code, n) in &r.findings.omitted {
        let _ = writeln!(out, "{device}: ... and {n} more findings of kind {code}");
    }
    for d in &r.repaired {
        let _ = writeln!(
            out,
            "{device}: repaired {} at byte {:#x}: rewrote {} bytes from the good copy at byte \
             {:#x} (was {}, now {})",
            d.what, d.repair.to, d.repair.len, d.repair.from, d.before, d.after
        );
    }
    let f = &r.findings;
    let verdict = match r.verdict {
        Verdict::Clean => "clean".to_owned(),
        Verdict::CleanWithWarnings => format!("clean, {}", count(f.warnings(), "warning")),
        Verdict::Corrected => format!("corrected ({})", count(r.repaired.len() as u64, "repair")),
        Verdict::Errors => {
            let fixable = f.repairs().len();
            let mut s = format!(
                "{}, {}",
                count(f.errors(), "error"),
                count(f.warnings(), "warning")
            );
            if !r.repaired.is_empty() {
                let _ = write!(s, " after {}", count(r.repaired.len() as u64, "repair"));
            }
            if fixable > 0 {
                let copies = if fixable == 1 { "copy" } else { "copies" };
                let _ = write!(s, "; --repair would rewrite {fixable} damaged {copies}");
            }
            if f.kernel_refuses() {
                s.push_str("; the kernel would refuse this cache");
            }
            if r.pcache_refuses.is_some() {
                s.push_str("; pcache would refuse it");
            }
            s
        }
    };
    let status = match &r.status {
        Some(s) => match s.cache_mode() {
            Some(m) => format!(" (mode {m}, status {s})"),
            None => format!(" (unknown mode, status {s})"),
        },
        None => String::new(),
    };
    // As e2fsck's "11/65536 files, 12955/262144 blocks": what the log holds.
    let contents = match &r.log {
        // After a verdict of several clauses, a clause of its own.
        Some(l) => format!(
            "{} {}, {}, {} dirty",
            if verdict.contains(';') { ";" } else { "," },
            count(l.ksets, "kset"),
            count(l.keys, "key"),
            l.dirty_keys
        ),
        None => String::new(),
    };
    let worst_info = f.worst() == Some(Severity::Info);
    let notes = if worst_info && r.verdict == Verdict::Clean {
        format!(", {}", count(f.list.len() as u64, "note"))
    } else {
        String::new()
    };
    let _ = writeln!(out, "{device}: {verdict}{notes}{contents}{status}");
    match (&r.pcache_refuses, r.pcache_checked && r.kernel_refuses) {
        (Some(why), _) => {
            let _ = writeln!(out, "{device}: pcache would refuse this cache: {why}");
        }
        (None, true) => {
            let _ = writeln!(out, "{device}: pcache would load it");
        }
        (None, false) => {}
    }
    out
}

/// The report as JSON, pretty-printed.
#[must_use]
pub fn json(r: &Report, device: &str) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        schema: u32,
        device: &'a str,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_string_pretty(&Doc {
        schema: pcache_engine::JSON_SCHEMA,
        device,
        report: r,
    })
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub mod verdict;

#[cfg(test)]
mod tests;
