//! The `sd_notify` messages, received on a fake `NOTIFY_SOCKET`: a datagram socket bound
//! in a temporary directory.
//!
//! `sd_notify::notify` reads `NOTIFY_SOCKET` from the environment, which a test must not
//! set in the shared test process; so each scenario runs in a child process (this test
//! binary again, running one `#[ignore]`d `child_*` test) with the variable set. The
//! child's reporter sends its report to the same socket, so the order in which the
//! datagrams arrive is the order of report and notification.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::error::Error;
use crate::lifecycle::{Lifecycle, Reporter};
use crate::notify::Notifier;

/// Where the child's reporter sends what it reports.
const REPORT_SOCKET: &str = "PCACHE_TEST_REPORT_SOCKET";

/// An id no ublk driver hands out: the stop that `request_stop` sends fails harmlessly.
const ID: u32 = 999_999;

/// Sends `REPORTED LIVE id path` / `REPORTED FAILED reason` to `$PCACHE_TEST_REPORT_SOCKET`.
struct SocketReporter;

impl SocketReporter {
    fn send(msg: &str) {
        let path = std::env::var_os(REPORT_SOCKET).expect("PCACHE_TEST_REPORT_SOCKET");
        UnixDatagram::unbound()
            .unwrap()
            .send_to(msg.as_bytes(), path)
            .unwrap();
    }
}

impl Reporter for SocketReporter {
    fn live(&mut self, dev_id: u32, path: &str) {
        Self::send(&format!("REPORTED LIVE {dev_id} {path}"));
    }
    fn failed(&mut self, err: &Error) {
        Self::send(&format!("REPORTED FAILED {err}"));
    }
}

/// The child's lifecycle; `None` when the test was run by hand, not by `run_child`.
fn child_life() -> Option<Arc<Lifecycle>> {
    std::env::var_os(REPORT_SOCKET)?;
    Some(Lifecycle::with_notifier(
        Box::new(SocketReporter),
        Notifier::from_env(),
    ))
}

/// Runs `child_<name>` in a child process, with `NOTIFY_SOCKET` pointing at a fresh
/// socket (or unset), and returns the child's pid and the datagrams received, in order.
fn run_child(name: &str, notify_socket: bool) -> (u32, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        &format!("notify::tests::child_{name}"),
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env(REPORT_SOCKET, &sock_path)
    .env_remove("NOTIFY_SOCKET")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if notify_socket {
        cmd.env("NOTIFY_SOCKET", &sock_path);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child_{name} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, drain(&sock))
}

fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut msgs = Vec::new();
    let mut buf = [0_u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        msgs.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    msgs
}

#[test]
#[ignore = "run as a child process by ready_follows_the_report_of_liveness"]
fn child_start_and_stop() {
    let Some(life) = child_life() else { return };
    assert!(life.notifier().enabled());
    life.notifier().status("starting: replaying\ncache x");
    life.created(ID);
    life.went_live(ID, None);
    life.request_stop();
}

#[test]
fn ready_follows_the_report_of_liveness() {
    let (pid, msgs) = run_child("start_and_stop", true);
    assert_eq!(
        msgs,
        [
            "STATUS=starting: replaying cache x\n".to_owned(),
            format!("REPORTED LIVE {ID} /dev/ublkb{ID}"),
            format!("MAINPID={pid}\nSTATUS=serving /dev/ublkb{ID} (ublk device {ID})\nREADY=1\n"),
            format!(
                "STOPPING=1\nSTATUS=stopping /dev/ublkb{ID}: closing the cache (dirty data stays in it)\n"
            ),
        ]
    );
}

#[test]
#[ignore = "run as a child process by a_stop_while_starting_is_never_ready"]
fn child_stop_while_starting() {
    let Some(life) = child_life() else { return };
    life.request_stop();
    life.created(ID);
    life.went_live(ID, None);
}

#[test]
fn a_stop_while_starting_is_never_ready() {
    let (_, msgs) = run_child("stop_while_starting", true);
    assert_eq!(
        msgs,
        [
            format!("REPORTED FAILED {}", Error::Interrupted),
            "STOPPING=1\nSTATUS=stop requested while starting; stopping\n".to_owned(),
        ]
    );
}

#[test]
#[ignore = "run as a child process by a_failed_start_is_never_ready"]
fn child_failed_start() {
    let Some(life) = child_life() else { return };
    life.report_failure(&Error::NoUblkDriver);
}

#[test]
fn a_failed_start_is_never_ready() {
    let (_, msgs) = run_child("failed_start", true);
    assert_eq!(msgs, [format!("REPORTED FAILED {}", Error::NoUblkDriver)]);
}

#[test]
#[ignore = "run as a child process by without_notify_socket_nothing_is_sent"]
fn child_without_socket() {
    let Some(life) = child_life() else { return };
    assert!(!life.notifier().enabled());
    life.notifier().status("starting");
    life.created(ID);
    life.went_live(ID, None);
    life.request_stop();
}

#[test]
fn without_notify_socket_nothing_is_sent() {
    let (_, msgs) = run_child("without_socket", false);
    assert_eq!(msgs, [format!("REPORTED LIVE {ID} /dev/ublkb{ID}")]);
}

#[test]
fn a_disabled_notifier_stays_disabled() {
    let n = Notifier::disabled();
    assert!(!n.enabled());
    // Harmless: nothing to send to.
    n.ready(1, "/dev/ublkb1");
    n.stopping("x");
}
