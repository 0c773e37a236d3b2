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
    if let Some(sel) = &args.name {
        let dev = Device::open_cache(&args.device, sel, access).with_context(|| name.clone())?;
        let label = format!(
            "{name} (cache {})",
            dev.cache().map_or(sel.as_str(), |e| &e.name)
        );
        return check_one(args, dev, &label, &opts);
    }
    // A repair takes the cache exclusively (refused while anything else holds it); a
    // check takes it shared, and goes on with a warning if a writer holds it.
    let dev = Device::open(&args.device, access).with_context(|| name.clone())?;
    if pcache_tools::shared::is_shared(&dev)? {
        drop(dev);
        return check_shared(args, &opts);
    }
    check_one(args, dev, &name, &opts)
}

/// A shared device: the table, then every cache in turn (each read through its range,
/// with its own claim); the exit code is the union of theirs.
fn check_shared(args: &FsckArgs, opts: &FsckOptions) -> Result<(String, i32)> {
    let name = args.device.display().to_string();
    let media =
        pcache_engine::media::DaxMedia::open(&args.device, true).with_context(|| name.clone())?;
    let shared = pcache_engine::shared::SharedDevice::read(&media);
    let (mut out, mut code) = (String::new(), exit::CLEAN);
    let shared = match shared {
        Ok(s) => s,
        Err(e) => {
            return Ok((
                format!("{name}: shared cache device: {e}\n"),
                exit::UNCORRECTED,
            ))
        }
    };
    let table = match shared.table() {
        Ok(t) => t.clone(),
        Err(e) => return Ok((format!("{name}: cache table: {e}\n"), exit::UNCORRECTED)),
    };
    for (i, slot) in shared.copies.slots.iter().enumerate() {
        if let Err(e) = slot {
            if opts.repair {
                pcache_tools::shared::rewrite_table(&args.device)
                    .with_context(|| format!("{name}: rewriting cache table copy {i}"))?;
                out += &format!(
                    "{name}: cache table copy {i} was damaged ({e}): rewritten from the other\n"
                );
                code |= exit::CORRECTED;
            } else {
                out += &format!(
                    "{name}: warning: cache table copy {i} is damaged ({e}); the next table update, or pcache-fsck -y, rewrites it\n"
                );
            }
        }
    }
    out += &format!(
        "{name}: shared cache device, cache table seq {}: {} cache(s), ranges inside the device and apart\n",
        table.seq,
        table.entries.len()
    );
    let access = if opts.repair {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let mut docs = Vec::new();
    for e in &table.entries {
        let label = format!("{name} (cache {})", e.name);
        let dev = Device::open_cache(&args.device, &e.id.to_string(), access)
            .with_context(|| label.clone())?;
        let mut one = *opts;
        one.backing_size = one.backing_size.or(Some(e.backing.size));
        let (o, c) = check_one(args, dev, &label, &one)?;
        code |= c;
        if args.json {
            docs.push(serde_json::json!({
                "name": e.name,
                "id": e.id,
                "report": serde_json::from_str::<serde_json::Value>(&o)?,
            }));
        } else {
            out += &o;
        }
    }
    if args.json {
        let warnings: Vec<String> = out.lines().map(str::to_owned).collect();
        let doc = serde_json::json!({
            "schema": pcache_engine::JSON_SCHEMA,
            "device": name,
            "shared": true,
            "table_seq": table.seq,
            "messages": warnings,
            "caches": docs,
            "exit_code": code,
        });
        return Ok((serde_json::to_string_pretty(&doc)? + "\n", code));
    }
    Ok((out, code))
}

fn check_one(
    args: &FsckArgs,
    mut dev: Device,
    name: &str,
    opts: &FsckOptions,
) -> Result<(String, i32)> {
    let repair = opts.repair;
    if let Some(holder) = dev.live() {
        eprintln!("pcache-fsck: {}", live_warning(name, holder));
    }
    tracing::info!(device = %name, repair, "checking");
    let live = dev.live().cloned();
    let entry = dev.cache().cloned();
    let bar = byte_spinner("checking", false);
    let mut metered = Metered::new(&mut dev, bar.clone());
    let report = if repair {
        fsck::check_and_repair(&mut metered, opts).with_context(|| name.to_owned())?
    } else {
        fsck::check(&metered, opts).with_context(|| format!("{name}: read failed"))?
    };
    bar.finish_and_clear();
    let mut report = report;
    // The second verdict: would pcache's own replay load it?
    if report.status.is_some() || report.kernel_refuses {
        let size = fsck::verdict::backing_size(opts.backing_size, report.max_key_end);
        let refuses = match &entry {
            Some(e) => fsck::verdict::pcache_refuses_in(&args.device, e, size),
            None => fsck::verdict::pcache_refuses(&args.device, size),
        };
        fsck::verdict::apply(&mut report, refuses);
    }
    let mut out = if args.json {
        with_live(fsck::json(&report, name), live.as_ref()) + "\n"
    } else {
        fsck::text(&report, name)
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
