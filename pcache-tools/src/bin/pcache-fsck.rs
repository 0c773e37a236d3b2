//! `pcache-fsck DEVICE`: check a pcache cache device; exit codes follow fsck(8).

use clap::Parser;
use pcache_tools::args::FsckArgs;
use pcache_tools::cli::{backing_size, emit, one_line};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::{Access, Device};
use std::process::ExitCode;

fn run(args: &FsckArgs) -> Result<(String, i32), String> {
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
    let args = match FsckArgs::try_parse() {
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
