//! Images of kernels 6.18.0 to 6.18.3, which wrote cache_info at the wrong stride.
//!
//! Those kernels addressed cache_info slot *k* as `8 192 + k × sizeof(cache_info)`, that
//! is 8 192 + 24·k, instead of `8 192 + k × 4 KiB` ("dm pcache: fix cache info indexing",
//! in 6.19 and 6.18.4). Every reader looks at 8 192 and 12 288 only, so a copy written to
//! 8 216 is never read:
//!
//! - 6.18.0 to 6.18.2 wrote each activation's copy to slot 0 (8 192) and only a second
//!   write in the same activation (a `gc_percent` message) to 8 216: the setting was lost
//!   at the next activation;
//! - 6.18.3 (which advances the slot index before writing) wrote each activation's copy to
//!   8 216: a cache it formatted has no initialised cache_info where a kernel looks, and
//!   is formatted again, everything cached lost, at the next activation.
//!
//! seg_info was written at the right 4 KiB stride by every kernel: only the slot index
//! computed at load was wrong ("dm pcache: fix segment info indexing"), and no kernel
//! rewrites seg_info after a load, so no misplaced seg_info copy exists to look for.
//!
//! The scan reports a valid copy at 8 216 as a warning (`old_618_stride`). It never uses
//! it; where no slot holds a valid copy and the misplaced one is an initialised, in-range
//! cache_info, it offers to copy it to slot 1 (`pcache-fsck --repair`), the only way
//! pcache ever uses it. The engine's strict open refuses such a cache instead of
//! formatting it ([`crate::EngineError::MisplacedCacheInfo`]).

use super::finding::{Finding, Findings, Repair, Severity};
use super::image::Image;
use super::read_opt;
use pcache_format::layout;
use pcache_format::record::{decode_meta, CacheInfo, Dual, Versioned};
use std::io;

fn describe(v: &Versioned<CacheInfo>) -> String {
    format!(
        "seq {}, seg_id {}, n_segs {}, gc_percent {}, flags {:#x}",
        v.seq,
        v.value.seg_id,
        v.value.n_segs,
        v.value.gc_percent,
        v.value.flags()
    )
}

/// Looks for a cache_info copy at 8 216 and reports it (see the module documentation).
pub(crate) fn check<M: Image + ?Sized>(
    m: &M,
    dual: &Dual<CacheInfo>,
    seg_num: u32,
    f: &mut Findings,
) -> io::Result<()> {
    let at = layout::CACHE_INFO_OFF_618;
    let Some(bytes) = read_opt(m, at, 24)? else {
        return Ok(());
    };
    let Ok(stray) = decode_meta::<CacheInfo>(&bytes, at) else {
        return Ok(());
    };
    let mut msg = format!(
        "a cache_info copy ({}) lies at byte {at} (8192 + 24): kernels 6.18.0 to 6.18.3 wrote \
         their second cache_info copy there, one structure after copy 0 instead of in the \
         4 KiB slot at 12288 (fixed in 6.18.4 and 6.19); no kernel reads it",
        describe(&stray)
    );
    let current = dual
        .latest_slot()
        .and_then(|i| dual.slots[i].valid().map(|v| (i, *v)));
    let mut repair = None;
    match current {
        Some((slot, cur)) => {
            msg.push_str(&format!(
                ", so the kernel and pcache use copy {slot} ({})",
                describe(&cur)
            ));
            // The wrapped difference read as signed is the kernel's comparison.
            #[allow(clippy::cast_possible_wrap)]
            let newer = stray.seq.wrapping_sub(cur.seq) as i8 > 0;
            if newer && stray.value != cur.value {
                msg.push_str(
                    "; the misplaced copy is the newer one: the settings it holds were lost",
                );
            }
        }
        None if stray.value.init_done && stray.value.validate(seg_num, at).is_ok() => {
            msg.push_str(
                "; it is the only initialised cache_info (a 6.18.3 kernel writes every \
                 activation's copy there), so the kernel would format the cache over it and \
                 discard everything cached; pcache refuses to open it; --repair copies it to \
                 slot 1 (byte 12288)",
            );
            repair = Some(Repair {
                from: at,
                to: layout::cache_info_off(1),
                len: 24,
            });
        }
        None => msg.push_str(
            "; it is not an initialised cache_info that fits the device: nothing to recover \
             from it",
        ),
    }
    let finding = Finding::new(
        Severity::Warning,
        "old_618_stride",
        "cache_info (6.18 stride)",
        Some(at),
        msg,
    );
    f.push(match repair {
        Some(r) => finding.with_repair(r),
        None => finding,
    });
    Ok(())
}
