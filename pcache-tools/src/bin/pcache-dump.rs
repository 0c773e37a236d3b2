//! `pcache-dump DEVICE`: show everything on a pcache cache device.

use anyhow::{Context, Result};
use clap::Parser;
use pcache_tools::args::DumpArgs;
use pcache_tools::cli::{backing_size, emit, init_logging, live_warning, with_live};
use pcache_tools::dump::{self, DumpOptions};
use pcache_tools::{scan, Access, Device};
use std::process::ExitCode;

fn run(args: &DumpArgs) -> Result<String> {
    let name = args.device.display().to_string();
    let backing = match (&args.backing, args.backing_size) {
        (Some(p), _) => Some(backing_size(p).with_context(|| p.display().to_string())?),
        (None, s) => s,
    };
    let dev = match &args.name {
        Some(sel) => Device::open_cache(&args.device, sel, Access::ReadOnly),
        None => Device::open(&args.device, Access::ReadOnly),
    }
    .with_context(|| name.clone())?;
    if args.name.is_none() && pcache_tools::shared::is_shared(&dev)? {
        // A shared device: its table (each cache is shown with --name).
        let l = pcache_tools::shared::list(&args.device).with_context(|| name.clone())?;
        return Ok(if args.json {
            serde_json::to_string_pretty(&l)? + "\n"
        } else {
            pcache_tools::shared::text(&l) + "(pcache-dump --name NAME shows one cache)\n"
        });
    }
    if let Some(holder) = dev.live() {
        eprintln!("pcache-dump: {}", live_warning(&name, holder));
    }
    let opts = DumpOptions {
        keys: args.keys,
        segments: args.segments.clone(),
        max_ksets: args.max_ksets,
        backing_size: backing,
    };
    let s = scan(&dev, &opts.scan_options()).with_context(|| format!("{name}: read failed"))?;
    Ok(if args.json {
        with_live(dump::json(&s, &name), dev.live()) + "\n"
    } else {
        dump::text(&s, &name)
    })
}

fn main() -> ExitCode {
    let args = DumpArgs::parse();
    init_logging();
    let done = run(&args).and_then(|out| emit(&out).context("cannot write the output"));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, on one line.
            pcache_tools::cli::report_error("pcache-dump", &e, args.json);
            ExitCode::FAILURE
        }
    }
}
