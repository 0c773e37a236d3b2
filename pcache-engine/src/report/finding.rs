//! What a scan finds wrong (or merely odd) about an image.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// `n` and `noun`, plural unless `n` is 1: `count(2, "error")` is `"2 errors"`.
#[must_use]
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// A damaged copy whose twin is fine, or something the kernel accepts but never
    /// writes.
    Warning,
    /// The kernel would refuse the cache, replay would fail, or data would be lost.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// A fix that can be made without guessing: copy `len` bytes of a good record from
/// `from` over its damaged twin at `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Repair {
    /// Absolute offset of the good copy.
    pub from: u64,
    /// Absolute offset of the damaged copy.
    pub to: u64,
    /// Record size.
    pub len: u32,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// A stable identifier of the kind of problem (`snake_case`), for scripts.
    pub code: &'static str,
    /// Which structure, e.g. `cache_info[1]`, `segment 3: gen[0]`, `kset 2:4096`.
    pub what: String,
    /// Absolute byte offset of the structure, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
    /// True when the kernel would refuse to activate the cache because of it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kernel_refuses: bool,
    /// The fix `pcache-fsck --repair` would make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl Finding {
    /// A finding.
    pub fn new(
        severity: Severity,
        code: &'static str,
        what: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            code,
            what: what.into(),
            offset,
            message: message.into(),
            kernel_refuses: false,
            repair: None,
        }
    }

    /// An error that makes the kernel refuse the cache.
    pub fn refusal(
        code: &'static str,
        what: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kernel_refuses: true,
            ..Self::new(Severity::Error, code, what, offset, message)
        }
    }

    /// The same finding, with a repair.
    #[must_use]
    pub fn with_repair(mut self, repair: Repair) -> Self {
        self.repair = Some(repair);
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.what)?;
        if let Some(off) = self.offset {
            write!(f, " @{off:#x}")?;
        }
        write!(f, ": {}", self.message)?;
        if self.kernel_refuses {
            f.write_str(" [the kernel refuses this cache]")?;
        }
        if self.repair.is_some() {
            f.write_str(" [--repair fixes this]")?;
        }
        Ok(())
    }
}

/// The findings of one scan. Each kind (`code`) is kept at most `cap` times; further ones
/// are only counted, so a badly damaged image cannot make a report unbounded.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    /// The findings, in the order they were made.
    pub list: Vec<Finding>,
    /// How many findings of each kind were left out of `list` (omitted when none were).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    kept: BTreeMap<&'static str, usize>,
    #[serde(skip)]
    cap: usize,
    #[serde(skip)]
    errors: u64,
    #[serde(skip)]
    warnings: u64,
    #[serde(skip)]
    refusals: u64,
    #[serde(skip)]
    repairs: Vec<Repair>,
}

impl Findings {
    /// No findings; at most `cap` kept per kind.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            list: Vec::new(),
            omitted: BTreeMap::new(),
            kept: BTreeMap::new(),
            cap: cap.max(1),
            errors: 0,
            warnings: 0,
            refusals: 0,
            repairs: Vec::new(),
        }
    }

    /// Records a finding.
    pub fn push(&mut self, f: Finding) {
        match f.severity {
            Severity::Error => self.errors += 1,
            Severity::Warning => self.warnings += 1,
            Severity::Info => {}
        }
        if f.kernel_refuses {
            self.refusals += 1;
        }
        if let Some(r) = f.repair {
            if !self.repairs.contains(&r) {
                self.repairs.push(r);
            }
        }
        let kept = self.kept.entry(f.code).or_insert(0);
        if *kept < self.cap {
            *kept += 1;
            self.list.push(f);
        } else {
            *self.omitted.entry(f.code).or_insert(0) += 1;
        }
    }

    /// Number of errors, counted ones included.
    #[must_use]
    pub const fn errors(&self) -> u64 {
        self.errors
    }

    /// Number of warnings, counted ones included.
    #[must_use]
    pub const fn warnings(&self) -> u64 {
        self.warnings
    }

    /// Whether the kernel would refuse to activate the cache.
    #[must_use]
    pub const fn kernel_refuses(&self) -> bool {
        self.refusals > 0
    }

    /// The repairs offered by every finding, those left out of `list` included.
    #[must_use]
    pub fn repairs(&self) -> &[Repair] {
        &self.repairs
    }

    /// The first finding with this code.
    #[must_use]
    pub fn find(&self, code: &str) -> Option<&Finding> {
        self.list.iter().find(|f| f.code == code)
    }

    /// Adds `text` to the message of the first finding with this code (for a tool that
    /// knows more than the scan, such as what else a device holds).
    pub fn amend(&mut self, code: &str, text: &str) {
        if let Some(f) = self.list.iter_mut().find(|f| f.code == code) {
            f.message.push_str(text);
        }
    }

    /// The most severe finding's severity.
    #[must_use]
    pub fn worst(&self) -> Option<Severity> {
        self.list.iter().map(|f| f.severity).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_counts_the_rest() {
        let mut fs = Findings::new(2);
        for i in 0..5 {
            fs.push(Finding::new(Severity::Error, "x", "k", Some(i), "bad"));
        }
        fs.push(Finding::refusal("y", "sb", None, "bad"));
        for to in [10, 20, 30] {
            let r = Repair {
                from: 0,
                to,
                len: 16,
            };
            fs.push(Finding::new(Severity::Warning, "z", "c", None, "d").with_repair(r));
        }
        assert_eq!(
            fs.repairs().len(),
            3,
            "repairs of omitted findings are kept"
        );
        assert_eq!(fs.list.len(), 5);
        assert_eq!(fs.omitted.get("x"), Some(&3));
        assert_eq!(fs.errors(), 6);
        assert_eq!(fs.warnings(), 3);
        assert!(fs.kernel_refuses());
        assert_eq!(
            fs.list[0].to_string(),
            "error: k @0x0: bad",
            "offset in hex, then the message"
        );
    }
}
