//! Every on-media record parser of `pcache-format` on arbitrary bytes, with the
//! properties each must keep: nothing panics, what parses re-encodes to the same bytes
//! (or the same value), what validates is in range, and a sealed kset reads back.

use pcache_format::bitrot::{one_bit_damage, KsetShape};
use pcache_format::kset::{encode_last_kset, read_kset, KsetBuf, KsetRead};
use pcache_format::layout::{self, CachePos, SegmentChain, KSET_SIZE_MAX, SEG_DATA_SIZE};
use pcache_format::raw::RawKey;
use pcache_format::record::{
    decode_meta, encode_meta, next_write, select_latest, CacheInfo, Dual, MetaRecord, SegGen,
    SegInfo, Superblock, TailPos,
};
use pcache_format::{CacheMode, FormatError, Key, KeyBounds, Structure};
use zerocopy::{FromBytes, IntoBytes};

/// A little reader of the fuzz input's leading parameters.
struct Params<'a>(&'a [u8]);

impl Params<'_> {
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let n = self.0.len().min(4);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u32::from_le_bytes(b)
    }
}

/// Runs every parser over `data`.
pub fn run(data: &[u8]) {
    let (params, body) = data.split_at(data.len().min(12));
    let mut p = Params(params);
    // Small values most of the time: the interesting boundaries are small.
    let room = match p.u32() {
        r if r & 1 == 0 => r >> 1,
        r => (r >> 1) % (KSET_SIZE_MAX * 2),
    };
    let n_segs = p.u32() % 64;
    let backing = u64::from(p.u32()) << (n_segs % 24);
    superblock(body, backing);
    meta::<CacheInfo>(body, |v| {
        let _ = v.validate(n_segs, 0);
        let _ = v.lint();
        let raw = <CacheInfo as MetaRecord>::Raw::read_from_prefix(body)
            .expect("decoded")
            .0;
        assert_eq!(v.flags(), raw.flags.get(), "cache_info flags round trip");
    });
    meta::<SegInfo>(body, |v| {
        let raw = <SegInfo as MetaRecord>::Raw::read_from_prefix(body)
            .expect("decoded")
            .0;
        assert_eq!(v.flags(), raw.flags.get(), "seg_info flags round trip");
        assert_eq!(v.next().is_some(), v.has_next);
    });
    meta::<SegGen>(body, |_| {});
    meta::<TailPos>(body, |v| {
        if v.validate(n_segs, Structure::KeyTail, 0).is_ok() {
            assert!(v.0.seg < n_segs && v.0.off < SEG_DATA_SIZE);
        }
    });
    duals(body);
    kset(body, room, n_segs, backing);
    chain(body, n_segs);
    misc(body);
}

fn show(e: &FormatError) {
    // Display and Debug never panic.
    let _ = format!("{e} {e:?}");
}

fn superblock(body: &[u8], device: u64) {
    let _ = Superblock::is_unformatted(body);
    match Superblock::parse(body) {
        Ok(sb) => {
            assert_eq!(&sb.encode()[..], &body[..24], "the superblock re-encodes");
            match sb.check_device(device) {
                Ok(()) => assert!(sb.seg_num > 0 && sb.seg_num <= layout::max_seg_num(device)),
                Err(e) => show(&e),
            }
        }
        Err(e) => show(&e),
    }
}

/// Decodes one copy of `R`; a valid one re-encodes to a record that decodes to the same
/// value, and to the very bytes when version and res are zero.
fn meta<R: MetaRecord + PartialEq + core::fmt::Debug>(body: &[u8], more: impl Fn(&R)) {
    let size = core::mem::size_of::<R::Raw>();
    match decode_meta::<R>(body, 4096) {
        Ok(v) => {
            let raw = encode_meta(&v.value, v.seq);
            let again = decode_meta::<R>(raw.as_bytes(), 0).expect("an encoded record decodes");
            assert_eq!(again.value, v.value, "{:?} round trip", R::STRUCTURE);
            assert_eq!(again.seq, v.seq);
            if body[5..8] == [0, 0, 0] {
                assert_eq!(
                    raw.as_bytes(),
                    &body[..size],
                    "{:?} re-encodes",
                    R::STRUCTURE
                );
            }
            more(&v.value);
        }
        Err(e) => {
            assert!(
                body.len() >= size || matches!(e.reason, pcache_format::Reason::Truncated { .. })
            );
            show(&e);
        }
    }
}

fn duals(body: &[u8]) {
    let half = body.len() / 2;
    let (a, b) = body.split_at(half);
    let d = Dual::<CacheInfo>::decode([a, b], [0, 4096]).relabel(Structure::CacheInfo);
    let latest = d.latest_slot();
    let seqs = [
        d.slots[0].valid().map(|v| v.seq),
        d.slots[1].valid().map(|v| v.seq),
    ];
    assert_eq!(latest, select_latest(seqs));
    match latest {
        Some(i) => {
            assert!(seqs[i].is_some(), "the latest copy is a valid one");
            let (slot, seq) = d.next_write();
            assert_eq!(slot, 1 - i, "the next write goes to the other slot");
            assert_eq!(seq, seqs[i].unwrap_or(0).wrapping_add(1));
        }
        None => {
            assert_eq!(seqs, [None, None]);
            assert_eq!(d.next_write(), (1, 1));
        }
    }
    let _ = next_write(latest.map(|i| (i + usize::from(body.first().copied().unwrap_or(0)), 0)));
    let d = Dual::<TailPos>::decode([a, b], [0, 16]).relabel(Structure::DirtyTail);
    for s in &d.slots {
        if let pcache_format::Slot::Invalid(e) = s {
            assert_eq!(e.structure, Structure::DirtyTail);
        }
    }
}

