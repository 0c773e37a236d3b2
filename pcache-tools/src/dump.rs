//! `pcache-dump`: a [`Scan`] rendered for people, or as JSON for machines.

use crate::chain::{Role, SegmentView};
use crate::log::{KeyState, KeyView, KsetKind, KsetView, LogEndKind};
use crate::report::{CacheInfoView, DualView, Scan, ScanOptions, SlotState, SlotView};
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::ops::Range;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Every key of every listed kset.
    pub keys: bool,
    /// Only the segments with these cache ids, and the ksets stored in them.
    pub segments: Option<Range<u32>>,
    /// At most this many ksets.
    pub max_ksets: Option<u64>,
    /// Size of the backing device, to check key bounds.
    pub backing_size: Option<u64>,
}

impl DumpOptions {
    /// The scan these options need.
    #[must_use]
    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            backing_size: self.backing_size,
            segments: self.segments.clone(),
            max_ksets: self.max_ksets,
            keys: self.keys,
            ..ScanOptions::default()
        }
    }
}

/// The JSON document of `pcache-dump --json`.
#[derive(Debug, Serialize)]
pub struct DumpJson<'a> {
    /// [`pcache_engine::JSON_SCHEMA`].
    pub schema: u32,
    /// The device path.
    pub device: &'a str,
    /// The `dmsetup status` line, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_line: Option<String>,
    /// Everything found.
    #[serde(flatten)]
    pub scan: &'a Scan,
}

/// The JSON document, pretty-printed.
#[must_use]
pub fn json(scan: &Scan, device: &str) -> String {
    let doc = DumpJson {
        schema: pcache_engine::JSON_SCHEMA,
        device,
        status_line: scan.status.map(|s| s.to_string()),
        scan,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The human-readable dump.
#[must_use]
pub fn text(scan: &Scan, device: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, scan, device);
    out
}

fn slot_line<V>(
    out: &mut String,
    i: usize,
    slot: &SlotView<V>,
    current: Option<usize>,
    show: impl Fn(&V) -> String,
) -> fmt::Result {
    let mark = if current == Some(i) { '*' } else { ' ' };
    write!(out, "  {mark}[{i}] @{:<6}", slot.offset)?;
    match (&slot.state, &slot.value) {
        (SlotState::Valid, Some(v)) => {
            writeln!(out, " valid   seq {:<3} {}", slot.seq.unwrap_or(0), show(v))
        }
        (SlotState::Empty, _) => writeln!(out, " empty"),
        _ => writeln!(
            out,
            " damaged ({})",
            slot.error.as_deref().unwrap_or("bad crc")
        ),
    }
}

fn dual<V>(
    out: &mut String,
    name: &str,
    d: &DualView<V>,
    show: impl Fn(&V) -> String,
) -> fmt::Result {
    match d.current {
        Some(c) => writeln!(out, "{name}: current copy {c}")?,
        None => writeln!(out, "{name}: no valid copy")?,
    }
    for (i, s) in d.slots.iter().enumerate() {
        slot_line(out, i, s, d.current, &show)?;
    }
    Ok(())
}

fn mode_name(mode: u8) -> &'static str {
    pcache_format::CacheMode::from_value(mode).map_or("unknown mode", |m| m.name())
}

fn cache_info(c: &CacheInfoView) -> String {
    format!(
        "seg_id {} n_segs {} flags {:#x} (data_crc {}, init_done {}, mode {}, gc_percent {}){}",
        c.seg_id,
        c.n_segs,
        c.flags,
        if c.data_crc { "on" } else { "off" },
        if c.init_done { "yes" } else { "no" },
        mode_name(c.cache_mode),
        c.gc_percent,
        if c.reserved == 0 {
            String::new()
        } else {
            format!(" reserved {:#x}", c.reserved)
        }
    )
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Unknown => "?",
        Role::Log => "log",
        Role::Data => "data",
        Role::Free => "free",
        Role::LogAndData => "log+data!",
    }
}

fn segment(out: &mut String, s: &SegmentView) -> fmt::Result {
    let si = |d: &DualView<crate::chain::SegInfoView>, i: usize| match &d.slots[i] {
        SlotView {
            state: SlotState::Valid,
            value: Some(v),
            seq,
            ..
        } => {
            let link = if v.has_next {
                format!("next {}", v.next_seg)
            } else {
                "last".to_owned()
            };
            format!(
                "{}seq {} flags {:#x} {link}",
                if d.current == Some(i) { "*" } else { "" },
                seq.unwrap_or(0),
                v.flags
            )
        }
        SlotView {
            state: SlotState::Empty,
            ..
        } => "empty".to_owned(),
        _ => "damaged".to_owned(),
    };
    let gen = |d: &DualView<u64>, i: usize| match &d.slots[i] {
        SlotView {
            state: SlotState::Valid,
            value: Some(v),
            seq,
            ..
        } => format!(
            "{}seq {} gen {v}",
            if d.current == Some(i) { "*" } else { "" },
            seq.unwrap_or(0)
        ),
        SlotView {
            state: SlotState::Empty,
            ..
        } => "empty".to_owned(),
        _ => "damaged".to_owned(),
    };
    writeln!(
        out,
        "  {:>5} {:>5}  gen {:<3} {:<9} live {:<4} stale {:<4} dirty {:<4} seg_info [{} | {}] \
         gen [{} | {}]",
        s.cache_id,
        s.phys,
        s.gen,
        role(s.role),
        s.live_keys,
        s.stale_keys,
        s.dirty_keys,
        si(&s.seg_info, 0),
        si(&s.seg_info, 1),
        gen(&s.gen_records, 0),
        gen(&s.gen_records, 1),
    )
}

