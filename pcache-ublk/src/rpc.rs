//! The daemon's control socket: `status`, `set gc_percent N` and `stop` for a running device.
//!
//! Protocol: the client connects to `/run/pcache-ublk/<id>.sock`, writes one JSON request
//! on one line, and reads one JSON response line:
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"result":{...engine status...}}
//! → {"cmd":"set","key":"gc_percent","value":"50"}
//! ← {"ok":true,"result":null}
//! → {"cmd":"flush"}
//! ← {"ok":true,"result":null}          (the status shows "flushing" until it is done)
//! → {"cmd":"stop"}
//! ← {"ok":true,"result":null}          (the daemon then shuts down)
//! ← {"ok":false,"error":"unknown key \"foo\""}
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::target::Target;

/// How long either side waits for the other's line.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The target's status and counters.
    Status,
    /// Set a tunable.
    Set {
        /// The tunable (`gc_percent`).
        key: String,
        /// Its new value.
        value: String,
    },
    /// Start writing back what is dirty now, in the background (`flush`).
    Flush,
    /// Shut the daemon down gracefully (what `del` asks for).
    Stop,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (status object, or null).
    #[serde(default)]
    pub result: serde_json::Value,
    /// The reason for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result,
            error: None,
        }
    }

    fn err(msg: String) -> Self {
        Response {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(msg),
        }
    }
}

/// Parses a `gc_percent` value (0..=100; the target may narrow the range further).
///
/// # Errors
/// A message naming the bad value.
pub fn parse_gc_percent(value: &str) -> Result<u8, String> {
    value
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|v| *v <= 100)
        .ok_or_else(|| format!("gc_percent must be an integer 0..=100, not {value:?}"))
}

/// The tunables `set` knows.
pub const KEYS: &str =
    "gc_percent, cache_mode, seq_cutoff_read, seq_cutoff_write, writeback_percent";

/// A `writeback_percent` value.
///
/// # Errors
/// Not an integer in 0..=`WRITEBACK_PERCENT_MAX`.
pub fn parse_writeback_percent(value: &str) -> Result<u8, String> {
    let max = pcache_engine::WRITEBACK_PERCENT_MAX;
    value
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| format!("writeback_percent must be an integer 0..={max}, not {value:?}"))
}

/// Checks a `set` before it reaches the daemon or the target.
///
/// # Errors
/// A message naming the bad key or value.
pub fn check_set(key: &str, value: &str) -> Result<(), String> {
    match key {
        "gc_percent" => parse_gc_percent(value).map(drop),
        "cache_mode" => value
            .trim()
            .parse::<pcache_engine::CacheMode>()
            .map(drop)
            .map_err(|e| e.to_string()),
        "seq_cutoff_read" | "seq_cutoff_write" => crate::cli::parse_size(value).map(drop),
        "writeback_percent" => parse_writeback_percent(value).map(drop),
        other => Err(format!("unknown key {other:?} (known: {KEYS})")),
    }
}

fn set(target: &dyn Target, key: &str, value: &str) -> Result<(), String> {
    check_set(key, value)?;
    // The reply is text: the target's error goes with its whole chain.
    let chain = |e: pcache_engine::EngineError| crate::error::chain(&e);
    match key {
        "gc_percent" => target
            .set_gc_percent(parse_gc_percent(value)?)
            .map_err(chain),
        "cache_mode" => {
            let mode = value
                .trim()
                .parse()
                .map_err(|e: pcache_engine::format::mode::UnknownMode| e.to_string())?;
            target.set_cache_mode(mode).map_err(chain)
        }
        "seq_cutoff_read" => target
            .set_seq_cutoff(Some(crate::cli::parse_size(value)?), None)
            .map_err(chain),
        "writeback_percent" => target
            .set_writeback_percent(parse_writeback_percent(value)?)
            .map_err(chain),
        _ => target
            .set_seq_cutoff(None, Some(crate::cli::parse_size(value)?))
            .map_err(chain),
    }
}

/// Answers one request. `stop` is called for [`Request::Stop`].
pub fn dispatch(req: &Request, target: &dyn Target, stop: &dyn Fn()) -> Response {
    match req {
        Request::Status => Response::ok(target.status()),
        Request::Set { key, value } => match set(target, key, value) {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => Response::err(e),
        },
        Request::Flush => match target.start_flush() {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => Response::err(crate::error::chain(&e)),
        },
        Request::Stop => {
            stop();
            Response::ok(serde_json::Value::Null)
        }
    }
}

fn answer(stream: &UnixStream, target: &dyn Target, stop: &dyn Fn()) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => {
            tracing::info!(request = ?req, "control request");
            dispatch(&req, target, stop)
        }
        Err(e) => Response::err(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_string(&resp).map_err(io::Error::from)?;
    out.push('\n');
    let mut w = stream;
    w.write_all(out.as_bytes())
}

