//! The daemon's lifecycle: who is told when the device is live (a [`Reporter`]), and
//! what a stop request does at each point of the daemon's life ([`Lifecycle`]): before
//! the ublk device is live it is remembered and honoured as soon as the device starts;
//! once live, the device is stopped (STOP_DEV), which drains the queues and lets
//! `daemon::serve` close the target. A [`Notifier`] tells a service manager the same
//! (`READY=1` right after the reporter's report, `STOPPING=1` when a stop starts).

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libublk::ctrl::UblkCtrl;

use crate::daemon::bdev_path;
use crate::error::{describe_ublk, Error};
use crate::notify::Notifier;
use crate::rpc;

/// Where the outcome of starting goes: the terminal, or the parent that spawned us.
pub trait Reporter: Send {
    /// The device is live.
    fn live(&mut self, dev_id: u32, path: &str);
    /// Starting failed.
    fn failed(&mut self, err: &Error);
}

/// Prints `ID PATH` on stdout (foreground mode).
#[derive(Debug, Default)]
pub struct PrintReporter;

impl Reporter for PrintReporter {
    fn live(&mut self, dev_id: u32, path: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{dev_id} {path}");
        let _ = out.flush();
    }
    fn failed(&mut self, _err: &Error) {
        // The caller prints the error.
    }
}

/// What a detached daemon tells the `add` that spawned it: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartReport {
    /// Whether the device is live.
    pub ok: bool,
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_id: Option<u32>,
    /// `/dev/ublkbN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why starting failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes a [`StartReport`] on stdout, then points stdout at /dev/null so the parent's
/// pipe reaches end-of-file (daemon-child mode).
#[derive(Debug, Default)]
pub struct PipeReporter;

impl PipeReporter {
    fn send(report: &StartReport) {
        let line = serde_json::to_string(report).unwrap_or_default();
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        match std::fs::OpenOptions::new().write(true).open("/dev/null") {
            Ok(null) => {
                if let Err(e) = nix::unistd::dup2_stdout(&null) {
                    tracing::warn!(error = %e, "cannot detach stdout");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open /dev/null"),
        }
    }
}

impl Reporter for PipeReporter {
    fn live(&mut self, dev_id: u32, path: &str) {
        Self::send(&StartReport {
            ok: true,
            dev_id: Some(dev_id),
            path: Some(path.to_owned()),
            error: None,
        });
    }
    fn failed(&mut self, err: &Error) {
        Self::send(&StartReport {
            ok: false,
            dev_id: None,
            path: None,
            error: Some(crate::error::chain(err)),
        });
    }
}

/// Where the daemon is in its life; decides what a stop request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Claiming devices, opening the target: no ublk device yet.
    Preparing,
    /// The ublk device exists but is not live yet.
    Starting(u32),
    /// Serving.
    Live(u32),
    /// Stopping (the stop command has been sent for this device).
    Stopping(u32),
}

struct LifeInner {
    phase: Phase,
    stop_pending: bool,
    reporter: Option<Box<dyn Reporter>>,
    server: Option<rpc::Server>,
}

/// Shared between the main thread, the signal thread, the control socket and libublk's
/// "device is live" callback.
pub struct Lifecycle {
    inner: Mutex<LifeInner>,
    notifier: Notifier,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("Lifecycle")
            .field("phase", &g.phase)
            .field("stop_pending", &g.stop_pending)
            .field("notifier", &self.notifier)
            .finish()
    }
}

