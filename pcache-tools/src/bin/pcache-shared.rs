//! `pcache-shared`: one cache device for several backing devices.

use anyhow::{Context, Result};
use clap::Parser;
use pcache_tools::args::{SharedArgs, SharedCommand};
use pcache_tools::cli::{emit, init_logging, report_error};
use pcache_tools::shared::{self, CreateOptions};
use std::process::ExitCode;

fn run(args: &SharedArgs) -> Result<String> {
    match &args.command {
        SharedCommand::Format { force, device } => {
            let name = device.display().to_string();
            let d = shared::format(device, *force).with_context(|| name.clone())?;
            let free = d
                .table()
                .map(|t| t.free(d.device_bytes))
                .unwrap_or_default();
            let bytes: u64 = free.iter().map(|&(_, n)| n).sum();
            Ok(format!(
                "{name}: formatted a shared cache device of {} bytes ({bytes} bytes free for caches)\n",
                d.device_bytes
            ))
        }
        SharedCommand::Create {
            name,
            size,
            backing,
            data_crc,
            gc_percent,
            cache_mode,
            json,
            device,
        } => {
            let dev = device.display().to_string();
            let opts = CreateOptions {
                name: name.clone(),
                size: *size,
                data_crc: *data_crc,
                gc_percent: *gc_percent,
                cache_mode: *cache_mode,
            };
            let e = shared::create(device, backing, &opts).with_context(|| dev.clone())?;
            if *json {
                let l = shared::list(device).with_context(|| dev.clone())?;
                let c = l.caches.into_iter().find(|c| c.id == e.id);
                return Ok(serde_json::to_string_pretty(&c)? + "\n");
            }
            Ok(format!(
                "{dev}: created cache {} (id {}): {} bytes at {:#x}, for backing {} ({} bytes{})\n\
                 serve it with: pcache-ublk add --cache {dev} --name {} --backing {}\n",
                e.name,
                e.id,
                e.len,
                e.start,
                backing.display(),
                e.backing.size,
                if e.backing.id.is_empty() {
                    String::new()
                } else {
                    format!(", {}", e.backing.id)
                },
                e.name,
                backing.display()
            ))
        }
        SharedCommand::Remove {
            name,
            force,
            device,
        } => {
            let dev = device.display().to_string();
            let e = shared::remove(device, name, *force).with_context(|| dev.clone())?;
            Ok(format!(
                "{dev}: removed cache {} (id {}); {} bytes at {:#x} are free\n",
                e.name, e.id, e.len, e.start
            ))
        }
        SharedCommand::List { json, device } => {
            let dev = device.display().to_string();
            let l = shared::list(device).with_context(|| dev.clone())?;
            Ok(if *json {
                serde_json::to_string_pretty(&l)? + "\n"
            } else {
                shared::text(&l)
            })
        }
        SharedCommand::DmTable {
            name,
            backing,
            device,
        } => {
            let dev = device.display().to_string();
            let media =
                pcache_engine::media::DaxMedia::open(device, true).with_context(|| dev.clone())?;
            let d =
                pcache_engine::shared::SharedDevice::read(&media).with_context(|| dev.clone())?;
            let e = d.entry(name).with_context(|| dev.clone())?.clone();
            let window = pcache_engine::shared::SharedDevice::window(
                &(std::sync::Arc::new(media)
                    as std::sync::Arc<dyn pcache_engine::media::CacheMedia>),
                &e,
            )?;
            let crc = pcache_engine::Cache::peek_info(&window)
                .ok()
                .flatten()
                .is_some_and(|i| i.data_crc);
            let b = backing
                .as_ref()
                .map_or_else(|| e.backing.path.clone(), |p| p.display().to_string());
            Ok(shared::dm_tables(&dev, &e, &b, crc))
        }
    }
}

fn main() -> ExitCode {
    let args = SharedArgs::parse();
    init_logging();
    let json = matches!(
        args.command,
        SharedCommand::List { json: true, .. } | SharedCommand::Create { json: true, .. }
    );
    match run(&args).and_then(|out| emit(&out).context("cannot write the output")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error("pcache-shared", &e, json);
            ExitCode::FAILURE
        }
    }
}
