//! `pcache-fsck DEVICE`: check a pcache cache device; exit codes follow fsck(8).

use clap::Parser;
use pcache_tools::cli::{backing_size, emit, one_line, parse_size};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::{Access, Device};
use std::path::PathBuf;
use std::process::ExitCode;

/// Check a pcache cache device: everything the kernel checks on activation, and more.
/// Read-only unless --repair. Exit status: 0 clean, 1 corrected, 4 errors left, 8
/// operational error, 16 usage error.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Rewrite each damaged copy of a dual record from its good twin (nothing else).
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Do not read key data to verify data CRCs.
    #[arg(long)]
    no_data_crc: bool,
    /// Size of the backing device (bytes, or with K/M/G/T), to check key bounds.
    #[arg(long, value_parser = parse_size, conflicts_with = "backing")]
    backing_size: Option<u64>,
    /// The backing device, to check key bounds against its size (opened read-only).
    #[arg(long)]
    backing: Option<PathBuf>,
    /// The cache device (opened read-only unless --repair).
    device: PathBuf,
}

fn run(args: &Args) -> Result<(String, i32), String> {
    let name = args.device.display().to_string();
    let backing = match (&args.backing, args.backing_size) {
        (Some(p), _) => Some(backing_size(p)?),
        (None, s) => s,
    };
    let opts = FsckOptions {
        repair: args.repair,
        backing_size: backing,
        verify_data_crc: !args.no_data_crc,
    };
    let access = if args.repair {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let mut dev =
        Device::open(&args.device, access).map_err(|e| format!("{name}: {}", one_line(&e)))?;
    let report = if args.repair {
        fsck::check_and_repair(&mut dev, &opts).map_err(|e| format!("{name}: {}", one_line(&e)))?
    } else {
        fsck::check(&dev, &opts).map_err(|e| format!("{name}: read failed: {e}"))?
    };
    let out = if args.json {
        fsck::json(&report, &name) + "\n"
    } else {
        fsck::text(&report, &name)
    };
    Ok((out, report.exit_code))
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(u8::MAX))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return code(if usage { exit::USAGE } else { exit::CLEAN });
        }
    };
    match run(&args) {
        Ok((out, c)) => match emit(&out) {
            Ok(()) => code(c),
            Err(e) => {
                eprintln!("pcache-fsck: {e}");
                code(c | exit::OPERATIONAL)
            }
        },
        Err(e) => {
            eprintln!("pcache-fsck: {e}");
            code(exit::OPERATIONAL)
        }
    }
}
