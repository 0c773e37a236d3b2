//! `pcache-fsck DEVICE`: check a pcache cache device; exit codes follow fsck(8).

use anyhow::{Context, Result};
use clap::Parser;
use pcache_tools::args::FsckArgs;
use pcache_tools::cli::{backing_size, emit, init_logging, live_warning, with_live};
use pcache_tools::fsck::{self, exit, FsckOptions};
use pcache_tools::progress::{byte_spinner, Metered};
use pcache_tools::{Access, Device};
use std::process::ExitCode;

fn run(args: &FsckArgs) -> Result<(String, i32)> {
    let name = args.device.display().to_string();
    let backing = match (&args.backing, args.backing_size) {
        (Some(p), _) => Some(backing_size(p).with_context(|| p.display().to_string())?),
        (None, s) => s,
    };
    let repair = args.repair || args.preen;
    let opts = FsckOptions {
        repair,
        backing_size: backing,
        verify_data_crc: !args.no_data_crc,
    };
    let access = if repair {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    // A repair takes the cache exclusively (refused while anything else holds it); a
    // check takes it shared, and goes on with a warning if a writer holds it.
    let mut dev = Device::open(&args.device, access).with_context(|| name.clone())?;
    if let Some(holder) = dev.live() {
        eprintln!("pcache-fsck: {}", live_warning(&name, holder));
    }
    tracing::info!(device = %name, repair, "checking");
    let live = dev.live().cloned();
    let bar = byte_spinner("checking", false);
    let mut metered = Metered::new(&mut dev, bar.clone());
    let report = if repair {
        fsck::check_and_repair(&mut metered, &opts).with_context(|| name.clone())?
    } else {
        fsck::check(&metered, &opts).with_context(|| format!("{name}: read failed"))?
    };
    bar.finish_and_clear();
    let mut report = report;
    // The second verdict: would pcache's own replay load it?
    if report.status.is_some() || report.kernel_refuses {
        let size = fsck::verdict::backing_size(backing, report.max_key_end);
        fsck::verdict::apply(
            &mut report,
            fsck::verdict::pcache_refuses(&args.device, size),
        );
    }
    let mut out = if args.json {
        with_live(fsck::json(&report, &name), live.as_ref()) + "\n"
    } else {
        fsck::text(&report, &name)
    };
    if args.preen && !args.json && report.exit_code & exit::UNCORRECTED != 0 {
        out += &format!(
            "{name}: UNEXPECTED INCONSISTENCY; RUN pcache-fsck MANUALLY (without -p or -a)\n"
        );
    }
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
    init_logging();
    match run(&args) {
        Ok((out, c)) => match emit(&out).context("cannot write the output") {
            Ok(()) => code(c),
            Err(e) => {
                pcache_tools::cli::report_error("pcache-fsck", &e, args.json);
                code(c | exit::OPERATIONAL)
            }
        },
        Err(e) => {
            // The whole chain, on one line.
            pcache_tools::cli::report_error("pcache-fsck", &e, args.json);
            code(exit::OPERATIONAL)
        }
    }
}
