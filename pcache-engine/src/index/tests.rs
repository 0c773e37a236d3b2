use super::*;
use proptest::prelude::*;

/// The model: for each 512-byte sector of a 4 MiB region, which write (by number) it holds
/// and that write's sector index, or nothing.
type Model = Vec<Option<(u32, u32)>>;

const SECTORS: u32 = 64; // a small region is enough to exercise every overlap shape

fn ext_for(write: u32, len_sectors: u32) -> Extent {
    // Encode the write number in the segment id and put its data at offset 0, so the
    // sector an extent byte comes from is recoverable as (seg, seg_off / 512).
    Extent::new(write, 0, len_sectors * 512, 7, write % 2 == 1)
}

fn flatten(t: &Subtree) -> Model {
    let mut m = vec![None; SECTORS as usize];
    let mut last_end = 0;
    for (start, e) in t.iter() {
        assert!(start >= last_end, "extents overlap at {start}");
        assert!(e.len() > 0, "empty extent at {start}");
        assert_eq!(e.len() % 512, 0);
        last_end = start + e.len();
        for i in 0..e.len() / 512 {
            m[(start / 512 + i) as usize] = Some((e.seg, e.seg_off / 512 + i));
        }
        assert_eq!(e.is_clean(), e.seg % 2 == 1, "flags survive cuts");
        assert!(e.is_live(7) && !e.is_live(8), "generation survives cuts");
    }
    let bytes: u64 = t.iter().map(|(_, e)| u64::from(e.len())).sum();
    assert_eq!(t.bytes(), bytes, "the byte count follows the extents");
    m
}

proptest! {
    /// Any sequence of inserts leaves the index equal to "the newest write wins, sector by
    /// sector", with every cut extent still pointing at the right source bytes.
    #[test]
    fn newest_wins(writes in prop::collection::vec((0..SECTORS, 1..=16u32), 1..40)) {
        let mut t = Subtree::default();
        let mut model: Model = vec![None; SECTORS as usize];
        for (n, &(start, len)) in writes.iter().enumerate() {
            let len = len.min(SECTORS - start);
            let n = n as u32;
            t.insert(start * 512, ext_for(n, len));
            for i in 0..len {
                model[(start + i) as usize] = Some((n, i));
            }
            prop_assert_eq!(flatten(&t), model.clone());
        }
        // `dirty_held` finds exactly the sectors each dirty write still holds, with the
        // segment offsets of its own bytes (odd writes are clean: never held dirty).
        for (n, &(start, len)) in writes.iter().enumerate() {
            let len = len.min(SECTORS - start);
            let n = n as u32;
            let mut out = Vec::new();
            t.dirty_held(start * 512, &ext_for(n, len), &mut out);
            let mut got: Model = vec![None; SECTORS as usize];
            let mut last_end = 0;
            for &(s, seg_off, l) in &out {
                prop_assert!(s >= last_end && l > 0, "pieces in order, not empty");
                last_end = s + l;
                for i in 0..l / 512 {
                    got[(s / 512 + i) as usize] = Some((n, seg_off / 512 + i));
                }
            }
            let want: Model = model
                .iter()
                .map(|&m| m.filter(|&(w, _)| w == n && n.is_multiple_of(2)))
                .collect();
            prop_assert_eq!(got, want);
        }
        // `overlapping` returns exactly the extents touching a range.
        for s in 0..SECTORS {
            let mut out = Vec::new();
            t.overlapping(s * 512, (s + 1) * 512, &mut out);
            prop_assert_eq!(out.len(), usize::from(model[s as usize].is_some()));
        }
        // ... and, for any range, exactly the extents a full scan finds, in order.
        for s in 0..SECTORS {
            for e in s + 1..=SECTORS {
                let (s, e) = (s * 512, e * 512);
                let mut out = Vec::new();
                t.overlapping(s, e, &mut out);
                let want: Vec<_> = t
                    .iter()
                    .filter(|&(k, x)| k < e && k + x.len() > s)
                    .map(|(k, x)| (k, *x))
                    .collect();
                prop_assert_eq!(out, want);
            }
        }
    }
}

#[test]
fn split_inside() {
    let mut t = Subtree::default();
    t.insert(0, Extent::new(1, 0, 8 * 512, 0, false));
    t.insert(2 * 512, Extent::new(2, 0, 2 * 512, 0, false));
    let v: Vec<_> = t
        .iter()
        .map(|(s, e)| (s, e.seg, e.seg_off, e.len()))
        .collect();
    assert_eq!(
        v,
        vec![(0, 1, 0, 1024), (1024, 2, 0, 1024), (2048, 1, 2048, 2048)]
    );
}

#[test]
fn extent_is_small() {
    assert_eq!(std::mem::size_of::<Extent>(), 16);
}
