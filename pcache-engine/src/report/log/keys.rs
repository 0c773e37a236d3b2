//! Checking the keys met during the log walk: the kernel's decode, staleness, data CRC,
//! oddities, and overlapping live data.

use super::{io_error, KeyState, KeyView, Src, Walker};
use crate::report::finding::{Finding, Severity};
use crate::report::image::Image;
use crate::report::Pos;
use crate::walk::{examine_key, key_offset, KeyContext, KeyOrder};
use pcache_format::kset::{KEY_FLAG_CLEAN, KEY_FLAG_EMPTY};
use pcache_format::layout;
use pcache_format::raw::RawKey;
use pcache_format::{Key, Reason};
use std::io;

/// Where a live key's data lies, and which key it is.
pub(super) struct Extent {
    pub(super) seg: u32,
    pub(super) start: u32,
    pub(super) end: u32,
    /// Absolute offset of the key.
    pub(super) at: u64,
    pub(super) kset: Pos,
    pub(super) index: u32,
}

impl Extent {
    fn label(&self) -> String {
        format!("key {}#{}", self.kset, self.index)
    }
}

impl<M: Image + ?Sized> Walker<'_, '_, M> {
    /// Decodes and checks one key the way replay does (F.2, Errata 1), and more.
    pub(super) fn check_key(
        &mut self,
        raw: &RawKey,
        kset_pos: Pos,
        index: u32,
        kset_at: u64,
        what: &str,
        in_dirty: bool,
    ) -> io::Result<KeyView> {
        let at = key_offset(kset_at, index as usize);
        self.view.keys += 1;
        let mut view = KeyView {
            index,
            off: raw.off.get(),
            len: raw.len.get(),
            flags: raw.flags.get(),
            data: Pos {
                seg: raw.cache_seg_id.get(),
                off: raw.cache_seg_off.get(),
            },
            seg_gen: raw.seg_gen.get(),
            data_crc: raw.data_crc.get(),
            state: KeyState::Invalid,
            dirty: false,
            crc_ok: None,
        };
        let dirty_note = if in_dirty && view.flags & KEY_FLAG_CLEAN == 0 {
            " (dirty data, not yet written back)"
        } else {
            ""
        };
        // The kernel's checks in the kernel's order (the data CRC before the generation),
        // which also gives pcache's verdict (the generation first).
        let src = Src(self.m);
        let cx = KeyContext {
            bounds: self.bounds,
            gen: &self.input.gens,
            data: (self.input.data_crc && self.opts.verify_data_crc)
                .then_some((&src, self.input.chain)),
            order: KeyOrder::Kernel,
            kernel_decode: true,
        };
        let examined = match examine_key(raw, kset_at, index as usize, &cx) {
            Ok(r) => r.map(Some),
            Err(e) => match io_error(e) {
                // The key decoded, but its data lies beyond the end of the device.
                None => Ok(None),
                Some(e) => return Err(e),
            },
        };
        let facts = match examined {
            Ok(facts) => facts,
            Err(e) => {
                self.view.invalid_keys += 1;
                // Spell out both terms of "off + len" for the reader.
                let reason = match e.reason {
                    Reason::OutOfRange {
                        field: "off + len",
                        limit,
                        ..
                    } => format!(
                        "off {} + len {} = {} is beyond the backing device ({limit} bytes)",
                        view.off,
                        view.len,
                        u128::from(view.off) + u128::from(view.len)
                    ),
                    r => r.to_string(),
                };
                self.f.push(Finding::refusal(
                    "key_invalid",
                    what,
                    Some(at),
                    format!("{reason}: replay fails{dirty_note}"),
                ));
                return Ok(view);
            }
        };
        let Ok(key) = Key::decode_kernel(raw, &self.bounds, at) else {
            return Ok(view);
        };
        self.lint_key(&key, raw, what, at);
        if let Err(e) = key.check_alignment(at) {
            self.f.push(Finding::new(
                Severity::Error,
                "key_misaligned",
                what,
                Some(at),
                format!(
                    "{}: the kernel accepts it, but no writer produces it and block I/O is in \
                     512-byte sectors (writeback could not write it back); pcache refuses \
                     the cache{dirty_note}",
                    e.reason
                ),
            ));
        }
        self.view.max_key_end = self.view.max_key_end.max(key.end());
        let seg = key.pos.seg as usize;
        let Some(facts) = facts else {
            self.f.push(Finding::refusal(
                "log_truncated",
                what,
                Some(at),
                "the key's data lies beyond the end of the device",
            ));
            return Ok(view);
        };
        let gen = facts.seg_gen;
        let stale = facts.is_stale();
        if facts.crc_checked {
            view.crc_ok = Some(facts.bad_crc.is_none());
        }
        if let Some(computed) = facts.bad_crc {
            let stale_note = if stale {
                " (the key is stale, but the kernel checks the crc before the generation)"
            } else {
                ""
            };
            self.f.push(Finding::refusal(
                "key_data_crc",
                what,
                Some(at),
                format!(
                    "data crc mismatch for {}+{}: stored {:#010x}, computed {computed:#010x}; \
                     replay fails{stale_note}{dirty_note}",
                    key.off, key.len, key.data_crc
                ),
            ));
        }
        let dirty = in_dirty && !key.is_clean();
        let usage = &mut self.usage[seg];
        if stale {
            view.state = KeyState::Stale;
            self.view.stale_keys += 1;
            usage.stale += 1;
            if dirty {
                self.f.push(Finding::new(
                    Severity::Error,
                    "dirty_key_stale",
                    what,
                    Some(at),
                    format!(
                        "dirty key for {}+{} has seg_gen {} but segment {seg} is at gen \
                         {gen}: replay drops it, and its data is lost",
                        key.off, key.len, key.seg_gen
                    ),
                ));
            }
        } else {
            view.state = KeyState::Live;
            view.dirty = dirty;
            self.view.live_keys += 1;
            usage.live += 1;
            // In range: decode checked cache_seg_off + len against the data size.
            let end = key.pos.off.saturating_add(key.len);
            self.extents.push(Extent {
                seg: key.pos.seg,
                start: key.pos.off,
                end,
                at,
                kset: kset_pos,
                index,
            });
            if dirty {
                usage.dirty += 1;
                self.view.dirty_keys += 1;
            }
            if key.seg_gen > gen {
                self.f.push(Finding::new(
                    Severity::Warning,
                    "key_gen_future",
                    what,
                    Some(at),
                    format!(
                        "seg_gen {} is newer than segment {seg}'s gen {gen}",
                        key.seg_gen
                    ),
                ));
            }
        }
        Ok(view)
    }

