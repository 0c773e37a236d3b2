//! `pcache-mkfs DEVICE`: write a fresh pcache cache, exactly as the kernel's first
//! activation would.

use clap::Parser;
use pcache_format::fresh::Step;
use pcache_tools::cli::{emit, one_line};
use pcache_tools::mkfs::{self, MkfsOptions, Progress};
use pcache_tools::{Access, Device};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Format a cache device (a DAX block device, a DAX character device or a file) for
/// dm-pcache and pcache.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Keys carry a CRC of their data (the table option `data_crc true`).
    #[arg(long)]
    data_crc: bool,
    /// Start GC when this percentage of segments is in use (0..=90).
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(0..=90))]
    gc_percent: u8,
    /// Overwrite a device that holds a cache, a filesystem or other data.
    #[arg(long)]
    force: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
    /// The cache device.
    device: PathBuf,
}

fn run(args: &Args) -> Result<mkfs::Geometry, String> {
    let name = args.device.display().to_string();
    let fail = |e: &(dyn std::error::Error + 'static)| format!("{name}: {}", one_line(e));
    let mut dev = Device::open(&args.device, Access::ReadWrite).map_err(|e| fail(&e))?;
    let opts = MkfsOptions {
        data_crc: args.data_crc,
        gc_percent: args.gc_percent,
        force: args.force,
    };
    let geometry = mkfs::preflight(&dev, &opts).map_err(|e| fail(&e))?;
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
    mkfs::write_fresh(&mut dev, &geometry, &mut progress).map_err(|e| fail(&e))?;
    Ok(geometry)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(g) => {
            if !args.quiet {
                let line = format!(
                    "{}: wrote a pcache cache of {} segments (16 MiB each) on {} bytes{}; \
                     data_crc {}, gc_percent {}, cache_info flags {:#x}; {} bytes unused at \
                     the end",
                    args.device.display(),
                    g.seg_num,
                    g.device_size,
                    if g.capped {
                        " (capped at the kernel's maximum of 1048576)"
                    } else {
                        ""
                    },
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
            eprintln!("pcache-mkfs: {e}");
            ExitCode::FAILURE
        }
    }
}
