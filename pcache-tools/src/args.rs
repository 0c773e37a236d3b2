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
    /// The cache mode (kept in the cache; pcache-ublk add --cache-mode and set change it):
    /// writeback, writethrough, writearound, writeonly or passthrough. The kernel's
    /// dm-pcache keeps it and runs the cache as writeback.
    #[arg(long, value_name = "MODE", default_value = "writeback")]
    pub cache_mode: pcache_format::CacheMode,
    /// Overwrite a device that holds a cache, a filesystem or other data.
    #[arg(long)]
    pub force: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
    /// On a shared cache device: the cache (its name, or its id) to format again (with --force, as it holds a cache).
    #[arg(long, visible_alias = "cache", value_name = "NAME")]
    pub name: Option<String>,
    /// The cache device.
    pub device: PathBuf,
}

/// Check a pcache cache device: everything the kernel checks on activation, and more.
/// Read-only unless --repair (-y, -p). Exit status (fsck(8)): 0 clean (warnings do not
/// count), 1 corrected, 4 errors left: something --repair would change or cannot fix, 8
/// operational error (including a cache another program holds, for --repair), 16 usage
/// error. A cache in use by pcache-ublk is checked with a warning that the view may be
/// torn.
#[derive(Debug, Parser)]
#[command(name = "pcache-fsck", version)]
pub struct FsckArgs {
    /// Rewrite each damaged copy of a dual record from its good twin (nothing else). Takes
    /// the cache exclusively: refused while pcache-ublk or another tool holds it.
    #[arg(long, short = 'y')]
    pub repair: bool,
    /// Preen (fsck(8) -p, also -a): make the repairs that need no decision (all of
    /// --repair's); if errors remain, say to run pcache-fsck by hand and exit 4.
    #[arg(short = 'p', short_alias = 'a', conflicts_with = "repair")]
    pub preen: bool,
    /// No changes (fsck(8) -n): open read-only and answer no to every repair (the default).
    #[arg(short = 'n', conflicts_with_all = ["repair", "preen"])]
    pub no_changes: bool,
    /// Force a check (fsck(8) -f): accepted for fsck(8) wrappers; every run is a full check.
    #[arg(short = 'f')]
    pub force: bool,
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
    /// On a shared cache device: the cache (its name, or its id) to check (without it, the table and every cache are checked).
    #[arg(long, visible_alias = "cache", value_name = "NAME")]
    pub name: Option<String>,
    /// The cache device (opened read-only unless --repair).
    pub device: PathBuf,
}

/// Show the superblock, both copies of every dual record, the segment chain, the kset log
/// and (with --keys) every key of a pcache cache device. Never writes. A cache in use by
/// pcache-ublk is shown with a warning that the view may be torn.
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
    /// On a shared cache device: the cache (its name, or its id) to show (without it, the table is shown).
    #[arg(long, visible_alias = "cache", value_name = "NAME")]
    pub name: Option<String>,
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
    /// On a shared cache device: the cache to replay (its name, or its id). The backing
    /// device must be the one it was created for (size and identity).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The backing device (block device or image file).
    #[arg(long)]
    pub backing: PathBuf,
    /// Write the whole logical device (backing overlaid with cached data) to this file.
    #[arg(long, conflicts_with = "writeback")]
    pub export: Option<PathBuf>,
    /// Write all dirty data back to the backing device in log order and flush it, so the
    /// cache is clean. Opens both devices read-write, exclusively: refused while
    /// pcache-ublk or another tool holds either. Idempotent; safe to interrupt.
    #[arg(long)]
    pub writeback: bool,
    /// Salvage a damaged cache: skip the keys that fail their checks (a data CRC
    /// mismatch, a key that does not decode) and go on past a damaged kset (repairing one
    /// damaged by a single flipped bit), instead of refusing the cache; report what was
    /// skipped and which logical ranges hold older data than the log had. With --export,
    /// or --writeback (which writes the salvaged dirty data to the backing device; the
    /// cache itself is left as it is, to be formatted again). Exit status 3 when something
    /// was skipped.
    #[arg(long)]
    pub salvage: bool,
    /// Report or export a cache that pcache-ublk (or another writer) holds, instead of
    /// refusing: the replay then reads a log that is being written, and may be torn.
    #[arg(long, conflicts_with = "writeback")]
    pub force_live: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One cache device for several backing devices: format a shared cache device, create and
/// remove its caches (each in the kernel's format, in its own byte range), list them, and
/// print the device-mapper tables that open one with the kernel's dm-pcache. The caches
/// are served with `pcache-ublk add --cache DEVICE --name NAME --backing BACKING`.
#[derive(Debug, Parser)]
#[command(name = "pcache-shared", version)]
pub struct SharedArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SharedCommand,
}

/// The subcommands of `pcache-shared`.
#[derive(Debug, clap::Subcommand)]
pub enum SharedCommand {
    /// Format DEVICE as an empty shared cache device (refused if it holds anything
    /// recognisable, unless --force).
    Format {
        /// Overwrite a device that holds a cache, a filesystem or other data.
        #[arg(long)]
        force: bool,
        /// The cache device.
        device: PathBuf,
    },
    /// Create a cache for a backing device in the free space of DEVICE, while the other
    /// caches keep serving. Records the backing device's size and stable identity, which
    /// every start checks.
    Create {
        /// The new cache's name (letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// Its size (bytes, or with K/M/G/T; rounded down to 2 MiB; at least 512 MiB).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// The backing device it caches.
        #[arg(long)]
        backing: PathBuf,
        /// Keys carry a CRC of their data.
        #[arg(long)]
        data_crc: bool,
        /// Start GC when this percentage of segments is in use (0..=90).
        #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(0..=90))]
        gc_percent: u8,
        /// The cache mode: writeback, writethrough, writearound, writeonly or passthrough.
        #[arg(long, value_name = "MODE", default_value = "writeback")]
        cache_mode: pcache_format::CacheMode,
        /// Print the new cache as JSON.
        #[arg(long)]
        json: bool,
        /// The shared cache device.
        device: PathBuf,
    },
    /// Remove a cache from DEVICE: refused while it is served, and while it holds dirty
    /// data unless --force. Its bytes stay until a new cache takes the range.
    Remove {
        /// The cache (its name, or its id).
        #[arg(long)]
        name: String,
        /// Remove it even though its dirty data is lost.
        #[arg(long)]
        force: bool,
        /// The shared cache device.
        device: PathBuf,
    },
    /// List the caches of DEVICE: range, backing device, who serves each; and the free
    /// space.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The shared cache device.
        device: PathBuf,
    },
    /// Print the dmsetup commands that open one cache with the kernel's dm-pcache: a
    /// dm-linear device over its range, and the pcache target over that.
    DmTable {
        /// The cache (its name, or its id).
        #[arg(long)]
        name: String,
        /// The backing device to put in the pcache table (default: the path recorded).
        #[arg(long)]
        backing: Option<PathBuf>,
        /// The shared cache device.
        device: PathBuf,
    },
}
