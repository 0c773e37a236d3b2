//! `pcache-replay --salvage`: the report of what a salvage replay skipped and repaired,
//! and writing the salvaged dirty data back.

use pcache_engine::backing::Backing;
use pcache_engine::salvage::SalvageReport;
use pcache_engine::Cache;
use std::fmt::Write as _;
use std::io;

/// Exit status of `pcache-replay --salvage` when something was skipped.
pub const EXIT_SKIPPED: u8 = 3;

/// The report as text lines.
#[must_use]
pub fn text(r: &SalvageReport) -> String {
    let mut out = String::new();
    let repaired = r.damaged_ksets.iter().filter(|k| k.repaired).count();
    let skipped_ksets = r.damaged_ksets.len() - repaired;
    let _ = writeln!(
        out,
        "salvage: {} damaged ksets repaired, {skipped_ksets} skipped, {} keys skipped{}",
        repaired,
        r.skipped_keys.len(),
        if r.is_complete() {
            "; nothing lost"
        } else {
            ""
        }
    );
    for k in &r.damaged_ksets {
        let _ = writeln!(out, "  kset {}: {}", k.pos, k.what);
    }
    for k in &r.skipped_keys {
        let _ = writeln!(
            out,
            "  skipped key {}#{}: logical {:#x}+{:#x}: {}",
            k.kset, k.index, k.off, k.len, k.reason
        );
    }
    for &(s, e) in &r.older {
        let _ = writeln!(
            out,
            "  older data at logical {s:#x}..{e:#x}: the log's newest data there is lost"
        );
    }
    if skipped_ksets > 0 {
        let _ = writeln!(
            out,
            "  the keys of a skipped kset are unknown: the ranges it wrote may hold older data"
        );
    }
    out
}

/// The report as a JSON value.
#[must_use]
pub fn json(r: &SalvageReport) -> serde_json::Value {
    serde_json::json!({
        "complete": r.is_complete(),
        "damaged_ksets": r.damaged_ksets.iter().map(|k| serde_json::json!({
            "pos": k.pos.to_string(),
            "repaired": k.repaired,
            "what": k.what,
        })).collect::<Vec<_>>(),
        "skipped_keys": r.skipped_keys.iter().map(|k| serde_json::json!({
            "kset": k.kset.to_string(),
            "index": k.index,
            "off": k.off,
            "len": k.len,
            "reason": k.reason,
        })).collect::<Vec<_>>(),
        "older": r.older.iter().map(|&(s, e)| serde_json::json!([s, e])).collect::<Vec<_>>(),
    })
}

/// Writes every dirty extent of a salvaged cache (opened read-only in salvage mode) to
/// `backing` and flushes it; returns the bytes written. `progress` is told the bytes done.
///
/// # Errors
/// Reading the cache or writing the backing device failed.
pub fn write_back(
    cache: &Cache,
    backing: &dyn Backing,
    mut progress: impl FnMut(u64),
) -> io::Result<u64> {
    let mut buf = Vec::new();
    let mut done = 0u64;
    for (off, len) in cache.dirty_extents() {
        buf.resize(len as usize, 0);
        cache.read(0, off, &mut buf).map_err(io::Error::other)?;
        backing.write_at(off, &buf)?;
        done += u64::from(len);
        progress(done);
    }
    backing.flush()?;
    Ok(done)
}

/// The total of the dirty extents.
#[must_use]
pub fn dirty_bytes(cache: &Cache) -> u64 {
    cache
        .dirty_extents()
        .iter()
        .map(|&(_, l)| u64::from(l))
        .sum()
}
