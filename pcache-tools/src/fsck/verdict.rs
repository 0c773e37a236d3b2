//! The second verdict of `pcache-fsck`: whether pcache itself would load the cache (the
//! engine's strict open, read-only), next to whether the kernel would (the findings).
//! They differ where pcache is stricter (a damaged log with ksets behind it, a key that
//! crosses a 4 MiB boundary) or more tolerant (a stale key with bad data).

use super::{exit, Report, Verdict};
use pcache_engine::backing::Backing;
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::{Cache, CacheConfig};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A backing device of a given size that is never written and reads as zeros: the
/// engine's open reads only the cache.
struct SizeOnly(u64);

impl Backing for SizeOnly {
    fn size(&self) -> u64 {
        self.0
    }
    fn read_at(&self, _off: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _off: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::other("fsck never writes the backing device"))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _off: u64, _len: u64) -> io::Result<()> {
        self.write_at(0, &[])
    }
    fn write_zeroes(&self, _off: u64, _len: u64) -> io::Result<()> {
        self.write_at(0, &[])
    }
}

/// Why pcache would refuse the cache at `path` in front of a backing device of
/// `backing_size` bytes, or `None` if it would load it. Opens it read-only; writes
/// nothing.
#[must_use]
pub fn pcache_refuses(path: &Path, backing_size: u64) -> Option<String> {
    let media: Arc<dyn CacheMedia> = match DaxMedia::open(path, true) {
        Ok(m) => Arc::new(m),
        Err(e) => return Some(format!("cannot map it: {e}")),
    };
    refuses(media, backing_size)
}

/// As [`pcache_refuses`], for cache `entry` of the shared device at `path`.
#[must_use]
pub fn pcache_refuses_in(
    path: &Path,
    entry: &pcache_engine::format::shared::TableEntry,
    backing_size: u64,
) -> Option<String> {
    let media: Arc<dyn CacheMedia> = match DaxMedia::open(path, true) {
        Ok(m) => Arc::new(m),
        Err(e) => return Some(format!("cannot map it: {e}")),
    };
    match pcache_engine::shared::SharedDevice::window(&media, entry) {
        Ok(w) => refuses(Arc::new(w), backing_size),
        Err(e) => Some(e.to_string()),
    }
}

/// As [`pcache_refuses`], on open media.
#[must_use]
pub fn refuses(media: Arc<dyn CacheMedia>, backing_size: u64) -> Option<String> {
    let data_crc = match Cache::peek_info(&*media) {
        Ok(info) => info.is_some_and(|i| i.data_crc),
        Err(e) => return Some(chain(&e)),
    };
    let cfg = CacheConfig {
        data_crc,
        queues: 1,
        background: false,
        read_only: true,
        ..CacheConfig::default()
    };
    match Cache::open(media, Arc::new(SizeOnly(backing_size)), cfg) {
        Ok(c) => {
            let _ = c.close();
            None
        }
        Err(e) => Some(chain(&e)),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Records pcache's verdict in the report: a refusal is something left that fsck cannot
/// fix (exit 4).
pub fn apply(r: &mut Report, pcache_refuses: Option<String>) {
    if pcache_refuses.is_some() {
        r.exit_code |= exit::UNCORRECTED;
        if matches!(r.verdict, Verdict::Clean | Verdict::CleanWithWarnings) {
            r.verdict = Verdict::Errors;
        }
    }
    r.pcache_checked = true;
    r.pcache_refuses = pcache_refuses;
}

/// The backing size to check with: the one given, or the end of the highest key rounded
/// up to 4 MiB (pcache needs the size only to bound the keys).
#[must_use]
pub fn backing_size(given: Option<u64>, max_key_end: u64) -> u64 {
    given.unwrap_or_else(|| max_key_end.max(1).next_multiple_of(4 << 20))
}
