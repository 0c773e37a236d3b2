//! `pcache-dump DEVICE`: show everything on a pcache cache device.

use clap::Parser;
use pcache_tools::cli::{backing_size, emit, one_line, parse_range, parse_size};
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::{scan, Access, Device};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show the superblock, both copies of every dual record, the segment chain, the kset log
/// and (with --keys) every key of a pcache cache device. Never writes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Show every key of each kset shown.
    #[arg(long)]
    keys: bool,
    /// Show only these cache segments and the ksets stored in them: N, A..B, A..=B, A..
    #[arg(long, value_parser = parse_range)]
    segments: Option<Range<u32>>,
    /// Show at most this many ksets.
    #[arg(long)]
    max_ksets: Option<u64>,
    /// Size of the backing device (bytes, or with K/M/G/T), to check key bounds.
    #[arg(long, value_parser = parse_size, conflicts_with = "backing")]
    backing_size: Option<u64>,
    /// The backing device, to check key bounds against its size (opened read-only).
    #[arg(long)]
    backing: Option<PathBuf>,
    /// The cache device (opened read-only).
    device: PathBuf,
}

fn run(args: &Args) -> Result<String, String> {
    let name = args.device.display().to_string();
    let backing = match (&args.backing, args.backing_size) {
        (Some(p), _) => Some(backing_size(p)?),
        (None, s) => s,
    };
    let dev = Device::open(&args.device, Access::ReadOnly)
        .map_err(|e| format!("{name}: {}", one_line(&e)))?;
    let opts = DumpOptions {
        keys: args.keys,
        segments: args.segments.clone(),
        max_ksets: args.max_ksets,
        backing_size: backing,
    };
    let s = scan(&dev, &opts.scan_options()).map_err(|e| format!("{name}: read failed: {e}"))?;
    Ok(if args.json {
        dump::json(&s, &name) + "\n"
    } else {
        dump::text(&s, &name)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => match emit(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pcache-dump: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("pcache-dump: {e}");
            ExitCode::FAILURE
        }
    }
}
