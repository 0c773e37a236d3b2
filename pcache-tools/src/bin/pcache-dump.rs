//! `pcache-dump DEVICE`: show everything on a pcache cache device.

use clap::Parser;
use pcache_tools::args::DumpArgs;
use pcache_tools::cli::{backing_size, emit, init_logging, live_warning, one_line, with_live};
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::{scan, Access, Device};
use std::process::ExitCode;

fn run(args: &DumpArgs) -> Result<String, String> {
    let name = args.device.display().to_string();
    let backing = match (&args.backing, args.backing_size) {
        (Some(p), _) => Some(backing_size(p)?),
        (None, s) => s,
    };
    let dev = Device::open(&args.device, Access::ReadOnly)
        .map_err(|e| format!("{name}: {}", one_line(&e)))?;
    if let Some(holder) = dev.live() {
        eprintln!("pcache-dump: {}", live_warning(&name, holder));
    }
    let opts = DumpOptions {
        keys: args.keys,
        segments: args.segments.clone(),
        max_ksets: args.max_ksets,
        backing_size: backing,
    };
    let s = scan(&dev, &opts.scan_options()).map_err(|e| format!("{name}: read failed: {e}"))?;
    Ok(if args.json {
        with_live(dump::json(&s, &name), dev.live()) + "\n"
    } else {
        dump::text(&s, &name)
    })
}

fn main() -> ExitCode {
    let args = DumpArgs::parse();
    init_logging();
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