    /// Live keys whose data overlaps: the allocator only moves forward inside a segment,
    /// and a segment is reused only after its gen is bumped (which makes its old keys
    /// stale), so two live keys never share data bytes unless one overwrote the other.
    pub(super) fn check_overlaps(&mut self) {
        self.extents
            .sort_unstable_by_key(|e| (e.seg, e.start, e.end));
        let mut prev: Option<&Extent> = None;
        for e in &self.extents {
            if let Some(p) = prev {
                if p.seg == e.seg && e.start < p.end {
                    self.f.push(Finding::new(
                        Severity::Error,
                        "data_overlap",
                        e.label(),
                        Some(e.at),
                        format!(
                            "its data {}:{}+{} overlaps the data of {} ({}:{}+{}); both keys \
                             are live, so one of them reads the other's data",
                            e.seg,
                            e.start,
                            e.end - e.start,
                            p.label(),
                            p.seg,
                            p.start,
                            p.end - p.start
                        ),
                    ));
                }
                if p.seg == e.seg && p.end >= e.end {
                    continue;
                }
            }
            prev = Some(e);
        }
    }

    /// What the kernel accepts in a key but never writes.
    fn lint_key(&mut self, key: &Key, raw: &RawKey, what: &str, at: u64) {
        let mut odd = Vec::new();
        if u64::from(key.len) > layout::bytes_to_subtree_end(key.off) {
            odd.push("it crosses a 4 MiB logical boundary".to_owned());
        }
        if key.flags & KEY_FLAG_EMPTY != 0 {
            odd.push("the EMPTY flag is set".to_owned());
        }
        if key.flags & !(KEY_FLAG_EMPTY | KEY_FLAG_CLEAN) != 0 {
            odd.push(format!("undefined flags {:#x}", key.flags));
        }
        if raw.reserved.get() != 0 {
            odd.push("the reserved word is not zero".to_owned());
        }
        if !odd.is_empty() {
            self.f.push(Finding::new(
                Severity::Warning,
                "key_odd",
                what,
                Some(at),
                format!(
                    "{} (the kernel accepts it but never writes it)",
                    odd.join("; ")
                ),
            ));
        }
    }
}
