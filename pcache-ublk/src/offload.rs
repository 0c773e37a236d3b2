//! Requests that may wait for the backing device run off the queue thread.
//!
//! A queue thread serves a request that stays in the cache itself, at the cost of the
//! memory copy. A read that misses (or a discard, which goes to the backing device) may
//! wait for milliseconds; served on the queue thread it would hold up every other request
//! of the queue, so the queue would have one request in flight whatever its depth. Such
//! requests go instead to the queue's [`Pool`] of worker threads, which run them
//! ([`request::handle`]) and post their results to the queue's [`Mailbox`]. The mailbox's
//! eventfd is polled on the queue's io_uring, so the queue thread wakes up and completes
//! them: only the queue thread touches its ring (libublk's rings are per thread).
//!
//! In user-copy mode a worker moves the data itself, with `pread`/`pwrite` on
//! `/dev/ublkcN`, which any thread may do. In copy mode the data lives in the request's
//! per-tag buffer: the queue thread lends it to the worker ([`TagBuf`]) and touches it
//! again only once the worker's result is back, when it commits the request (the kernel
//! copies a read's data out of the buffer at that commit).
//!
//! Ordering: the block layer orders nothing among requests in flight, and a FLUSH only
//! covers requests that had completed, so completing offloaded requests later than
//! requests that arrived after them is allowed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use libublk::helpers::IoBuf;

use crate::request::{self, DataPath, IoDesc};
use crate::target::Target;

/// Results posted by workers, for the queue thread to complete, and the eventfd that
/// wakes it.
pub struct Mailbox {
    done: Mutex<Vec<(u16, i32)>>,
    efd: OwnedFd,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("efd", &self.efd.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// An empty mailbox with a fresh non-blocking eventfd.
    ///
    /// # Errors
    /// `eventfd(2)` failed.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor eventfd just returned, owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Mailbox {
            done: Mutex::new(Vec::new()),
            efd,
        })
    }

    /// The eventfd, readable while results wait.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Posts the result `res` of request `tag` and wakes the queue thread.
    pub fn post(&self, tag: u16, res: i32) {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((tag, res));
        let one = 1_u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array to our own eventfd.
        let rc = unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
        if rc != 8 {
            // Only an overflow of the 2^64 - 2 counter fails, and the queue thread is
            // then already due to wake up.
            tracing::trace!(error = %io::Error::last_os_error(), "eventfd write");
        }
    }

    /// Takes every posted result. Resets the eventfd first, so a result posted after the
    /// reset leaves the eventfd readable and is found by the next poll.
    pub fn take(&self, out: &mut Vec<(u16, i32)>) {
        let mut buf = [0_u8; 8];
        // SAFETY: reads at most 8 bytes into a live local array from our own non-blocking
        // eventfd; EAGAIN (nothing posted) is fine.
        let _ = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        out.append(&mut done);
    }
}

/// A request's per-tag buffer (copy mode), lent to a worker for that request.
pub struct TagBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl std::fmt::Debug for TagBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagBuf({} bytes)", self.len)
    }
}

// SAFETY: a `TagBuf` is the exclusive loan of a buffer to the one worker that serves its
// request (the contract of `TagBuf::lend`); moving it to that thread moves the loan.
unsafe impl Send for TagBuf {}

impl TagBuf {
    /// Lends `buf` to a worker.
    ///
    /// # Safety
    /// Until the worker's result for this request has been taken from the mailbox, the
    /// caller must neither read nor write `buf`, nor commit the request (the kernel reads
    /// a read's data out of it at commit), and `buf` must stay allocated.
    pub unsafe fn lend(buf: &mut [u8]) -> Self {
        TagBuf {
            ptr: std::ptr::NonNull::from(&mut *buf).cast(),
            len: buf.len(),
        }
    }

