//! `pcache-replay --cache C --backing B`: replay a cache's log exactly as the engine does
//! at start-up, without starting anything, and report what it rebuilt. `--export FILE`
//! writes the whole logical device (the backing overlaid with cached data) to a file;
//! `--writeback` writes every dirty kset back to the backing device in log order, so the
//! cache is clean. Read-only on both devices unless `--writeback`.
//!
//! `--writeback` takes both devices exclusively (pcache's claim, as the daemon does) and
//! is refused while anything else holds them. The other modes take them shared and refuse
//! a cache a writer holds unless `--force-live`, since the log they read is being written.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pcache_engine::backing::Backing;
use pcache_engine::claim::{claim_pair, Claim, ClaimError, RangeClaim};
use pcache_engine::format::shared::TableEntry;
use pcache_engine::media::{CacheMedia, DaxMedia};
use pcache_engine::shared::{identify, BackingMismatch, SharedDevice};
use pcache_engine::{Cache, CacheConfig, Status, StatusJson};
use pcache_tools::args::ReplayArgs;
use pcache_tools::cli::init_logging;
use pcache_tools::salvage;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The claims replay holds while it reads (shared) or writes back (exclusive); none when
/// `--force-live` reads a cache a writer holds.
type Claims = Option<(Held, Claim)>;

/// The claim on the cache: the whole device, or one cache's range of a shared device.
#[derive(Debug)]
enum Held {
    Whole(#[allow(dead_code)] Claim),
    Range(#[allow(dead_code)] RangeClaim),
}

/// Cache `--name` of the shared device `--cache`, from its table.
fn entry(args: &ReplayArgs, sel: &str) -> Result<TableEntry> {
    let media = DaxMedia::open(&args.cache, true)
        .with_context(|| format!("cache device {}", args.cache.display()))?;
    let dev = SharedDevice::read(&media)
        .with_context(|| format!("cache device {}", args.cache.display()))?;
    Ok(dev
        .entry(sel)
        .with_context(|| format!("cache device {}", args.cache.display()))?
        .clone())
}

/// The claims on one cache of a shared device and its backing device, after checking
/// that the backing device is the one the cache was created for.
fn claim_named(args: &ReplayArgs, e: &TableEntry) -> Result<(Held, Claim), ClaimError> {
    let range = RangeClaim::take(&args.cache, &e.name, e.start, e.len, args.writeback)?;
    let backing = if args.writeback {
        Claim::exclusive("backing", &args.backing)?
    } else {
        Claim::shared("backing", &args.backing)?
    };
    Ok((Held::Range(range), backing))
}

fn claim(args: &ReplayArgs) -> Result<Claims> {
    let taken = match &args.name {
        Some(sel) => {
            let e = entry(args, sel)?;
            let found = identify(&args.backing)
                .with_context(|| format!("backing device {}", args.backing.display()))?;
            BackingMismatch::check(&e.name, &e.backing, &found, &args.backing)?;
            claim_named(args, &e)
        }
        None => {
            claim_pair(&args.cache, &args.backing, args.writeback).map(|(c, b)| (Held::Whole(c), b))
        }
    };
    match taken {
        Ok(c) => Ok(Some(c)),
        Err(e @ (ClaimError::Busy { .. } | ClaimError::RangeBusy { .. })) if args.writeback => {
            bail!("{e}; nothing was written (stop it first: pcache-ublk del)")
        }
        Err(e @ (ClaimError::Busy { .. } | ClaimError::RangeBusy { .. })) if args.force_live => {
            eprintln!(
                "pcache-replay: warning: {e}: --force-live reads a log that is being written; \
                 what is shown or exported may be torn"
            );
            Ok(None)
        }
        Err(e @ (ClaimError::Busy { .. } | ClaimError::RangeBusy { .. })) => bail!(
            "{e}; its log is being written (pass --force-live to read it anyway, torn views \
             included)"
        ),
        Err(e) => Err(e.into()),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        b.set_style(style);
    }
    b.set_message(what.to_string());
    b
}

fn open(args: &ReplayArgs) -> Result<(Cache, Arc<dyn Backing>)> {
    let rw = args.writeback;
    // Salvage reads the cache as it is; its writeback writes the backing device only.
    let cache_rw = rw && !args.salvage;
    let device: Arc<dyn CacheMedia> = Arc::new(
        DaxMedia::open(&args.cache, !cache_rw)
            .with_context(|| format!("cache device {}", args.cache.display()))?,
    );
    // One cache of a shared device: the engine sees only its range.
    let media: Arc<dyn CacheMedia> = match &args.name {
        Some(sel) => Arc::new(SharedDevice::window(&device, &entry(args, sel)?)?),
        None => device,
    };
    let info = Cache::peek_info(&*media)
        .with_context(|| format!("cache device {}", args.cache.display()))?;
    let Some(info) = info else {
        bail!(
            "cache device {}: the cache was never initialised (no cache_info with INIT_DONE); nothing to replay",
            args.cache.display()
        );
    };
    // `--writeback` writes the whole log back: io_uring where it measured faster.
    let backing: Arc<dyn Backing> = pcache_engine::backing::open_best(&args.backing, !rw)
        .with_context(|| format!("backing device {}", args.backing.display()))?;
    let cfg = CacheConfig {
        data_crc: info.data_crc,
        queues: 1,
        gc_percent: None,
        background: false,
        read_only: !cache_rw,
        salvage: args.salvage,
        ..CacheConfig::default()
    };
    let spin = spinner("replaying the log");
    let cache = Cache::open(media, backing.clone(), cfg).with_context(|| {
        format!(
            "replaying {} over {}",
            args.cache.display(),
            args.backing.display()
        )
    });
    spin.finish_and_clear();
    Ok((cache?, backing))
}

fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner();
    s.set_message(what.to_string());
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    s
}

fn report(st: &Status, json: bool) -> String {
    let r = &st.replay;
    if json {
        // The one status document (schema, the kernel's fields, the counters, the
        // replay's stats), with the replay's figures also at the top as documented.
        let mut v = serde_json::to_value(StatusJson::new(st)).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            for (k, n) in [
                ("ksets", r.ksets),
                ("last_ksets", r.last_ksets),
                ("keys", r.keys),
                ("stale_keys", r.stale_keys),
                ("live_extents", r.extents),
                ("cached_bytes", r.cached_bytes),
            ] {
                obj.insert(k.into(), n.into());
            }
            obj.insert("status".into(), st.dmsetup_line().into());
        }
        format!("{v:#}\n")
    } else {
        format!(
            // As pcache-dump counts: the LAST ksets among the ksets.
            "replayed {} ksets ({} LAST), {} keys ({} stale)\n\
             index: {} live extents, {} bytes cached, {} bytes dirty\n\
             key_tail {}  dirty_tail {}  key_head {}  ({} of {} segments used{})\n\
             status: {}\n",
            r.ksets + r.last_ksets,
            r.last_ksets,
            r.keys,
            r.stale_keys,
            r.extents,
            r.cached_bytes,
            st.dirty_bytes,
            st.kernel.key_tail,
            st.kernel.dirty_tail,
            st.kernel.key_head,
            st.kernel.segs_used,
            st.kernel.n_segs,
            if st.is_clean() { ", clean" } else { "" },
            st.dmsetup_line()
        )
    }
}