/// Sends STOP_DEV for `dev_id` from a thread of its own (libublk's control ring is per
/// thread, and the stop may wait for in-flight requests).
fn kill_device(dev_id: u32) {
    let spawned = std::thread::Builder::new()
        .name("pcache-stop".into())
        .spawn(move || {
            let Ok(id) = i32::try_from(dev_id) else {
                return;
            };
            match UblkCtrl::new_simple(id).and_then(|c| c.kill_dev()) {
                Ok(r) if r < 0 => {
                    tracing::error!(dev_id, errno = -r, "stopping the ublk device failed");
                }
                Ok(_) => tracing::info!(dev_id, "ublk device stopped"),
                Err(e) => {
                    tracing::error!(dev_id, error = %describe_ublk(&e), "stopping the ublk device failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot spawn the stop thread");
    }
}

impl Lifecycle {
    /// A new lifecycle reporting to `reporter`, and to no service manager.
    pub fn new(reporter: Box<dyn Reporter>) -> Arc<Self> {
        Self::with_notifier(reporter, Notifier::disabled())
    }

    /// A new lifecycle reporting to `reporter`, and to the service manager through
    /// `notifier` once the report is made.
    pub fn with_notifier(reporter: Box<dyn Reporter>, notifier: Notifier) -> Arc<Self> {
        Arc::new(Lifecycle {
            inner: Mutex::new(LifeInner {
                phase: Phase::Preparing,
                stop_pending: false,
                reporter: Some(reporter),
                server: None,
            }),
            notifier,
        })
    }

    /// The service manager's notifier.
    pub fn notifier(&self) -> Notifier {
        self.notifier
    }

    fn lock(&self) -> MutexGuard<'_, LifeInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the daemon to stop: at once if the device is live, as soon as it is otherwise.
    pub fn request_stop(&self) {
        let mut g = self.lock();
        match g.phase {
            Phase::Preparing | Phase::Starting(_) => {
                tracing::info!("stop requested while starting; stopping once started");
                g.stop_pending = true;
            }
            Phase::Live(id) => {
                tracing::info!(dev_id = id, "stopping");
                g.phase = Phase::Stopping(id);
                self.notifier.stopping(&format!(
                    "stopping {}: closing the cache (dirty data stays in it)",
                    bdev_path(id)
                ));
                kill_device(id);
            }
            Phase::Stopping(id) => {
                // Stopping is idempotent in the driver; a repeated request retries it.
                tracing::info!(dev_id = id, "stop requested again; resending");
                kill_device(id);
            }
        }
    }

    /// Whether a stop was requested before the device went live.
    pub fn stop_pending(&self) -> bool {
        self.lock().stop_pending
    }

    pub(crate) fn created(&self, dev_id: u32) {
        self.lock().phase = Phase::Starting(dev_id);
    }

    /// Called once the device is live: reports it, then tells the service manager
    /// (`READY=1`); or stops it if a stop is pending.
    pub(crate) fn went_live(&self, dev_id: u32, server: Option<rpc::Server>) {
        let mut g = self.lock();
        g.server = server;
        let reporter = g.reporter.take();
        if g.stop_pending {
            g.phase = Phase::Stopping(dev_id);
            drop(g);
            if let Some(mut r) = reporter {
                r.failed(&Error::Interrupted);
            }
            self.notifier
                .stopping("stop requested while starting; stopping");
            kill_device(dev_id);
            return;
        }
        g.phase = Phase::Live(dev_id);
        drop(g);
        let path = bdev_path(dev_id);
        if let Some(mut r) = reporter {
            r.live(dev_id, &path);
        }
        self.notifier.ready(dev_id, &path);
    }

    /// Reports a failure to start, unless the outcome was reported already.
    pub fn report_failure(&self, err: &Error) {
        let reporter = self.lock().reporter.take();
        if let Some(mut r) = reporter {
            r.failed(err);
        }
    }

    pub(crate) fn drop_server(&self) {
        let server = self.lock().server.take();
        drop(server);
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread it spawns
/// later) and turns the first two into [`Lifecycle::request_stop`] on a dedicated thread
/// (a hangup is ignored: the daemon outlives the terminal that started it).
///
/// # Errors
/// [`Error::Process`] if the mask cannot be set or the thread cannot be spawned.
pub fn handle_signals(life: &Arc<Lifecycle>) -> Result<(), Error> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(crate::error::process("cannot block signals"))?;
    let life = Arc::clone(life);
    std::thread::Builder::new()
        .name("pcache-signals".into())
        .spawn(move || loop {
            match set.wait() {
                Ok(Signal::SIGHUP) => tracing::info!("SIGHUP ignored"),
                Ok(sig) => {
                    tracing::info!(signal = %sig, "shutdown signal");
                    life.request_stop();
                }
                Err(e) => {
                    tracing::error!(error = %e, "sigwait failed");
                    return;
                }
            }
        })
        .map_err(crate::error::process("cannot spawn the signal thread"))?;
    Ok(())
}
