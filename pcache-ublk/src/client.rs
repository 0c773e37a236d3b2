//! The commands that talk to running daemons (`del`, `list`, `status`, `set`) and the
//! background start of `add`/`recover`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::daemon::{self, StartReport};
use crate::error::{describe_ublk, Error};
use crate::rpc::{self, Request};
use crate::state::{self, RunRecord, TargetData};

/// How long `del` waits for a daemon to close its cache and exit.
pub const DEL_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether process `pid` is alive (a zombie counts as dead).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    // /proc/PID/stat: "pid (comm) S ...": the state follows the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => true,
    }
}

/// Waits until `pid` is gone or `timeout` passes; returns whether it is gone.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while pid_alive(pid) {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The run record of `id` whose daemon is still running.
fn running_record(id: u32) -> Result<Option<RunRecord>, Error> {
    Ok(state::read_record(&state::run_dir(), id)?.filter(|r| pid_alive(r.pid)))
}

fn no_daemon(id: u32) -> Error {
    let state = kernel_state(id).map_or_else(
        || "no ublk device with that id is known".to_owned(),
        |s| format!("the ublk device is {s}"),
    );
    Error::NotOurs {
        id,
        why: format!("no running pcache-ublk daemon serves it ({state})"),
    }
}

/// The kernel's state of ublk device `id`, if the driver knows it.
pub fn kernel_state(id: u32) -> Option<&'static str> {
    if !daemon::ublk_available() || !Path::new(&format!("/dev/ublkc{id}")).exists() {
        return None;
    }
    let ctrl = libublk::ctrl::UblkCtrl::new_simple(i32::try_from(id).ok()?).ok()?;
    Some(daemon::state_name(u32::from(ctrl.dev_info().state)))
}

/// libublk's exported JSON of device `id` (`/run/ublksrvd/NNNN.json`).
pub fn ublk_json(id: u32) -> Option<serde_json::Value> {
    let path = format!("{}/{id:04}.json", libublk::ctrl::UblkCtrl::run_dir());
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Refuses to stop a device that is mounted or held by device-mapper: an `O_EXCL` open
/// of the block device fails with `EBUSY` then.
fn refuse_if_in_use(id: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = daemon::bdev_path(id);
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Error::NotOurs {
            id,
            why: format!(
                "{path} is in use (mounted or held open); unmount it first, or pass --force"
            ),
        }),
        _ => Ok(()),
    }
}

