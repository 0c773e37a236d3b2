//! `pcache-mkfs DEVICE`: write a fresh pcache cache, exactly as the kernel's first
//! activation would.

use anyhow::{Context, Result};
use clap::Parser;
use pcache_format::fresh::Step;
use pcache_tools::args::MkfsArgs;
use pcache_tools::cli::{emit, init_logging};
use pcache_tools::mkfs::{self, MkfsOptions, Progress};
use pcache_tools::{Access, Device};
use std::io::IsTerminal;
use std::process::ExitCode;

fn run(args: &MkfsArgs) -> Result<mkfs::Geometry> {
    let name = || args.device.display().to_string();
    let mut dev = match &args.name {
        Some(sel) => Device::open_cache(&args.device, sel, Access::ReadWrite),
        None => Device::open(&args.device, Access::ReadWrite),
    }
    .with_context(name)?;
    let opts = MkfsOptions {
        data_crc: args.data_crc,
        gc_percent: args.gc_percent,
        cache_mode: args.cache_mode,
        force: args.force,
    };
    let geometry = mkfs::preflight(&dev, &opts).with_context(name)?;
    let bar = (!args.quiet && std::io::stderr().is_terminal() && geometry.seg_num >= 64)
        .then(|| indicatif::ProgressBar::new(u64::from(geometry.seg_num)));
    let mut progress = |p: Progress| {
        if let Some(bar) = &bar {
            match p {
                Progress::Advance { done } => bar.set_position(done),
                Progress::Durable(Step::Segments) => bar.finish_and_clear(),
                _ => {}
            }
        }
    };
    mkfs::write_fresh(&mut dev, &geometry, &mut progress).with_context(name)?;
    Ok(geometry)
}

fn main() -> ExitCode {
    let args = MkfsArgs::parse();
    init_logging();
    match run(&args) {
        Ok(g) => {
            if !args.quiet {
                let line = format!(
                    "{}: wrote a pcache cache of {} segments (16 MiB each) on {} bytes{}; \
                     mode {}, data_crc {}, gc_percent {}, cache_info flags {:#x}; {} bytes \
                     unused at the end",
                    args.device.display(),
                    g.seg_num,
                    g.device_size,
                    if g.capped {
                        " (capped at the kernel's maximum of 1048576)"
                    } else {
                        ""
                    },
                    g.cache_mode,
                    if g.data_crc { "on" } else { "off" },
                    g.gc_percent,
                    g.cache_info_flags,
                    g.unused_tail
                );
                // The cache is written; a lost message does not change that.
                let _ = emit(&(line + "\n"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The whole chain, on one line.
            eprintln!("pcache-mkfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