fn export(cache: &Cache, args: &ReplayArgs, to: &Path) -> Result<()> {
    for p in [&args.cache, &args.backing] {
        if same_file(p, to) {
            bail!("--export {}: that is one of the devices", to.display());
        }
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .with_context(|| format!("--export {}", to.display()))?;
    let size = cache.size();
    let pb = bar(size, "exporting");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        // At most 1 MiB.
        #[allow(clippy::cast_possible_truncation)]
        let n = (size - off).min(buf.len() as u64) as usize;
        cache
            .read(0, off, &mut buf[..n])
            .with_context(|| format!("reading the logical device at {off:#x}"))?;
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        off += n as u64;
        pb.set_position(off);
    }
    out.sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    pb.finish_and_clear();
    Ok(())
}

fn writeback(cache: &Cache) -> Result<u64> {
    let total = cache.status().dirty_bytes;
    let pb = bar(total, "writing back");
    let mut rounds = 0u64;
    while cache.writeback_step().context("writeback")? {
        rounds += 1;
        pb.set_position(total.saturating_sub(cache.status().dirty_bytes));
    }
    pb.finish_and_clear();
    Ok(rounds)
}

fn run(args: &ReplayArgs) -> Result<(String, bool)> {
    let _claims = claim(args)?;
    let (cache, backing) = open(args)?;
    let salvaged = cache.salvage_report();
    let mut out = report(
        &cache.status(),
        args.json && (!args.writeback || args.salvage),
    );
    if args.salvage {
        if args.json {
            out = add_salvage(&out, &salvaged);
        } else {
            out += &salvage::text(&salvaged);
        }
    }
    if let Some(to) = &args.export {
        export(&cache, args, to)?;
        if !args.json {
            out += &format!("exported {} bytes to {}\n", cache.size(), to.display());
        }
    }
    if args.writeback && args.salvage {
        let pb = bar(salvage::dirty_bytes(&cache), "writing back");
        let n = salvage::write_back(&cache, &*backing, |d| pb.set_position(d))
            .context("writing the salvaged data back")?;
        pb.finish_and_clear();
        if !args.json {
            out += &format!(
                "wrote back {n} salvaged dirty bytes; the cache itself is unchanged: format it \
                 again (pcache-mkfs --force {}) before serving it\n",
                args.cache.display()
            );
        }
    } else if args.writeback {
        let steps = writeback(&cache)?;
        let st = cache.status();
        if args.json {
            out = report(&st, true);
        } else {
            out += &format!(
                "wrote back {} bytes in {steps} rounds; the cache is {}\n",
                st.written_back,
                if st.is_clean() { "clean" } else { "NOT clean" }
            );
        }
    }
    cache.close().context("closing the cache")?;
    Ok((out, salvaged.is_complete()))
}

/// The JSON report with a `salvage` object.
fn add_salvage(doc: &str, r: &pcache_engine::salvage::SalvageReport) -> String {
    match serde_json::from_str::<serde_json::Value>(doc) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("salvage".into(), salvage::json(r));
            format!("{:#}\n", serde_json::Value::Object(m))
        }
        _ => doc.to_owned(),
    }
}

fn main() -> ExitCode {
    let args = ReplayArgs::parse();
    init_logging();
    match run(&args) {
        Ok((out, complete)) => {
            print!("{out}");
            if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(salvage::EXIT_SKIPPED)
            }
        }
        Err(e) => {
            pcache_tools::cli::report_error("pcache-replay", &e, args.json);
            ExitCode::FAILURE
        }
    }
}