    /// The lent bytes, for the worker.
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `lend`'s contract: the buffer is allocated and nobody else touches it
        // while the worker holds the loan; `&mut self` makes this the only slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A request handed to a worker.
struct Job {
    tag: u16,
    desc: IoDesc,
    /// Copy mode: the request's buffer; user-copy mode: none.
    buf: Option<TagBuf>,
}

/// The worker threads of one queue.
pub struct Pool {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// What a worker needs: the target, the ublk character device for user copy, the queue,
/// the largest request, and where results go.
pub struct WorkerEnv {
    /// The target.
    pub target: Arc<dyn Target>,
    /// User-copy mode: `/dev/ublkcN` (or, in tests, anything that moves request data);
    /// copy mode: none (each job brings its buffer).
    pub dev: Option<Arc<dyn request::UserCopyIo + Send + Sync>>,
    /// The queue id.
    pub qid: u16,
    /// The largest request in bytes.
    pub max_io: usize,
    /// Where results go.
    pub mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for WorkerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerEnv")
            .field("qid", &self.qid)
            .field("max_io", &self.max_io)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `threads` workers for one queue.
    ///
    /// # Errors
    /// A thread could not be started (the ones started are stopped again).
    pub fn start(threads: usize, env: &Arc<WorkerEnv>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Pool {
            tx: Some(tx),
            workers: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let env = Arc::clone(env);
            let h = std::thread::Builder::new()
                .name(format!("pcache-q{}w{i}", env.qid))
                .spawn(move || work(&env, &rx))?;
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Hands request `tag` to a worker, with its buffer in copy mode. Gives the request
    /// back if the workers are gone (then the caller serves it itself: the loan of the
    /// buffer ends with the returned error).
    pub fn submit(&self, tag: u16, desc: IoDesc, buf: Option<TagBuf>) -> Result<(), (u16, IoDesc)> {
        match &self.tx {
            Some(tx) => tx
                .send(Job { tag, desc, buf })
                .map_err(|mpsc::SendError(j)| (j.tag, j.desc)),
            None => Err((tag, desc)),
        }
    }

    /// Lets the workers finish what they were given, and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx = None;
        for h in self.workers.drain(..) {
            if h.join().is_err() {
                tracing::error!("a queue worker panicked");
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(env: &WorkerEnv, rx: &Mutex<Receiver<Job>>) {
    // Allocated on the first job: a pool that never sees a miss costs no memory.
    let mut scratch: Option<IoBuf<u8>> = None;
    loop {
        let mut job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(j) => j,
            Err(mpsc::RecvError) => return,
        };
        let res = match (job.buf.as_mut(), &env.dev) {
            (Some(buf), _) => request::handle(
                &*env.target,
                env.qid,
                &job.desc,
                DataPath::Buffer(buf.as_mut_slice()),
            ),
            (None, Some(dev)) => {
                // Twice the largest request (see `DataPath::UserCopy`).
                let buf = scratch.get_or_insert_with(|| IoBuf::<u8>::new(2 * env.max_io));
                let data = DataPath::UserCopy {
                    dev: &**dev,
                    pos: request::user_copy_pos(env.qid, job.tag),
                    scratch: buf.as_mut_slice(),
                };
                request::handle(&*env.target, env.qid, &job.desc, data)
            }
            (None, None) => -libc::EINVAL,
        };
        // The loan of a copy-mode buffer ends here, before the queue thread can see the
        // result.
        job.buf = None;
        env.mailbox.post(job.tag, res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Errno, MemTarget};
    use libublk::sys;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    /// A fake `/dev/ublkcN` shared by threads: each request position has its own bytes.
    #[derive(Default)]
    struct SharedCdev(Mutex<HashMap<u64, Vec<u8>>>);

    impl request::UserCopyIo for SharedCdev {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            let m = self.0.lock().unwrap();
            let base = pos & !((1 << sys::UBLK_TAG_OFF) - 1);
            let data = m.get(&base).ok_or(io::ErrorKind::NotFound)?;
            let at = (pos - base) as usize;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            Ok(buf.len())
        }
        fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
            let mut m = self.0.lock().unwrap();
            let base = pos & !((1 << sys::UBLK_TAG_OFF) - 1);
            let data = m.entry(base).or_default();
            let at = (pos - base) as usize;
            if data.len() < at + buf.len() {
                data.resize(at + buf.len(), 0);
            }
            data[at..at + buf.len()].copy_from_slice(buf);
            Ok(buf.len())
        }
    }

    /// A target whose reads of one range wait until released: a slow backing device.
    struct Gate {
        inner: MemTarget,
        open: Mutex<bool>,
        cv: std::sync::Condvar,
    }

    impl Target for Gate {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read(&self, q: u32, off: u64, buf: &mut [u8]) -> Result<(), Errno> {
            if off == 0 {
                let mut open = self.open.lock().unwrap();
                while !*open {
                    open = self.cv.wait(open).unwrap();
                }
            }
            self.inner.read(q, off, buf)
        }
        fn write(&self, q: u32, off: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
            self.inner.write(q, off, data, fua)
        }
        crate::target::no_op_control!();
    }

    fn read_desc(sector: u64, sectors: u32) -> IoDesc {
        IoDesc {
            op_flags: sys::UBLK_IO_OP_READ,
            nr_sectors: sectors,
            start_sector: sector,
        }
    }

    fn wait_for(mb: &Mailbox, n: usize) -> Vec<(u16, i32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "results did not arrive: {got:?}");
            let mut pfd = libc::pollfd {
                fd: mb.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one live pollfd for at most 100 ms.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            mb.take(&mut got);
        }
        got
    }

    /// A request held up by the backing device does not hold up the others: with two
    /// workers, a read of another range completes while the first still waits; then the
    /// first completes too, each with its data in its own request.
    #[test]
    fn a_waiting_request_does_not_hold_up_the_queue() {
        let gate = Arc::new(Gate {
            inner: MemTarget::new(1 << 20),
            open: Mutex::new(false),
            cv: std::sync::Condvar::new(),
        });
        gate.inner.write(0, 0, &[0x11; 4096], false).unwrap();
        gate.inner.write(0, 8192, &[0x22; 4096], false).unwrap();
        let cdev = Arc::new(SharedCdev::default());
        let mailbox = Arc::new(Mailbox::new().unwrap());
        let env = Arc::new(WorkerEnv {
            target: gate.clone(),
            dev: Some(cdev.clone()),
            qid: 1,
            max_io: 1 << 20,
            mailbox: mailbox.clone(),
        });
        let pool = Pool::start(2, &env).unwrap();
        pool.submit(5, read_desc(0, 8), None).unwrap();
        pool.submit(6, read_desc(16, 8), None).unwrap();
        assert_eq!(
            wait_for(&mailbox, 1),
            vec![(6, 4096)],
            "the second read first"
        );
        *gate.open.lock().unwrap() = true;
        gate.cv.notify_all();
        assert_eq!(wait_for(&mailbox, 1), vec![(5, 4096)]);
        pool.stop();
        let m = cdev.0.lock().unwrap();
        assert_eq!(m[&request::user_copy_pos(1, 5)], vec![0x11; 4096]);
        assert_eq!(m[&request::user_copy_pos(1, 6)], vec![0x22; 4096]);
    }

    /// The mailbox wakes its reader for a result posted at any time, and `take`
    /// returns every result exactly once.
    #[test]
    fn the_mailbox_loses_no_result() {
        let mb = Arc::new(Mailbox::new().unwrap());
        let posters: Vec<_> = (0..4_u16)
            .map(|t| {
                let mb = Arc::clone(&mb);
                std::thread::spawn(move || {
                    for i in 0..250_u16 {
                        mb.post(t * 1000 + i, i32::from(i));
                    }
                })
            })
            .collect();
        let mut got = wait_for(&mb, 1000);
        for p in posters {
            p.join().unwrap();
        }
        mb.take(&mut got);
        got.sort_unstable();
        let want: Vec<(u16, i32)> = (0..4_u16)
            .flat_map(|t| (0..250_u16).map(move |i| (t * 1000 + i, i32::from(i))))
            .collect();
        assert_eq!(got, want);
        // Nothing left, and the eventfd was reset.
        let mut rest = Vec::new();
        mb.take(&mut rest);
        assert!(rest.is_empty());
    }

    /// Copy mode: the worker serves a request in the buffer it was lent; a write's data
    /// reaches the target and a read's lands in its buffer, each buffer its own.
    #[test]
    fn copy_mode_workers_use_the_lent_buffers() {
        let target = Arc::new(MemTarget::new(1 << 20));
        target.write(0, 4096, &[0x33; 4096], false).unwrap();
        let mailbox = Arc::new(Mailbox::new().unwrap());
        let env = Arc::new(WorkerEnv {
            target: target.clone(),
            dev: None,
            qid: 2,
            max_io: 1 << 20,
            mailbox: mailbox.clone(),
        });
        let pool = Pool::start(2, &env).unwrap();
        let mut read_buf = vec![0_u8; 4096];
        let mut write_buf = vec![0x44_u8; 8192];
        let write = IoDesc {
            op_flags: sys::UBLK_IO_OP_WRITE,
            nr_sectors: 8,
            start_sector: 64,
        };
        // SAFETY: neither buffer is touched until both results are back, and both outlive
        // the loans.
        let (r, w) = unsafe { (TagBuf::lend(&mut read_buf), TagBuf::lend(&mut write_buf)) };
        pool.submit(1, read_desc(8, 8), Some(r)).unwrap();
        pool.submit(2, write, Some(w)).unwrap();
        let mut got = wait_for(&mailbox, 2);
        got.sort_unstable();
        assert_eq!(got, vec![(1, 4096), (2, 4096)]);
        pool.stop();
        assert_eq!(read_buf, vec![0x33; 4096]);
        assert_eq!(target.snapshot(64 * 512, 4096), vec![0x44; 4096]);
    }

    /// A stopped pool gives requests back instead of dropping them.
    #[test]
    fn a_stopped_pool_gives_requests_back() {
        let env = Arc::new(WorkerEnv {
            target: Arc::new(MemTarget::new(1 << 20)),
            dev: Some(Arc::new(SharedCdev::default())),
            qid: 0,
            max_io: 4096,
            mailbox: Arc::new(Mailbox::new().unwrap()),
        });
        let mut pool = Pool::start(1, &env).unwrap();
        pool.shutdown();
        assert_eq!(
            pool.submit(3, read_desc(0, 1), None),
            Err((3, read_desc(0, 1)))
        );
    }
}