/// `del -n ID`: stops the daemon gracefully (it closes the cache and deletes the device)
/// and waits for it to exit. A device whose daemon died is deleted directly; its dirty
/// data stays in the cache either way.
///
/// # Errors
/// The device is not ours, or the daemon did not stop in time.
pub fn del(id: u32, force: bool) -> Result<(), Error> {
    let dir = state::run_dir();
    if !force {
        refuse_if_in_use(id)?;
    }
    if let Some(rec) = running_record(id)? {
        match rpc::call(&rec.socket, &Request::Stop) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), pid = rec.pid, "control socket failed; sending SIGTERM");
                let pid = nix::unistd::Pid::from_raw(i32::try_from(rec.pid).unwrap_or(0));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(
                    crate::error::process(format!("cannot signal daemon {}", rec.pid)),
                )?;
            }
        }
        if !wait_for_exit(rec.pid, DEL_TIMEOUT) {
            return Err(Error::Daemon(format!(
                "daemon {} of device {id} did not exit within {}s",
                rec.pid,
                DEL_TIMEOUT.as_secs()
            )));
        }
        state::remove_record(&dir, id);
        return Ok(());
    }
    // No daemon. A device left quiesced by a dead daemon is deleted in the kernel.
    let ours = state::read_record(&dir, id)?.is_some()
        || ublk_json(id)
            .and_then(|j| j.get("target_data").and_then(TargetData::from_target_json))
            .is_some();
    let exists = kernel_state(id).is_some();
    if !exists {
        state::remove_record(&dir, id);
        return Err(no_daemon(id));
    }
    if !ours {
        return Err(Error::NotOurs {
            id,
            why: "it is not a pcache-ublk device".into(),
        });
    }
    tracing::warn!(
        id,
        "the daemon is gone; deleting the device (dirty data stays in the cache)"
    );
    let sid = i32::try_from(id).map_err(|_| Error::Invalid(format!("bad device id {id}")))?;
    let ctrl =
        libublk::ctrl::UblkCtrl::new_simple(sid).map_err(crate::error::ublk("open device"))?;
    match ctrl.del_dev() {
        Ok(r) if r < 0 => {
            return Err(Error::Ublk {
                op: "delete device",
                detail: describe_ublk(&libublk::UblkError::OtherError(r)),
            })
        }
        Ok(_) => {}
        Err(e) => return Err(crate::error::ublk("delete device")(e)),
    }
    state::remove_record(&dir, id);
    Ok(())
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    /// The device id.
    pub id: u32,
    /// `/dev/ublkbN`.
    pub path: String,
    /// The kernel's device state (`LIVE`, `QUIESCED`, …), or `-` when unknown.
    pub state: String,
    /// The daemon's pid while it runs.
    pub pid: Option<u32>,
    /// The cache device.
    pub cache: Option<PathBuf>,
    /// The cache served, on a shared cache device.
    pub cache_name: Option<String>,
    /// The backing device.
    pub backing: Option<PathBuf>,
    /// Queues and depth.
    pub queues: Option<u16>,
    /// Queue depth.
    pub depth: Option<u16>,
    /// Copy mode.
    pub copy_mode: Option<String>,
}

fn ublk_char_ids() -> Vec<u32> {
    std::fs::read_dir("/sys/class/ublk-char")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("ublkc")?.parse().ok())
        .collect()
}

/// The pcache-ublk devices: those with a run record or whose libublk JSON is ours.
pub fn list_devices() -> Vec<DeviceRow> {
    let dir = state::run_dir();
    let mut ids = state::recorded_ids(&dir);
    ids.extend(ublk_char_ids());
    ids.sort_unstable();
    ids.dedup();
    let mut rows = Vec::new();
    for id in ids {
        let rec = state::read_record(&dir, id).ok().flatten();
        let from_json =
            ublk_json(id).and_then(|j| j.get("target_data").and_then(TargetData::from_target_json));
        let Some(td) = rec.as_ref().map(|r| r.target.clone()).or(from_json) else {
            continue;
        };
        let pid = rec.as_ref().map(|r| r.pid).filter(|p| pid_alive(*p));
        let state = match (kernel_state(id), pid) {
            (Some(s), _) => s.to_owned(),
            (None, Some(_)) => "-".to_owned(),
            (None, None) => "STALE".to_owned(),
        };
        rows.push(DeviceRow {
            id,
            path: daemon::bdev_path(id),
            state,
            pid,
            cache: td.cache,
            cache_name: td.cache_name,
            backing: td.backing,
            queues: Some(td.queues),
            depth: Some(td.depth),
            copy_mode: Some(td.copy_mode.to_string()),
        });
    }
    rows
}

fn opt_path(p: Option<&PathBuf>, ram: bool) -> String {
    match p {
        Some(p) => p.display().to_string(),
        None if ram => "(ram)".into(),
        None => "-".into(),
    }
}

/// `list` as a table.
pub fn format_list(rows: &[DeviceRow]) -> String {
    let mut out = String::from("ID  PATH           STATE     PID      QUEUES  CACHE  BACKING\n");
    for r in rows {
        let ram = r.cache.is_none();
        out.push_str(&format!(
            "{:<3} {:<14} {:<9} {:<8} {:<7} {}  {}\n",
            r.id,
            r.path,
            r.state,
            r.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            r.queues
                .zip(r.depth)
                .map_or_else(|| "-".into(), |(q, d)| format!("{q}x{d}")),
            opt_path(r.cache.as_ref(), ram)
                + &r.cache_name
                    .as_ref()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default(),
            opt_path(r.backing.as_ref(), ram),
        ));
    }
    out
}

