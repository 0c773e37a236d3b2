//! Reading both copies of a dual record and reporting damaged ones.

use super::finding::{Finding, Findings, Repair, Severity};
use super::image::Image;
use super::{DualView, SlotState, SlotView};
use pcache_format::record::{Dual, MetaRecord, Slot};
use pcache_format::Structure;
use std::io;

/// Reads `len` bytes at `off`, or `None` when the range is not inside the device.
pub(crate) fn read_opt<M: Image + ?Sized>(
    m: &M,
    off: u64,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= m.size() => {
            let mut buf = vec![0; len];
            m.read_at(off, &mut buf)?;
            Ok(Some(buf))
        }
        _ => Ok(None),
    }
}

/// Decodes both copies of a dual record of `R` at `at` and describes them, turning each
/// value into a view with `view`. The caller guarantees both ranges are on the device.
pub(crate) fn read_dual<M: Image + ?Sized, R: MetaRecord, V>(
    m: &M,
    at: [u64; 2],
    structure: Structure,
    view: impl Fn(R) -> V,
) -> io::Result<(Dual<R>, DualView<V>)> {
    let size = std::mem::size_of::<R::Raw>();
    let b0 = read_opt(m, at[0], size)?.unwrap_or_default();
    let b1 = read_opt(m, at[1], size)?.unwrap_or_default();
    let dual = Dual::<R>::decode([&b0, &b1], at).relabel(structure);
    let slot = |i: usize, bytes: &[u8]| {
        let empty = bytes.len() == size && bytes.iter().all(|&b| b == 0);
        match &dual.slots[i] {
            Slot::Valid(v) => SlotView {
                offset: at[i],
                state: SlotState::Valid,
                seq: Some(v.seq),
                value: Some(view(v.value)),
                error: None,
            },
            Slot::Invalid(e) => SlotView {
                offset: at[i],
                state: if empty {
                    SlotState::Empty
                } else {
                    SlotState::Damaged
                },
                seq: None,
                value: None,
                error: (!empty).then(|| e.reason.to_string()),
            },
        }
    };
    let views = DualView {
        slots: [slot(0, &b0), slot(1, &b1)],
        current: dual.latest_slot(),
    };
    Ok((dual, views))
}

/// Reports damaged copies of a dual record. A damaged copy whose twin is valid is a
/// warning with a repair; with no valid copy at all the caller decides.
///
/// `repairable` says whether the valid twin is a sound replacement; when it is not (a
/// seg_info copy without HAS_NEXT in the middle of the chain), no repair is offered, since
/// copying it would only destroy the evidence a person could recover the chain from.
pub(crate) fn check_copies<V: PartialEq>(
    view: &DualView<V>,
    what: &str,
    len: u32,
    findings: &mut Findings,
    repairable: impl Fn(&V) -> bool,
) {
    for (i, slot) in view.slots.iter().enumerate() {
        let twin = &view.slots[1 - i];
        if slot.state == SlotState::Damaged && twin.state == SlotState::Valid {
            let error = slot.error.as_deref().unwrap_or("bad crc");
            let sound = twin.value.as_ref().is_some_and(&repairable);
            let message = if sound {
                format!("damaged copy ({error}); the kernel uses copy {}", 1 - i)
            } else {
                format!(
                    "damaged copy ({error}); the kernel uses copy {}, which is not a sound \
                     replacement, so --repair leaves it",
                    1 - i
                )
            };
            let finding = Finding::new(
                Severity::Warning,
                "copy_damaged",
                format!("{what}[{i}]"),
                Some(slot.offset),
                message,
            );
            findings.push(if sound {
                finding.with_repair(Repair {
                    from: twin.offset,
                    to: slot.offset,
                    len,
                })
            } else {
                finding
            });
        }
    }
    if let [SlotView {
        seq: Some(a),
        value: Some(va),
        ..
    }, SlotView {
        seq: Some(b),
        value: Some(vb),
        ..
    }] = &view.slots
    {
        if a == b && va != vb {
            findings.push(Finding::new(
                Severity::Warning,
                "copies_disagree",
                what,
                Some(view.slots[0].offset),
                format!("both copies have seq {a} but differ; the kernel takes copy 0"),
            ));
        }
    }
}
