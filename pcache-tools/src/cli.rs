//! Small helpers the tools share: argument parsers, logging, output, and the warning for
//! a live cache.
//!
//! Errors here are typed (or `std::io::Error`); the binaries add what they were doing
//! with `anyhow`'s context and print the whole chain on one line, `{:#}`.

use crate::device::{Access, Device, DeviceError, Image};
use std::ops::Range;
use std::path::Path;

use pcache_engine::claim::Holder;

/// Sends `tracing` events (the engine's and the tool's) to stderr, filtered by `RUST_LOG`
/// (default: warnings and errors), like the daemon.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The warning a reading tool prints for a cache another program holds for writing.
#[must_use]
pub fn live_warning(device: &str, holder: &Holder) -> String {
    format!(
        "warning: {device} is live (in use by {holder}): what is shown may be torn by its writes"
    )
}

/// `doc` (a pretty-printed, non-empty JSON object) with a first field `"live"` naming the
/// holder of a live cache; `doc` unchanged when the cache was not live.
#[must_use]
pub fn with_live(doc: String, holder: Option<&Holder>) -> String {
    let Some(holder) = holder else { return doc };
    let Some(rest) = doc.strip_prefix("{\n") else {
        return doc;
    };
    let mut live = serde_json::json!({
        "holder": holder.to_string(),
        "may_be_torn": true,
    });
    if let Holder::Process { pid, ublk_dev, .. } = holder {
        live["pid"] = (*pid).into();
        if let Some(id) = ublk_dev {
            live["ublk_dev"] = (*id).into();
        }
    }
    format!("{{\n  \"live\": {live},\n{rest}")
}

/// Parses a byte count: a decimal number with an optional binary suffix `K`, `M`, `G`,
/// `T` (also `KiB`, … and lower case).
///
/// A clap value parser: its error is the message clap prints after the argument's name,
/// a `String` by clap's convention (there is no source to keep).
///
/// # Errors
/// Not a number, or too large.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {suffix:?} (K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a range of cache segment ids: `N`, `A..B` (B excluded), `A..=B`, `A..`, `..B`.
///
/// A clap value parser, so its error is a `String` message, as [`parse_size`]'s.
///
/// # Errors
/// Not of that form.
pub fn parse_range(s: &str) -> Result<Range<u32>, String> {
    let bad = || format!("{s:?} is not a segment range (N, A..B, A..=B, A.. or ..B)");
    let num = |x: &str| x.trim().parse::<u32>().map_err(|_| bad());
    let Some((a, b)) = s.split_once("..") else {
        let n = num(s)?;
        return Ok(n..n.saturating_add(1));
    };
    let start = if a.trim().is_empty() { 0 } else { num(a)? };
    let end = if let Some(b) = b.strip_prefix('=') {
        num(b)?.saturating_add(1)
    } else if b.trim().is_empty() {
        u32::MAX
    } else {
        num(b)?
    };
    Ok(start..end)
}

/// Writes `text` to stdout. A closed pipe (`pcache-dump DEV | head`) is not an error.
///
/// # Errors
/// Writing failed for another reason than a closed pipe.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// The size of a backing device or file, opened read-only.
///
/// # Errors
/// It cannot be opened (the error does not name `path`; the caller does).
pub fn backing_size(path: &Path) -> Result<u64, DeviceError> {
    Device::open(path, Access::ReadOnly).map(|d| d.size())
}

/// Reports a failure at a binary's edge: the whole chain on one line on stderr and, when
/// `--json` was asked, a JSON object on stdout too (`{"schema": 1, "error": "…"}`), so a
/// program reading stdout always gets a document.
pub fn report_error(tool: &str, e: &anyhow::Error, json: bool) {
    eprintln!("{tool}: {e:#}");
    if json {
        let doc = serde_json::json!({
            "schema": pcache_engine::JSON_SCHEMA,
            "error": format!("{e:#}"),
        });
        println!("{doc:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_becomes_the_first_json_field() {
        let doc = "{\n  \"device\": \"x\",\n  \"n\": 1\n}".to_owned();
        assert_eq!(with_live(doc.clone(), None), doc);
        let h = Holder::Process {
            pid: 9,
            program: Some("pcache-ublk".into()),
            ublk_dev: Some(2),
            shared: false,
        };
        let out = with_live(doc, Some(&h));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["live"]["pid"], 9);
        assert_eq!(v["live"]["ublk_dev"], 2);
        assert_eq!(v["live"]["holder"], "pcache-ublk device 2 (pid 9)");
        assert_eq!(v["device"], "x");
        assert!(out.starts_with("{\n  \"live\": {"), "{out}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3t"), Ok(3 << 40));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("3"), Ok(3..4));
        assert_eq!(parse_range("2..5"), Ok(2..5));
        assert_eq!(parse_range("2..=5"), Ok(2..6));
        assert_eq!(parse_range("7.."), Ok(7..u32::MAX));
        assert_eq!(parse_range("..4"), Ok(0..4));
        assert!(parse_range("a..b").is_err());
        assert!(parse_range("-1").is_err());
    }

    #[test]
    fn error_chain_on_one_line() {
        // What the binaries print: `{:#}` of the error with their context.
        let e = anyhow::Error::new(DeviceError::Open(std::io::Error::from_raw_os_error(2)))
            .context("/dev/x");
        assert_eq!(
            format!("{e:#}"),
            "/dev/x: cannot open: No such file or directory (os error 2)"
        );
    }
}