/// `status -n ID`: the daemon's status object.
///
/// # Errors
/// No daemon serves `id`, or it did not answer.
pub fn status(id: u32) -> Result<serde_json::Value, Error> {
    let rec = running_record(id)?.ok_or_else(|| no_daemon(id))?;
    let mut v = rpc::call(&rec.socket, &Request::Status)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("schema".into(), pcache_engine::JSON_SCHEMA.into());
        obj.insert("dev_id".into(), id.into());
        obj.insert("path".into(), daemon::bdev_path(id).into());
        obj.insert("pid".into(), rec.pid.into());
        obj.insert("queues".into(), rec.target.queues.into());
        obj.insert("depth".into(), rec.target.depth.into());
        obj.insert("copy_mode".into(), rec.target.copy_mode.to_string().into());
        obj.insert("workers".into(), rec.target.workers.into());
        if let Some(s) = kernel_state(id) {
            obj.insert("state".into(), s.into());
        }
    }
    Ok(v)
}

/// A status object as `key: value` lines, in a stable order.
pub fn format_status(v: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(obj) = v.as_object() {
        let mut keys: Vec<&String> = obj.keys().collect();
        keys.sort();
        // The schema version is for programs; the replay report is one object.
        for k in keys.into_iter().filter(|k| *k != "schema") {
            let val = &obj[k];
            let text = val
                .as_str()
                .map_or_else(|| val.to_string(), ToOwned::to_owned);
            out.push_str(&format!("{k}: {text}\n"));
        }
    }
    out
}

/// `set -n ID KEY VALUE`.
///
/// # Errors
/// No daemon serves `id`, or it refused the value.
pub fn set(id: u32, key: &str, value: &str) -> Result<(), Error> {
    rpc::check_set(key, value).map_err(Error::Invalid)?;
    let rec = running_record(id)?.ok_or_else(|| no_daemon(id))?;
    rpc::call(
        &rec.socket,
        &Request::Set {
            key: key.to_owned(),
            value: value.to_owned(),
        },
    )?;
    // The cutoffs and the writeback pace live in the daemon only: the run record keeps
    // them for `recover` (the mode and gc_percent are in the cache itself).
    if let ("seq_cutoff_read" | "seq_cutoff_write", Ok(bytes)) =
        (key, crate::cli::parse_size(value))
    {
        let mut rec = rec;
        if key == "seq_cutoff_read" {
            rec.target.seq_cutoff_read = bytes;
        } else {
            rec.target.seq_cutoff_write = bytes;
        }
        state::write_record(&state::run_dir(), &rec)?;
    } else if let ("writeback_percent", Ok(pct)) = (key, crate::rpc::parse_writeback_percent(value))
    {
        let mut rec = rec;
        rec.target.writeback_percent = pct;
        state::write_record(&state::run_dir(), &rec)?;
    }
    Ok(())
}

