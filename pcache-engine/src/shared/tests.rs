use super::*;
use crate::backing::MemBacking;
use crate::media::MemMedia;
use crate::testing::new_cache;
use std::sync::atomic::{AtomicUsize, Ordering};

const MIB: u64 = 1 << 20;
/// Room for three smallest caches and a bit.
const DEV: u64 = 2 * MIB + 3 * 512 * MIB + 100 * MIB;

/// A media that counts the calls that could change it.
struct Counting {
    inner: MemMedia,
    changes: AtomicUsize,
}

impl CacheMedia for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.inner.read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.inner.write(off, data)
    }
    fn zero(&self, off: u64, len: u64) -> Result<(), MediaError> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.inner.zero(off, len)
    }
    fn fill(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.inner.fill(off, len, f)
    }
    fn flush(&self, _: u64, _: u64) {}
    fn fence(&self) {}
}

fn counting() -> Arc<Counting> {
    Arc::new(Counting {
        inner: MemMedia::new(DEV),
        changes: AtomicUsize::new(0),
    })
}

fn open(device: &Arc<dyn CacheMedia>, dev: &SharedDevice, name: &str) -> (Cache, Arc<MemBacking>) {
    let entry = dev.entry(name).unwrap();
    let w: Arc<dyn CacheMedia> = Arc::new(SharedDevice::window(device, entry).unwrap());
    let backing = Arc::new(MemBacking::new(entry.backing.size));
    let cache = Cache::open(
        w,
        backing.clone(),
        CacheConfig {
            background: false,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    (cache, backing)
}

fn three(device: &Arc<dyn CacheMedia>) -> SharedDevice {
    let mut dev = format(&**device, [9; 16]).unwrap();
    for (name, b) in [("db", "vdb"), ("logs", "vdc"), ("web", "vdd")] {
        create(device, &mut dev, new_cache(name, 512 * MIB, b)).unwrap();
    }
    dev
}

#[test]
fn three_caches_side_by_side() {
    let device: Arc<dyn CacheMedia> = Arc::new(MemMedia::new(DEV));
    let dev = three(&device);
    let t = dev.table().unwrap();
    let names: Vec<&str> = t.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["db", "logs", "web"]);
    assert_eq!(t.entries[0].start, 2 * MIB);
    assert_eq!(t.entries[1].start, 2 * MIB + 512 * MIB);
    // Each is a kernel cache of its own: write a different pattern through each, and each
    // reads back only its own after a reopen.
    for (i, name) in ["db", "logs", "web"].iter().enumerate() {
        let (c, _) = open(&device, &dev, name);
        c.write(0, 0, &vec![i as u8 + 1; 64 << 10], true).unwrap();
        c.close().unwrap();
    }
    for (i, name) in ["db", "logs", "web"].iter().enumerate() {
        let (c, _) = open(&device, &dev, name);
        let mut buf = vec![0; 64 << 10];
        c.read(0, 0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8 + 1), "{name}");
        assert_eq!(c.status().kernel.seg_num, 31);
        c.close().unwrap();
    }
    // The whole device is not a kernel cache: its superblock magic is the shared one.
    assert!(crate::load::superblock(&*device).is_err());
}

