//! The pcache command-line tools as a library: `pcache-mkfs`, `pcache-dump` and
//! `pcache-fsck` are thin wrappers around the modules here.
//!
//! - [`device`]: opening a cache device (regular file, block device, DAX character device)
//!   behind the [`Image`]/[`ImageMut`] traits;
//! - [`scan()`]: the engine's report-mode load ([`pcache_engine::report`]), one read-only
//!   pass that decodes an image the way the kernel's activation does and records
//!   [`Finding`]s — the model both dump and fsck print — with what [`probe`] recognises on
//!   a device that holds no cache;
//! - [`mkfs`] and [`probe`]: writing a fresh cache, crash-safely, after checking that the
//!   device holds nothing recognisable;
//! - [`dump`] and [`fsck`]: rendering a scan for people and for machines (`--json`), and
//!   the fsck verdict, exit code and repairs;
//! - `testimg`, with the `test-utils` feature (tests only, never in a release build): a
//!   typed builder of cache images in memory, for tests here and in other crates.
//!
//! Nothing here prints or exits; the binaries do. The on-media format is described in
//! `docs/format.md` and implemented by [`pcache_format`].

#![deny(unsafe_code)]

pub mod args;
pub mod cli;
pub mod device;
pub mod dump;
pub mod fsck;
pub mod mkfs;
pub mod probe;
pub mod progress;
pub mod salvage;
pub mod shared;
#[cfg(any(test, feature = "test-utils"))]
pub mod testimg;

pub use device::{Access, Device, DeviceKind, Image, ImageMut};
pub use pcache_engine::report::{
    self, chain, finding, log, Finding, Findings, Repair, Scan, ScanOptions, Severity, Status,
};

/// The engine's report-mode load ([`pcache_engine::report::scan`]) of an image, with what
/// [`probe`] recognises added to a superblock that is not pcache's.
///
/// # Errors
/// A read from the device failed.
pub fn scan<M: Image + ?Sized>(m: &M, opts: &ScanOptions) -> std::io::Result<Scan> {
    let mut s = report::scan(m, opts)?;
    let codes = ["sb_bad_magic", "sb_unformatted"];
    if let Some(code) = codes.into_iter().find(|c| s.findings.find(c).is_some()) {
        let other: Vec<String> = probe::probe(m)?
            .iter()
            .filter(|f| !matches!(f, probe::Found::Pcache { .. }))
            .map(ToString::to_string)
            .collect();
        if !other.is_empty() {
            let also = format!("; the device holds {}", other.join("; "));
            s.findings.amend(code, &also);
            if let Some(e) = &mut s.superblock.error {
                e.push_str(&also);
            }
        }
    }
    Ok(s)
}