/// `flush -n ID [--wait]`: asks the daemon to write back what is dirty now. With `wait`,
/// `progress` gets the status every half second until the flush is done (it returns
/// then), and the final status is returned.
///
/// # Errors
/// No daemon serves `id`, it refused, or it stopped answering.
pub fn flush(
    id: u32,
    wait: bool,
    progress: &mut dyn FnMut(&serde_json::Value),
) -> Result<serde_json::Value, Error> {
    let rec = running_record(id)?.ok_or_else(|| no_daemon(id))?;
    rpc::call(&rec.socket, &Request::Flush)?;
    loop {
        let v = status(id)?;
        let flushing = v.get("flushing").and_then(serde_json::Value::as_bool) == Some(true);
        if !wait || !flushing {
            return Ok(v);
        }
        progress(&v);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Makes this process (the detached daemon) the leader of a new session without a
/// controlling terminal.
pub fn detach_session() {
    if let Err(e) = nix::unistd::setsid() {
        tracing::warn!(error = %e, "setsid failed; the daemon stays in the caller's session");
    }
}

/// The default log of a background daemon.
pub fn default_log_file() -> PathBuf {
    state::run_dir().join("daemon.log")
}

/// Starts this same command line again as a detached daemon (`--daemon-child`), with
/// stdin and stdout detached and stderr appended to `log`, and waits for its one-line
/// report: the device is live, or why it is not.
///
/// # Errors
/// [`Error::Daemon`] with the daemon's reason, [`Error::Process`] if it could not be
/// started.
pub fn start_detached(log: &Path) -> Result<(u32, String), Error> {
    let exe =
        std::env::current_exe().map_err(crate::error::process("cannot find my own executable"))?;
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.push("--daemon-child".into());
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::RunDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::RunDir {
            path: log.to_owned(),
            source,
        })?;
    // The child calls setsid() first thing (see `detach_session`), so a Ctrl-C or a
    // hangup of the terminal that ran `add` does not reach the daemon.
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(crate::error::process("cannot start the daemon"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match serde_json::from_str::<StartReport>(line.trim()) {
        Ok(StartReport {
            ok: true,
            dev_id: Some(id),
            path: Some(path),
            ..
        }) => Ok((id, path)),
        Ok(r) => {
            let _ = child.wait();
            Err(Error::Daemon(r.error.unwrap_or_else(|| {
                "the daemon failed without a reason".into()
            })))
        }
        Err(_) => {
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            Err(Error::Daemon(format!(
                "the daemon exited ({status}) before the device was live; see {}",
                log.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CopyMode;

    #[test]
    fn our_own_pid_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }

    #[test]
    fn a_zombie_counts_as_dead() {
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped: it becomes a zombie once it exits.
        assert!(wait_for_exit(pid, Duration::from_secs(10)));
        drop(child);
    }

    #[test]
    fn list_formats_cache_and_ram_rows() {
        let rows = vec![
            DeviceRow {
                id: 0,
                path: "/dev/ublkb0".into(),
                state: "LIVE".into(),
                pid: Some(42),
                cache: Some("/dev/pmem0".into()),
                cache_name: None,
                backing: Some("/dev/vdb".into()),
                queues: Some(2),
                depth: Some(128),
                copy_mode: Some(CopyMode::UserCopy.to_string()),
            },
            DeviceRow {
                id: 7,
                path: "/dev/ublkb7".into(),
                state: "STALE".into(),
                pid: None,
                cache: None,
                cache_name: None,
                backing: None,
                queues: Some(1),
                depth: Some(64),
                copy_mode: None,
            },
        ];
        let text = format_list(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("0 ") && lines[1].contains("LIVE"));
        assert!(lines[1].contains("/dev/pmem0") && lines[1].contains("/dev/vdb"));
        assert!(lines[1].contains("2x128") && lines[1].contains("42"));
        assert!(lines[2].contains("(ram)") && lines[2].contains("STALE"));
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["cache"], "/dev/pmem0");
        assert_eq!(json[1]["pid"], serde_json::Value::Null);
    }

    #[test]
    fn status_lines_are_sorted_and_unquoted() {
        let v = serde_json::json!({"key_head": "3:4096", "hits": 5, "cache": "/dev/pmem0"});
        assert_eq!(
            format_status(&v),
            "cache: /dev/pmem0\nhits: 5\nkey_head: 3:4096\n"
        );
    }

    #[test]
    fn set_refuses_unknown_keys_and_bad_values_before_connecting() {
        assert!(matches!(
            set(9999, "cache_mode", "x"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            set(9999, "gc_percent", "200"),
            Err(Error::Invalid(_))
        ));
    }
}