fn end_name(e: LogEndKind) -> &'static str {
    match e {
        LogEndKind::Terminator => "end-of-log terminator",
        LogEndKind::NoRoom => "end of the segment",
        LogEndKind::TooManyKeys => "a kset with more than 128 keys",
        LogEndKind::BadCrc => "a kset with a bad crc",
        LogEndKind::Failed => "replay fails here",
    }
}

fn kset(out: &mut String, k: &KsetView) -> fmt::Result {
    let dirty = if k.dirty { " dirty" } else { "" };
    let line = match k.kind {
        KsetKind::Keys { key_num, size } => format!(
            "  kset {:<12} @{:<10} keys {key_num:<3} size {size:<5}{dirty}",
            k.pos.to_string(),
            k.offset
        ),
        KsetKind::Last { next } => format!(
            "  kset {:<12} @{:<10} LAST -> segment {next}{dirty}",
            k.pos.to_string(),
            k.offset
        ),
    };
    writeln!(out, "{}", line.trim_end())?;
    for key in &k.keys {
        self::key(out, key)?;
    }
    Ok(())
}

fn key(out: &mut String, k: &KeyView) -> fmt::Result {
    let state = match k.state {
        KeyState::Live => "live",
        KeyState::Stale => "stale",
        KeyState::Invalid => "INVALID",
    };
    let crc = match k.crc_ok {
        Some(true) => format!(" crc {:#010x} ok", k.data_crc),
        Some(false) => format!(" crc {:#010x} BAD", k.data_crc),
        None => String::new(),
    };
    let flags = if k.flags & pcache_format::kset::KEY_FLAG_CLEAN != 0 {
        format!("{:#x} clean", k.flags)
    } else {
        format!("{:#x}", k.flags)
    };
    let line = format!(
        "    #{:<3} off {:<12} len {:<8} flags {flags:<9} data {:<12} gen {:<3} {state}{}{crc}",
        k.index,
        k.off,
        k.len,
        k.data.to_string(),
        k.seg_gen,
        if k.dirty { " dirty" } else { "" },
    );
    writeln!(out, "{}", line.trim_end())
}

fn write_text(out: &mut String, scan: &Scan, device: &str) -> fmt::Result {
    writeln!(
        out,
        "device {device}: {} bytes, room for {} segments",
        scan.device_size, scan.superblock.device_segments
    )?;
    let sb = &scan.superblock;
    write!(out, "superblock @{}: ", sb.offset)?;
    if sb.valid {
        writeln!(out, "valid")?;
    } else {
        writeln!(out, "INVALID ({})", sb.error.as_deref().unwrap_or("?"))?;
    }
    if let Some(r) = &sb.raw {
        writeln!(
            out,
            "  crc {:#010x} flags {:#x} magic {:#018x} seg_num {} pad {:02x?}",
            r.crc, r.flags, r.magic, r.seg_num, r.pad
        )?;
    }
    if let Some(ci) = &scan.cache_info {
        dual(out, "cache_info", ci, cache_info)?;
    }
    if let Some(t) = &scan.key_tail {
        dual(out, "key_tail", t, ToString::to_string)?;
    }
    if let Some(t) = &scan.dirty_tail {
        dual(out, "dirty_tail", t, ToString::to_string)?;
    }
    if let Some(c) = &scan.chain {
        writeln!(
            out,
            "segment chain: head phys {}, {} of {} segments{}",
            c.head,
            c.found,
            c.n_segs,
            if c.complete { "" } else { " (INCOMPLETE)" }
        )?;
        if !c.segments.is_empty() {
            let count = |r: Role| c.segments.iter().filter(|s| s.role == r).count();
            writeln!(
                out,
                "  shown: {} segments: {} log, {} data, {} free, {} log+data",
                c.segments.len(),
                count(Role::Log),
                count(Role::Data),
                count(Role::Free),
                count(Role::LogAndData)
            )?;
            writeln!(out, "  cache  phys  (* = the copy the kernel uses)")?;
        }
        for s in &c.segments {
            segment(out, s)?;
        }
    }
    if let Some(l) = &scan.log {
        writeln!(
            out,
            "log: key_tail {} -> key_head {} (ends at {}), dirty_tail {}{}",
            l.key_tail,
            l.key_head,
            end_name(l.end),
            l.dirty_tail,
            if l.dirty_tail_on_log {
                ""
            } else {
                " (NOT ON THE LOG)"
            }
        )?;
        writeln!(
            out,
            "  {} ksets ({} LAST), {} keys: {} live, {} stale, {} dirty, {} invalid; {} \
             segments used",
            l.ksets,
            l.last_hops,
            l.keys,
            l.live_keys,
            l.stale_keys,
            l.dirty_keys,
            l.invalid_keys,
            l.segs_used
        )?;
        for k in &l.listed {
            kset(out, k)?;
        }
        if l.not_listed > 0 {
            writeln!(out, "  ({} more ksets not shown)", l.not_listed)?;
        }
    }
    let f = &scan.findings;
    if f.list.is_empty() {
        writeln!(out, "findings: none")?;
    } else {
        writeln!(
            out,
            "findings: {}, {}",
            crate::finding::count(f.errors(), "error"),
            crate::finding::count(f.warnings(), "warning")
        )?;
        for x in &f.list {
            writeln!(out, "  {x}")?;
        }
        for (code, n) in &f.omitted {
            writeln!(out, "  ... and {n} more {code}")?;
        }
    }
    match &scan.status {
        Some(s) => writeln!(
            out,
            "status: {s}{}",
            if scan.kernel_would_load {
                ""
            } else {
                "  (the kernel would refuse this cache)"
            }
        )?,
        None => writeln!(
            out,
            "status: none (no cache that replay could load as it is)"
        )?,
    }
    Ok(())
}
