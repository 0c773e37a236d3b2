//! The power-cut proof of the shared cache device's table (steps SF1, SF2, TB1, CR1 of
//! `docs/design.md`; CR2 and RM1 are TB1): a test of its own, so that `cargo xtask crash
//! --mutants` can run it once per mutant of those steps.

use pcache_engine::backing::MemBacking;
use pcache_engine::media::CacheMedia;
use pcache_engine::shared::{create, format, remove, SharedDevice, SharedError};
use pcache_engine::testing::new_cache;
use pcache_engine::testing::{CrashMedia, SplitMix};
use pcache_engine::{Cache, CacheConfig};
use std::sync::Arc;

const MIB: u64 = 1 << 20;
/// Room for three smallest caches and a bit.
const DEV: u64 = 2 * MIB + 3 * 512 * MIB + 100 * MIB;

/// The power-cut proof of the table updates: format, three creates and two removes on a
/// crash-recording device, cut after every fence (with and without torn unfenced
/// stores). At every cut the device is unformatted or refused as damaged (before SF2),
/// or its table is the one of the last committed operation or of the one in flight; and
/// every cache the table lists opens.
#[test]
fn power_cuts_during_table_updates() {
    let crash = Arc::new(CrashMedia::new(DEV));
    let device: Arc<dyn CacheMedia> = crash.clone();
    let mut dev = format(&*device, [4; 16]).unwrap();
    // (fence count once the operation returned, table after it)
    let mut states = vec![(crash.events(), dev.table().unwrap().clone())];
    let mut op = |f: &mut dyn FnMut(&mut SharedDevice)| {
        f(&mut dev);
        states.push((crash.events(), dev.table().unwrap().clone()));
    };
    op(&mut |d| drop(create(&device, d, new_cache("a", 512 * MIB, "b1")).unwrap()));
    op(&mut |d| drop(create(&device, d, new_cache("b", 600 * MIB, "b2")).unwrap()));
    op(&mut |d| drop(remove(&device, d, "a", false).unwrap()));
    op(&mut |d| drop(create(&device, d, new_cache("c", 512 * MIB, "b3")).unwrap()));
    op(&mut |d| drop(remove(&device, d, "b", true).unwrap()));
    let total = crash.events();
    let mut rng = SplitMix(7);
    let mut checked = 0;
    for cut in 0..=total {
        for torn in [None, Some(rng.next_u64()), Some(rng.next_u64())] {
            let image: Arc<dyn CacheMedia> = Arc::new(crash.crash_image(cut, torn));
            if cut < states[0].0 {
                // Format in flight: nothing, or a refusal; never a table.
                match SharedDevice::read(&*image) {
                    Err(SharedError::NotShared | SharedError::Damaged { .. }) => {}
                    Ok(d) => assert!(d.table().is_err() || cut + 1 >= states[0].0),
                    Err(e) => panic!("cut {cut}: {e}"),
                }
                continue;
            }
            let d = SharedDevice::read(&*image).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let t = d.table().unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let i = states.iter().rposition(|(f, _)| *f <= cut).unwrap();
            // Unfenced stores of the next commit may have landed whole (torn images).
            let ok = t == &states[i].1
                || (torn.is_some() && states.get(i + 1).is_some_and(|(_, s)| s == t));
            assert!(
                ok,
                "cut {cut}: table seq {} (committed: {})",
                t.seq, states[i].1.seq
            );
            for e in &t.entries {
                let w: Arc<dyn CacheMedia> = Arc::new(SharedDevice::window(&image, e).unwrap());
                let c = Cache::open(
                    w,
                    Arc::new(MemBacking::new(e.backing.size)),
                    CacheConfig {
                        read_only: true,
                        background: false,
                        ..CacheConfig::default()
                    },
                )
                .unwrap_or_else(|err| panic!("cut {cut}, cache {}: {err}", e.name));
                c.close().unwrap();
            }
            checked += 1;
        }
    }
    // Every cut after the format was checked three times; each create is several fences
    // (CR1 twice, F1, A1, CR2).
    assert_eq!(checked, 3 * (total - states[0].0 + 1));
    assert!(total - states[0].0 >= 3 * 5 + 2, "{total} fences");
}