/// A bound control socket; the socket file is removed on drop.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds `path` (replacing a stale socket), restricts it to the owner, and answers
    /// requests on a background thread for the rest of the process's life.
    ///
    /// # Errors
    /// [`Error::Socket`] if the socket cannot be bound.
    pub fn start(
        path: &Path,
        target: Arc<dyn Target>,
        stop: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, Error> {
        let err = |source| Error::Socket {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        std::thread::Builder::new()
            .name("pcache-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = answer(&stream, &*target, &*stop) {
                                tracing::warn!(error = %e, "control connection failed");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                    }
                }
            })
            .map_err(err)?;
        Ok(Server {
            path: path.to_owned(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request to the daemon at `path` and returns its result.
///
/// # Errors
/// [`Error::Socket`] if the daemon cannot be reached, [`Error::Refused`] if it answered
/// with an error.
pub fn call(path: &Path, req: &Request) -> Result<serde_json::Value, Error> {
    let err = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(err)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(err)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(err)?;
    let mut line = serde_json::to_string(req).map_err(|e| err(e.into()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(err)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(err)?;
    if reply.is_empty() {
        return Err(err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        )));
    }
    let resp: Response = serde_json::from_str(reply.trim()).map_err(|e| err(e.into()))?;
    if resp.ok {
        Ok(resp.result)
    } else {
        Err(Error::Refused(
            resp.error.unwrap_or_else(|| "no reason given".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::target::MemTarget;

    #[test]
    fn requests_have_a_stable_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let set: Request =
            serde_json::from_str(r#"{"cmd":"set","key":"gc_percent","value":"50"}"#).unwrap();
        assert_eq!(
            set,
            Request::Set {
                key: "gc_percent".into(),
                value: "50".into()
            }
        );
    }

    #[test]
    fn gc_percent_is_validated_before_reaching_the_target() {
        assert_eq!(parse_gc_percent(" 50 "), Ok(50));
        assert!(parse_gc_percent("101").is_err());
        assert!(parse_gc_percent("-1").is_err());
        assert!(parse_gc_percent("lots").is_err());
    }

    #[test]
    fn dispatch_sets_gc_percent_and_reports_target_refusals() {
        let t = MemTarget::new(4096);
        let set = |v: &str| Request::Set {
            key: "gc_percent".into(),
            value: v.into(),
        };
        assert!(dispatch(&set("40"), &t, &|| {}).ok);
        assert_eq!(t.counters().gc_percent, 40);
        // MemTarget accepts at most 90, like dm-pcache.
        let r = dispatch(&set("95"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("95"));
        let kv = |k: &str, v: &str| Request::Set {
            key: k.into(),
            value: v.into(),
        };
        let r = dispatch(&kv("colour", "x"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("unknown key"));
        let r = dispatch(&kv("cache_mode", "x"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("unknown cache mode"));
        // The RAM target has no cache: a valid mode is refused by the target.
        let r = dispatch(&kv("cache_mode", "writethrough"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("no cache mode"));
        let r = dispatch(&kv("seq_cutoff_read", "4Q"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("suffix"));
        let r = dispatch(&kv("writeback_percent", "81"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("0..=80"));
        // A valid pace reaches the target, which has no writeback.
        let r = dispatch(&kv("writeback_percent", "10"), &t, &|| {});
        assert!(!r.ok && r.error.unwrap().contains("no writeback"));
        assert!(dispatch(&Request::Flush, &t, &|| {}).ok);
    }

    /// A target whose tunables fail with an error that has a cause of its own.
    struct Failing;

    impl Target for Failing {
        fn size(&self) -> u64 {
            0
        }
        fn read(&self, _: u32, _: u64, _: &mut [u8]) -> Result<(), crate::target::Errno> {
            Err(-libc::EIO)
        }
        fn write(&self, _: u32, _: u64, _: &[u8], _: bool) -> Result<(), crate::target::Errno> {
            Err(-libc::EIO)
        }
        fn flush(&self) -> Result<(), crate::target::Errno> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> Result<(), crate::target::Errno> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> Result<(), crate::target::Errno> {
            Ok(())
        }
        fn status(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn set_gc_percent(&self, _: u8) -> Result<(), pcache_engine::EngineError> {
            Err(pcache_engine::EngineError::Media {
                op: "persist cache_info",
                source: pcache_engine::media::MediaError::ReadOnly,
            })
        }
        fn close(&self) -> Result<(), pcache_engine::EngineError> {
            Ok(())
        }
    }

    #[test]
    fn a_target_refusal_is_answered_with_its_whole_chain() {
        let r = dispatch(
            &Request::Set {
                key: "gc_percent".into(),
                value: "50".into(),
            },
            &Failing,
            &|| {},
        );
        let cause = pcache_engine::media::MediaError::ReadOnly.to_string();
        assert!(!r.ok);
        assert_eq!(
            r.error.unwrap(),
            format!("cache media: persist cache_info: {cause}")
        );
    }

    #[test]
    fn server_answers_status_set_and_stop_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7.sock");
        let t = Arc::new(MemTarget::new(1 << 20));
        let stopped = Arc::new(AtomicBool::new(false));
        let s2 = stopped.clone();
        let server = Server::start(
            &path,
            t.clone(),
            Arc::new(move || s2.store(true, Ordering::SeqCst)),
        )
        .unwrap();

        let status = call(&path, &Request::Status).unwrap();
        assert_eq!(status["size"], 1 << 20);
        call(
            &path,
            &Request::Set {
                key: "gc_percent".into(),
                value: "30".into(),
            },
        )
        .unwrap();
        assert_eq!(t.counters().gc_percent, 30);
        let refused = call(
            &path,
            &Request::Set {
                key: "gc_percent".into(),
                value: "x".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(refused, Error::Refused(_)), "{refused}");
        assert!(!stopped.load(Ordering::SeqCst));
        call(&path, &Request::Stop).unwrap();
        assert!(stopped.load(Ordering::SeqCst));

        drop(server);
        assert!(!path.exists());
        assert!(matches!(
            call(&path, &Request::Status),
            Err(Error::Socket { .. })
        ));
    }

    #[test]
    fn a_garbled_request_gets_an_error_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.sock");
        let _server =
            Server::start(&path, Arc::new(MemTarget::new(4096)), Arc::new(|| {})).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        (&stream).write_all(b"hello\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        let r: Response = serde_json::from_str(&reply).unwrap();
        assert!(!r.ok && r.error.unwrap().starts_with("bad request"));
    }
}
