//! The command lines of the four tools, as clap definitions in the library, so the man
//! pages and shell completions (generated from them) never drift from the binaries.

use crate::cli::{parse_range, parse_size};
use clap::Parser;
use std::ops::Range;
use std::path::PathBuf;

/// Format a cache device (a DAX block device, a DAX character device or a file) for
/// dm-pcache and pcache.
#[derive(Debug, Parser)]
#[command(name = "pcache-mkfs", version)]
pub struct MkfsArgs {
    /// Keys carry a CRC of their data (the table option `data_crc true`).
    #[arg(long)]
    pub data_crc: bool,
    /// Start GC when this percentage of segments is in use (0..=90).
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(0..=90))]
    pub gc_percent: u8,
    /// Overwrite a device that holds a cache, a filesystem or other data.
    #[arg(long)]
    pub force: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
    /// The cache device.
    pub device: PathBuf,
}

/// Check a pcache cache device: everything the kernel checks on activation, and more.
/// Read-only unless --repair. Exit status: 0 clean, 1 corrected, 4 errors left, 8
/// operational error, 16 usage error.
#[derive(Debug, Parser)]
#[command(name = "pcache-fsck", version)]
pub struct FsckArgs {
    /// Rewrite each damaged copy of a dual record from its good twin (nothing else).
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not read key data to verify data CRCs.
    #[arg(long)]
    pub no_data_crc: bool,
    /// Size of the backing device (bytes, or with K/M/G/T), to check key bounds.
    #[arg(long, value_parser = parse_size, conflicts_with = "backing")]
    pub backing_size: Option<u64>,
    /// The backing device, to check key bounds against its size (opened read-only).
    #[arg(long)]
    pub backing: Option<PathBuf>,
    /// The cache device (opened read-only unless --repair).
    pub device: PathBuf,
}

/// Show the superblock, both copies of every dual record, the segment chain, the kset log
/// and (with --keys) every key of a pcache cache device. Never writes.
#[derive(Debug, Parser)]
#[command(name = "pcache-dump", version)]
pub struct DumpArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show every key of each kset shown.
    #[arg(long)]
    pub keys: bool,
    /// Show only these cache segments and the ksets stored in them: N, A..B, A..=B, A..
    #[arg(long, value_parser = parse_range)]
    pub segments: Option<Range<u32>>,
    /// Show at most this many ksets.
    #[arg(long)]
    pub max_ksets: Option<u64>,
    /// Size of the backing device (bytes, or with K/M/G/T), to check key bounds.
    #[arg(long, value_parser = parse_size, conflicts_with = "backing")]
    pub backing_size: Option<u64>,
    /// The backing device, to check key bounds against its size (opened read-only).
    #[arg(long)]
    pub backing: Option<PathBuf>,
    /// The cache device (opened read-only).
    pub device: PathBuf,
}

/// Replay a pcache cache's log offline and report (or export, or write back) its content.
#[derive(Debug, Parser)]
#[command(name = "pcache-replay", version)]
pub struct ReplayArgs {
    /// The cache device (pmem block device, DAX character device or image file).
    #[arg(long)]
    pub cache: PathBuf,
    /// The backing device (block device or image file).
    #[arg(long)]
    pub backing: PathBuf,
    /// Write the whole logical device (backing overlaid with cached data) to this file.
    #[arg(long, conflicts_with = "writeback")]
    pub export: Option<PathBuf>,
    /// Write all dirty data back to the backing device in log order and flush it, so the
    /// cache is clean. Opens both devices read-write. Idempotent; safe to interrupt.
    #[arg(long)]
    pub writeback: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