/// The kset reader, the bit-flip finder and the key decoder, on the body as a log
/// position with `room` bytes left in its segment.
fn kset(body: &[u8], room: u32, n_segs: u32, backing: u64) {
    let at = layout::data_area_off(1);
    let bounds = KeyBounds {
        backing_size: backing,
        n_segs,
    };
    let valid = match read_kset(body, room, n_segs, at) {
        Ok(KsetRead::Keys { keys, size }) => {
            assert_eq!(size, layout::kset_size(keys.len() as u32));
            assert!(size <= room && size as usize <= body.len() && keys.len() <= 128);
            for (i, raw) in keys.iter().enumerate() {
                key(raw, &bounds, at + 24 + 40 * i as u64);
            }
            // The same keys, sealed again, read back as the same kset.
            let mut buf = KsetBuf::new();
            for k in keys {
                assert!(buf.push(k));
            }
            let sealed = buf.seal().to_vec();
            match read_kset(&sealed, room, n_segs, at) {
                Ok(KsetRead::Keys { keys: again, .. }) => {
                    assert_eq!(again.as_bytes(), keys.as_bytes(), "a resealed kset");
                }
                other => panic!("a resealed kset reads as {other:?}"),
            }
            Some(KsetShape::Keys {
                key_num: keys.len() as u32,
                size,
            })
        }
        Ok(KsetRead::Last { next }) => {
            assert!(next < n_segs);
            assert_eq!(&encode_last_kset(next)[4..8], &body[4..8]);
            Some(KsetShape::Last { next })
        }
        Ok(KsetRead::End(_)) => None,
        Err(e) => {
            show(&e);
            None
        }
    };
    if let Some(flip) = one_bit_damage(body, room, n_segs) {
        assert!(valid.is_none(), "a valid kset is not damaged");
        let mut fixed = body.to_vec();
        let byte = fixed
            .get_mut(flip.byte as usize)
            .expect("the flipped bit is inside the bytes");
        *byte ^= 1 << flip.bit;
        let shape = match read_kset(&fixed, room, n_segs, at) {
            Ok(KsetRead::Keys { keys, size }) => KsetShape::Keys {
                key_num: keys.len() as u32,
                size,
            },
            Ok(KsetRead::Last { next }) => KsetShape::Last { next },
            other => panic!("the repaired kset reads as {other:?}"),
        };
        assert_eq!(shape, flip.was, "the repaired kset is what the finder said");
    }
    // Any 40 bytes as a key.
    if let Ok((raw, _)) = RawKey::read_from_prefix(body) {
        key(&raw, &bounds, at);
    }
}

fn key(raw: &RawKey, bounds: &KeyBounds, at: u64) {
    let kernel = Key::decode_kernel(raw, bounds, at);
    match Key::decode(raw, bounds, at) {
        Ok(k) => {
            assert_eq!(
                kernel.as_ref().ok(),
                Some(&k),
                "decode is decode_kernel and more"
            );
            assert!(k.len > 0 && k.end() <= bounds.backing_size);
            assert!(k.pos.seg < bounds.n_segs);
            assert!(u64::from(k.pos.off) + u64::from(k.len) <= u64::from(SEG_DATA_SIZE));
            assert!(u64::from(k.len) <= layout::bytes_to_subtree_end(k.off));
            assert_eq!(
                layout::subtree_of(k.off),
                layout::subtree_of(k.end() - 1),
                "a key stays in its 4 MiB region"
            );
            let back = Key::decode(&k.to_raw(), bounds, at).expect("an encoded key decodes");
            assert_eq!(back.off, k.off);
            assert_eq!(back.pos, k.pos);
            assert_eq!(back.flags, k.flags & !pcache_format::kset::KEY_FLAG_EMPTY);
        }
        Err(e) => show(&e),
    }
    if let Err(e) = kernel {
        show(&e);
    }
}

/// The segment chain walked over links taken from the body.
fn chain(body: &[u8], n_segs: u32) {
    let seg_num = (n_segs % 40).max(1);
    let links: Vec<Option<u32>> = body
        .chunks(2)
        .map(|c| match c {
            [a, b] if *a != 0xff => Some(u32::from(*b) % (seg_num + 2)),
            _ => None,
        })
        .collect();
    let first = links.first().copied().flatten().unwrap_or(0);
    let res = SegmentChain::walk(first, n_segs.max(1) % (seg_num + 2), seg_num, |phys| {
        Ok(links.get(phys as usize).copied().flatten())
    });
    match res {
        Ok(c) => {
            let mut seen = std::collections::HashSet::new();
            for &p in c.as_slice() {
                assert!(
                    p < seg_num && seen.insert(p),
                    "a chain is in range, without repeats"
                );
            }
            let _ = c.abs(CachePos::new(c.len(), 0));
        }
        Err(e) => show(&e),
    }
}

fn misc(body: &[u8]) {
    for &b in body.iter().take(4) {
        if let Some(m) = CacheMode::from_value(b) {
            assert_eq!(m.value(), b);
            assert_eq!(m.name().parse::<CacheMode>(), Ok(m));
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = s.parse::<CacheMode>();
    }
    if let Ok((n, _)) = u64::read_from_prefix(body) {
        let _ = layout::seg_num_for_device(n);
        let _ = layout::max_seg_num(n);
        let _ = layout::raw_seg_count(n);
        let _ = layout::kset_index(n, (n >> 40) as u32);
        let _ = layout::bytes_to_subtree_end(n);
    }
}
