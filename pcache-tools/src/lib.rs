//! The pcache command-line tools as a library: `pcache-mkfs`, `pcache-dump` and
//! `pcache-fsck` are thin wrappers around the modules here.
//!
//! - [`device`]: opening a cache device (regular file, block device, DAX character device)
//!   behind the [`Media`]/[`MediaMut`] traits;
//! - [`mod@scan`]: one read-only pass that decodes an image the way the kernel's activation
//!   does and records [`Finding`]s — the model both dump and fsck print;
//! - [`mkfs`] and [`probe`]: writing a fresh cache, crash-safely, after checking that the
//!   device holds nothing recognisable;
//! - [`dump`] and [`fsck`]: rendering a scan for people and for machines (`--json`), and
//!   the fsck verdict, exit code and repairs;
//! - [`testimg`]: a typed builder of cache images in memory, for tests here and in other
//!   crates.
//!
//! Nothing here prints or exits; the binaries do. The on-media format is described in
//! `docs/format.md` and implemented by [`pcache_format`].

#![deny(unsafe_code)]

pub mod args;
pub mod chain;
pub mod cli;
pub mod device;
pub mod dump;
pub mod finding;
pub mod fsck;
pub mod log;
pub mod mkfs;
pub mod probe;
pub mod progress;
pub mod salvage;
pub mod scan;
pub mod testimg;

pub use device::{Access, Device, DeviceKind, Media, MediaMut};
pub use finding::{Finding, Findings, Repair, Severity};
pub use scan::{scan, Scan, ScanOptions, Status};