#[test]
fn bad_requests_change_nothing() {
    let m = counting();
    let device: Arc<dyn CacheMedia> = m.clone();
    let mut dev = three(&device);
    let before = m.changes.load(Ordering::Relaxed);
    let cases: Vec<(NewCache, &str)> = vec![
        (new_cache("db", 512 * MIB, "vde"), "exists already"),
        (
            new_cache("new", 512 * MIB, "vdb"),
            "already the backing device of cache \"db\"",
        ),
        (
            new_cache("new", 512 * MIB, "vde"),
            "no free range of 536870912 bytes",
        ),
        (
            new_cache("new", 100 * MIB, "vde"),
            "at least 536870912 bytes",
        ),
        (new_cache("a/b", 512 * MIB, "vde"), "bad cache name"),
        (new_cache("42", 512 * MIB, "vde"), "all digits"),
    ];
    for (s, want) in cases {
        let e = create(&device, &mut dev, s).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    assert!(matches!(
        remove(&device, &mut dev, "nope", false),
        Err(SharedError::NoSuchCache(_))
    ));
    assert_eq!(m.changes.load(Ordering::Relaxed), before);
}

#[test]
fn removal_refuses_dirty_data_unless_forced() {
    let device: Arc<dyn CacheMedia> = Arc::new(MemMedia::new(DEV));
    let mut dev = three(&device);
    let (c, _) = open(&device, &dev, "logs");
    c.write(0, 4096, &[5; 8192], true).unwrap();
    c.close().unwrap();
    let e = remove(&device, &mut dev, "logs", false).unwrap_err();
    assert!(matches!(e, SharedError::Dirty { dirty: 8192, .. }), "{e}");
    assert_eq!(dev.table().unwrap().entries.len(), 3);
    // Written back, it goes.
    let (c, backing) = open(&device, &dev, "logs");
    c.writeback_all().unwrap();
    c.close().unwrap();
    let mut got = [0; 8192];
    backing.read_at(4096, &mut got).unwrap();
    assert_eq!(got, [5; 8192]);
    let gone = remove(&device, &mut dev, "2", false).unwrap();
    assert_eq!(gone.name, "logs");
    assert!(dev.entry("logs").is_err());
    // Its range is free again; ids are not reused.
    let e = create(&device, &mut dev, new_cache("again", 512 * MIB, "vdc")).unwrap();
    assert_eq!((e.start, e.id), (2 * MIB + 512 * MIB, 4));
    // A dirty cache goes with --force.
    let (c, _) = open(&device, &dev, "web");
    c.write(0, 0, &[1; 4096], true).unwrap();
    c.close().unwrap();
    remove(&device, &mut dev, "web", true).unwrap();
}

#[test]
fn a_damaged_table_copy() {
    let m = counting();
    let device: Arc<dyn CacheMedia> = m.clone();
    let mut dev = three(&device);
    let latest = dev.copies.latest().unwrap();
    // The older copy damaged: nothing changes for readers or writers.
    device
        .write(table_slot_off(1 - latest) + 100, &[0xEE])
        .unwrap();
    let dev2 = SharedDevice::read(&*device).unwrap();
    assert_eq!(dev2.table().unwrap(), dev.table().unwrap());
    // The latest damaged: the older copy is the table (one cache fewer).
    device.write(table_slot_off(latest) + 100, &[0xEE]).unwrap();
    device
        .write(
            table_slot_off(1 - latest) + 100,
            &dev.table().unwrap().encode()[100..101],
        )
        .unwrap();
    let older = SharedDevice::read(&*device).unwrap();
    assert_eq!(older.table().unwrap().entries.len(), 2);
    // Both damaged: every operation refuses and writes nothing.
    device
        .write(table_slot_off(1 - latest) + 100, &[0xEE])
        .unwrap();
    dev = SharedDevice::read(&*device).unwrap();
    let before = m.changes.load(Ordering::Relaxed);
    assert!(matches!(dev.table(), Err(SharedError::Damaged { .. })));
    let e = create(&device, &mut dev, new_cache("x", 512 * MIB, "vde")).unwrap_err();
    assert!(e.to_string().contains("cache table"), "{e}");
    assert!(remove(&device, &mut dev, "db", true).is_err());
    assert_eq!(m.changes.load(Ordering::Relaxed), before);
    // Not a shared device at all.
    let plain: Arc<dyn CacheMedia> = Arc::new(crate::testing::formatted(DEV));
    assert!(matches!(
        SharedDevice::read(&*plain),
        Err(SharedError::NotShared)
    ));
    assert!(matches!(
        format(&MemMedia::new(SHARED_DEV_SIZE_MIN - 1), [0; 16]),
        Err(SharedError::TooSmall { .. })
    ));
}
