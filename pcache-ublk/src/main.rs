//! `pcache-ublk`: serves a pcache (cache device + backing device) as `/dev/ublkbN`.
//!
//! See `docs/operations.md` for how to run it.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pcache_ublk::cli::{AddArgs, Backend, Cli, Command, DaemonArgs, RecoverArgs};
use pcache_ublk::daemon::{self, Lifecycle, Mode, PipeReporter, Plan, PrintReporter, Reporter};
use pcache_ublk::notify::Notifier;
use pcache_ublk::{client, error, restart};

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs a daemon in this process (foreground, or the detached child of `add`).
fn run_daemon(plan: Plan, opts: &DaemonArgs) -> anyhow::Result<()> {
    let reporter: Box<dyn Reporter> = if opts.daemon_child {
        Box::new(PipeReporter)
    } else {
        Box::new(PrintReporter)
    };
    // Only the process the service manager started notifies it (a foreground daemon):
    // the detached child of a plain `add` is not the service's main process.
    let notifier = if opts.daemon_child {
        Notifier::disabled()
    } else {
        Notifier::from_env()
    };
    if opts.daemon_child {
        client::detach_session();
    }
    let life = Lifecycle::with_notifier(reporter, notifier);
    daemon::handle_signals(&life)?;
    tracing::info!(
        pid = std::process::id(),
        ?plan,
        notify = notifier.enabled(),
        "pcache-ublk daemon starting"
    );
    notifier.status(&starting_status(&plan));
    let res = daemon::serve(plan, &life);
    match &res {
        Ok(()) => notifier.stopping("stopped; dirty data stays in the cache"),
        Err(e) => notifier.stopping(&format!("failed: {}", error::chain(e))),
    }
    res.map_err(|e| {
        tracing::error!(error = %error::chain(&e), "daemon failed");
        anyhow::Error::new(e)
    })
}

/// The service manager's `STATUS=` while the daemon starts.
fn starting_status(plan: &Plan) -> String {
    let what = match &plan.backend {
        Backend::Cache {
            cache,
            name,
            backing,
            ..
        } => format!(
            "replaying cache {}{} (backing {})",
            cache.display(),
            name.as_ref().map(|n| format!(":{n}")).unwrap_or_default(),
            backing.display()
        ),
        Backend::Ram { size } => format!("RAM target of {size} bytes"),
    };
    match plan.mode {
        Mode::Recover { id } => format!("recovering ublk device {id}: {what}"),
        Mode::Add { .. } => format!("starting: {what}"),
    }
}

/// Either runs the daemon here, or starts it detached and prints what it reports.
fn start(plan: Plan, opts: &DaemonArgs) -> anyhow::Result<()> {
    if opts.foreground || opts.daemon_child {
        return run_daemon(plan, opts);
    }
    let log = opts
        .log_file
        .clone()
        .unwrap_or_else(client::default_log_file);
    let (id, path) = client::start_detached(&log)?;
    println!("{id} {path}");
    Ok(())
}

fn add(a: &AddArgs) -> anyhow::Result<()> {
    let backend = a.validate()?;
    let mode = match a.id {
        Some(id) if a.recover_if_exists => {
            let mode = restart::decide(id, restart::probe(id)?.as_ref(), &backend)?;
            if mode == (Mode::Recover { id }) {
                tracing::warn!(
                    id,
                    "ublk device {id} exists and its daemon died: recovering it"
                );
            }
            mode
        }
        id => Mode::Add { id },
    };
    let plan = Plan {
        mode,
        backend,
        queues: a.queues(),
        depth: a.depth,
        workers: a.daemon.workers,
        no_user_copy: a.daemon.no_user_copy,
        zero_copy: a.daemon.zero_copy,
        tuning: a.tuning(),
    };
    start(plan, &a.daemon)
}

fn recover(r: &RecoverArgs) -> anyhow::Result<()> {
    let plan = Plan {
        mode: Mode::Recover { id: r.id },
        backend: Backend::Cache {
            cache: r.devices.cache.clone(),
            name: r.devices.name.clone(),
            range: None,
            backing: r.devices.backing.clone(),
            data_crc: None,
        },
        queues: 1,
        depth: 1,
        workers: r.daemon.workers,
        no_user_copy: r.daemon.no_user_copy,
        zero_copy: r.daemon.zero_copy,
        tuning: pcache_ublk::engine::Tuning::default(),
    };
    start(plan, &r.daemon)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Add(a) => add(a),
        Command::Recover(r) => recover(r),
        Command::Del(d) => {
            if d.flush {
                // Until nothing is dirty: writes may come in while it flushes.
                for _ in 0..10 {
                    if flush(d.id, true).with_context(|| format!("del -n {} --flush", d.id))? == 0 {
                        break;
                    }
                }
            }
            client::del(d.id, d.force).with_context(|| format!("del -n {}", d.id))?;
            Ok(())
        }
        Command::Flush(f) => {
            flush(f.id, f.wait).with_context(|| format!("flush -n {}", f.id))?;
            Ok(())
        }
        Command::List(l) => {
            let rows = client::list_devices();
            if l.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", client::format_list(&rows));
            }
            Ok(())
        }
        Command::Status(s) => {
            let v = client::status(s.id).inspect_err(|e| {
                if s.json {
                    // A program reading stdout still gets a document.
                    let doc = serde_json::json!({
                        "schema": pcache_engine::JSON_SCHEMA,
                        "error": error::chain(e),
                    });
                    println!("{doc}");
                }
            })?;
            if s.json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                print!("{}", client::format_status(&v));
            }
            Ok(())
        }
        Command::Set(s) => {
            client::set(s.id, &s.key, &s.value)?;
            Ok(())
        }
    }
}

/// `flush` (and `del --flush`): with `wait`, one progress line on stderr every half
/// second (dirty bytes left and the writeback rate), then `clean` or what is left.
/// Returns the dirty bytes left.
fn flush(id: u32, wait: bool) -> anyhow::Result<u64> {
    let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let start = std::time::Instant::now();
    let mut first: Option<u64> = None;
    let tty = std::io::stderr().is_terminal();
    let v = client::flush(id, wait, &mut |v| {
        let wb = get(v, "written_back").unwrap_or(0);
        let base = *first.get_or_insert(wb);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_precision_loss)]
        let rate = (wb - base.min(wb)) as f64 / secs / f64::from(1 << 20);
        let line = format!(
            "flushing device {id}: {} dirty bytes left, {rate:.1} MiB/s",
            get(v, "dirty_bytes").unwrap_or(0)
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    })?;
    if wait {
        if tty {
            eprintln!();
        }
        let left = get(&v, "dirty_bytes").unwrap_or(0);
        if left == 0 {
            eprintln!("device {id}: flushed, the cache is clean");
        } else {
            eprintln!("device {id}: flushed what was dirty; {left} bytes written since are dirty");
        }
    }
    Ok(get(&v, "dirty_bytes").unwrap_or(0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = match &cli.command {
        Command::Add(a) => a.daemon.foreground || a.daemon.daemon_child,
        Command::Recover(r) => r.daemon.foreground || r.daemon.daemon_child,
        _ => false,
    };
    init_logging(if is_daemon { "info" } else { "warn" });
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcache-ublk: {e:#}");
            ExitCode::FAILURE
        }
    }
}
