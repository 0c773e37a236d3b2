//! Telling a service manager how the daemon is doing (`sd_notify(3)`, through the
//! `sd-notify` crate), so that a `Type=notify` systemd unit is started only once
//! `/dev/ublkbN` is live and units ordered after it never race the device.
//!
//! The messages, all from the daemon's own process (so `NotifyAccess=main` is enough):
//! - `STATUS=starting: ...` before the cache is replayed;
//! - `MAINPID=`, `STATUS=serving /dev/ublkbN ...` and `READY=1` once the device is live,
//!   right after the reporter printed `ID PATH` ([`crate::lifecycle::Lifecycle`]);
//! - `STOPPING=1` with a `STATUS=` when a stop starts, and again when the daemon is done
//!   (stopped, or failed with the reason).
//!
//! Nothing is sent unless `NOTIFY_SOCKET` is set, and a failure to send is only logged:
//! the device is served regardless.

use sd_notify::NotifyState;

/// Sends `sd_notify` messages, or nothing when disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notifier {
    enabled: bool,
}

/// A `STATUS=` text on one line (systemd takes the rest of the line only).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl Notifier {
    /// Notifies when the service manager asked for it (`NOTIFY_SOCKET` is set).
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty()),
        }
    }

    /// Never notifies (the detached daemon of a plain `add`, tests).
    pub fn disabled() -> Self {
        Notifier { enabled: false }
    }

    /// Whether messages are sent.
    pub fn enabled(self) -> bool {
        self.enabled
    }

    fn send(self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }

    /// `STATUS=text`.
    pub fn status(self, text: &str) {
        self.send(&[NotifyState::Status(&one_line(text))]);
    }

    /// The device is live: `MAINPID`, `STATUS=serving PATH ...` and `READY=1`, in one
    /// message.
    pub fn ready(self, dev_id: u32, path: &str) {
        let status = format!("serving {path} (ublk device {dev_id})");
        self.send(&[
            NotifyState::MainPid(std::process::id()),
            NotifyState::Status(&status),
            NotifyState::Ready,
        ]);
    }

    /// `STOPPING=1` and `STATUS=text`.
    pub fn stopping(self, text: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(&one_line(text))]);
    }
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
