//! A [`FileBacking`] whose batches of writes go through io_uring.
//!
//! [`Backing::write_many`] queues every write of the batch on a ring and waits for all of
//! them with one `io_uring_enter` (`submit_and_wait`), so they are in flight together: on
//! an `O_DIRECT` block device the device sees the whole batch at once instead of one write
//! at a time. Everything else (single reads and writes, flush, discard, write_zeroes, the
//! `O_DIRECT` choice and its alignment) is the wrapped [`FileBacking`]'s.
//!
//! Rings are not shared between threads while in use: a batch takes one from a small pool
//! (or makes one) and puts it back when every write has completed, so threads that write
//! back in parallel never wait for each other's batches.

use super::{check, Backing, BatchError, FileBacking};
use io_uring::{opcode, types, IoUring};
use parking_lot::Mutex;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Submission queue entries of a ring: a kset's writes (at most 128 keys) fit at once.
const ENTRIES: u32 = 128;

/// Idle rings kept for reuse; a batch that finds none makes a new one.
const POOL: usize = 4;

/// The most bytes one submission writes (the kernel caps a write near 2 GiB anyway; the
/// rest of a longer write is submitted again, as for a short write).
const MAX_SQE_LEN: usize = 1 << 30;

/// Times a write that completes with `-EAGAIN` (or `-EINTR`) is submitted again before it
/// is finished with a blocking `pwrite` instead.
const AGAIN_TRIES: u32 = 4;

/// `IORING_ENTER_GETEVENTS`: wait for completions.
const ENTER_GETEVENTS: u32 = 1;

/// A file or block device whose write batches are submitted through io_uring.
pub struct UringBacking {
    file: FileBacking,
    rings: Mutex<Vec<IoUring>>,
}

impl fmt::Debug for UringBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringBacking")
            .field("file", &self.file)
            .field("idle_rings", &self.rings.lock().len())
            .finish()
    }
}

/// A new ring. `SUBMIT_ALL` (5.18) keeps submitting after an entry fails (its error comes
/// back in its completion); `COOP_TASKRUN` (5.19) spares the submitting thread
/// interrupts, since it waits for the completions itself. Older kernels get a plain ring.
pub(super) fn new_ring() -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_submit_all()
        .setup_coop_taskrun()
        .build(ENTRIES)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(ENTRIES),
        r => r,
    }
}

/// The error of a ring that could not be set up.
pub(super) fn unavailable(e: &io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("io_uring is not available ({e}); use FileBacking instead"),
    )
}

impl UringBacking {
    /// Opens `path` as [`FileBacking::open`] does (`O_DIRECT` where the device supports
    /// it), with io_uring for batches.
    ///
    /// # Errors
    /// The file cannot be opened or sized, or io_uring is not available (the kernel lacks
    /// it, `kernel.io_uring_disabled` or a seccomp filter forbids it): the error then says
    /// so, and the caller can use a [`FileBacking`] instead.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<Self> {
        Self::new(FileBacking::open(path, read_only)?)
    }

    /// Opens `path` as [`FileBacking::open_with`] does; `direct` false never uses
    /// `O_DIRECT`.
    ///
    /// # Errors
    /// As [`UringBacking::open`].
    pub fn open_with(path: impl AsRef<Path>, read_only: bool, direct: bool) -> io::Result<Self> {
        Self::new(FileBacking::open_with(path, read_only, direct)?)
    }

    /// Wraps an open [`FileBacking`].
    ///
    /// # Errors
    /// io_uring is not available (setting up a ring failed, e.g. with `ENOSYS` or
    /// `EPERM`).
    pub fn new(file: FileBacking) -> io::Result<Self> {
        let ring = new_ring().map_err(|e| unavailable(&e))?;
        Ok(Self::with_ring(file, ring))
    }

    /// Wraps `file` with a first ring already set up.
    pub(super) fn with_ring(file: FileBacking, ring: IoUring) -> Self {
        Self {
            file,
            rings: Mutex::new(vec![ring]),
        }
    }

    /// The wrapped file.
    #[must_use]
    pub fn file(&self) -> &FileBacking {
        &self.file
    }

    /// Writes one by one in this thread (a batch of one, or no ring to be had).
    fn write_each(&self, writes: &[(u64, &[u8])]) -> Result<(), BatchError> {
        for (i, &(off, data)) in writes.iter().enumerate() {
            self.file
                .write_at(off, data)
                .map_err(|e| BatchError::new(i, writes, e))?;
        }
        Ok(())
    }

    /// The submission for what is left of write `i`.
    fn entry(&self, batch: &Batch<'_>, i: usize) -> io_uring::squeue::Entry {
        let (off, data) = batch.writes[i];
        let done = batch.state[i].done;
        let rest = &data[done..];
        let len = rest.len().min(MAX_SQE_LEN);
        let at = off + done as u64;
        let fd = self.file.pick(at, rest.as_ptr(), len).as_raw_fd();
        // len <= 1 GiB.
        #[allow(clippy::cast_possible_truncation)]
        opcode::Write::new(types::Fd(fd), rest.as_ptr(), len as u32)
            .offset(at)
            .build()
            .user_data(i as u64)
    }

    /// Runs `batch` on `ring` until every write has completed or failed. An error is the
    /// ring's own (`io_uring_enter` failed for good): the ring must not be reused.
    fn run(&self, ring: &mut IoUring, batch: &mut Batch<'_>) -> io::Result<()> {
        let mut inflight = 0usize;
        loop {
            {
                let mut sq = ring.submission();
                while !sq.is_full() {
                    let Some(i) = batch.next() else { break };
                    let entry = self.entry(batch, i);
                    // SAFETY: the entry writes from `batch.writes[i].1[done..]`, a slice
                    // borrowed from the caller for the whole of `write_many`, and reads
                    // nothing else of ours; `fd` is one of `self.file`'s descriptors,
                    // open for as long as `self`. This function returns only when
                    // nothing is in flight (every pushed entry has completed, or, after a
                    // failed enter, every submitted one has and the rest are never
                    // submitted: the ring is dropped).
                    if unsafe { sq.push(&entry) }.is_err() {
                        // Full after all (cannot happen: checked above): next round.
                        batch.again.push(i);
                        break;
                    }
                    inflight += 1;
                }
            }
            if inflight == 0 {
                return Ok(());
            }
            match ring.submit_and_wait(inflight) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                    if ring.completion().is_empty() {
                        std::thread::yield_now();
                    }
                }
                Err(e) => {
                    Self::drain(ring, inflight);
                    return Err(e);
                }
            }
            for cqe in ring.completion() {
                inflight -= 1;
                // The user data is the index we gave the entry.
                #[allow(clippy::cast_possible_truncation)]
                batch.complete(cqe.user_data() as usize, cqe.result());
            }
            while let Some(i) = batch.blocking.pop() {
                let (off, data) = batch.writes[i];
                let done = batch.state[i].done;
                match self.file.write_at(off + done as u64, &data[done..]) {
                    Ok(()) => batch.state[i].done = data.len(),
                    Err(e) => batch.fail(i, e),
                }
            }
        }
    }

    /// After a failed `io_uring_enter`: waits for the completions of what the kernel took
    /// of the `inflight` entries (the rest stay in the submission queue and are never
    /// submitted: the ring is dropped).
    fn drain(ring: &mut IoUring, mut inflight: usize) {
        inflight -= ring.submission().len();
        let mut tries = 0;
        while inflight > 0 && tries < 1000 {
            inflight -= ring.completion().count().min(inflight);
            if inflight == 0 {
                break;
            }
            // SAFETY: a plain wait (nothing submitted, no argument): to_submit 0,
            // min_complete `inflight`, GETEVENTS, no signal mask.
            // `inflight` <= ENTRIES.
            #[allow(clippy::cast_possible_truncation)]
            let r = unsafe {
                ring.submitter()
                    .enter::<libc::sigset_t>(0, inflight as u32, ENTER_GETEVENTS, None)
            };
            if r.is_err() {
                tries += 1;
            }
        }
    }

    fn take_ring(&self) -> Option<IoUring> {
        if let Some(r) = self.rings.lock().pop() {
            return Some(r);
        }
        new_ring().ok()
    }

    fn put_ring(&self, ring: IoUring) {
        let mut rings = self.rings.lock();
        if rings.len() < POOL {
            rings.push(ring);
        }
    }
}

/// Where one write of a batch is.
#[derive(Debug, Clone, Copy, Default)]
struct WriteState {
    /// Bytes written so far.
    done: usize,
    /// Completions with `-EAGAIN` / `-EINTR` so far.
    again: u32,
}

/// The progress of one batch, apart from the ring: what each write has done, which
/// writes are to be submitted (again), and the first failure.
#[derive(Debug)]
struct Batch<'a> {
    writes: &'a [(u64, &'a [u8])],
    state: Vec<WriteState>,
    /// The next write not submitted yet.
    fresh: usize,
    /// Writes to submit again (short, or `-EAGAIN`).
    again: Vec<usize>,
    /// Writes to finish with a blocking write (`-EAGAIN` too often).
    blocking: Vec<usize>,
    /// The failed write with the lowest index, and why.
    failed: Option<(usize, io::Error)>,
}

impl<'a> Batch<'a> {
    fn new(writes: &'a [(u64, &'a [u8])]) -> Self {
        Self {
            writes,
            state: vec![WriteState::default(); writes.len()],
            fresh: 0,
            again: Vec::new(),
            blocking: Vec::new(),
            failed: None,
        }
    }

    /// The next write to submit; none once a write has failed (the batch has failed;
    /// what is in flight still completes).
    fn next(&mut self) -> Option<usize> {
        if self.failed.is_some() {
            return None;
        }
        if let Some(i) = self.again.pop() {
            return Some(i);
        }
        while self.fresh < self.writes.len() {
            let i = self.fresh;
            self.fresh += 1;
            if !self.writes[i].1.is_empty() {
                return Some(i);
            }
        }
        None
    }

    /// Write `i` completed with `res` (bytes written, or a negated errno).
    fn complete(&mut self, i: usize, res: i32) {
        let Some(&(_, data)) = self.writes.get(i) else {
            // Not one of ours: cannot happen with a ring of our own.
            self.fail(0, io::Error::other(format!("io_uring completion for {i}")));
            return;
        };
        match usize::try_from(res) {
            Ok(0) => self.fail(
                i,
                io::Error::new(io::ErrorKind::WriteZero, "the device took no bytes"),
            ),
            Ok(n) => {
                let s = &mut self.state[i];
                s.done = (s.done + n).min(data.len());
                if s.done < data.len() {
                    // A short write: the rest goes again.
                    self.again.push(i);
                }
            }
            Err(_) => {
                let errno = -res;
                if errno == libc::EAGAIN || errno == libc::EINTR {
                    let s = &mut self.state[i];
                    s.again += 1;
                    if s.again < AGAIN_TRIES {
                        self.again.push(i);
                    } else {
                        self.blocking.push(i);
                    }
                } else {
                    self.fail(i, io::Error::from_raw_os_error(errno));
                }
            }
        }
    }

    fn fail(&mut self, i: usize, e: io::Error) {
        if self.failed.as_ref().is_none_or(|(j, _)| *j > i) {
            self.failed = Some((i, e));
        }
    }

    fn result(self) -> Result<(), BatchError> {
        match self.failed {
            Some((i, e)) => Err(BatchError::new(i, self.writes, e)),
            None => Ok(()),
        }
    }
}

impl Backing for UringBacking {
    fn size(&self) -> u64 {
        self.file.size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(off, buf)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_at(off, data)
    }

    /// Every write of the batch in flight at once (up to 128; a longer batch keeps 128 in
    /// flight), waited for with one `io_uring_enter` per 128. A batch with a write outside
    /// the device writes nothing.
    fn write_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BatchError> {
        let size = self.file.size();
        for (i, &(off, data)) in writes.iter().enumerate() {
            check(off, data.len() as u64, size).map_err(|e| BatchError::new(i, writes, e))?;
        }
        if writes.len() <= 1 {
            return self.write_each(writes);
        }
        let Some(mut ring) = self.take_ring() else {
            return self.write_each(writes);
        };
        let mut batch = Batch::new(writes);
        match self.run(&mut ring, &mut batch) {
            Ok(()) => self.put_ring(ring),
            Err(e) => {
                // The ring is dropped; the failure is reported for the first write that
                // has not completed.
                let i = (0..writes.len())
                    .find(|&i| batch.state[i].done < writes[i].1.len())
                    .unwrap_or(0);
                batch.fail(i, e);
            }
        }
        batch.result()
    }

    fn flush(&self) -> io::Result<()> {
        self.file.flush()
    }

    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        self.file.discard(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        self.file.write_zeroes(off, len)
    }

    fn describe(&self) -> String {
        format!("{}, io_uring batches", self.file.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        vec![7; n]
    }

    #[test]
    fn short_writes_go_again_until_done() {
        let (a, b) = (data(8192), data(512));
        let writes: Vec<(u64, &[u8])> = vec![(0, &a), (8192, &b)];
        let mut batch = Batch::new(&writes);
        assert_eq!(batch.next(), Some(0));
        assert_eq!(batch.next(), Some(1));
        assert_eq!(batch.next(), None);
        batch.complete(0, 4096);
        batch.complete(1, 512);
        assert_eq!(batch.state[0].done, 4096);
        assert_eq!(batch.next(), Some(0), "the rest of the short write");
        batch.complete(0, 4096);
        assert_eq!(batch.next(), None);
        assert_eq!(batch.state[0].done, 8192);
        assert!(batch.result().is_ok());
    }

    #[test]
    fn eagain_goes_again_then_blocking() {
        let a = data(4096);
        let writes: Vec<(u64, &[u8])> = vec![(0, &a)];
        let mut batch = Batch::new(&writes);
        assert_eq!(batch.next(), Some(0));
        for _ in 1..AGAIN_TRIES {
            batch.complete(0, -libc::EAGAIN);
            assert_eq!(batch.next(), Some(0));
        }
        batch.complete(0, -libc::EAGAIN);
        assert_eq!(batch.next(), None);
        assert_eq!(batch.blocking, vec![0]);
        assert!(batch.failed.is_none());
    }

    #[test]
    fn the_first_failed_write_is_reported() {
        let (a, b, c) = (data(512), data(512), data(512));
        let writes: Vec<(u64, &[u8])> = vec![(0, &a), (4096, &b), (8192, &c)];
        let mut batch = Batch::new(&writes);
        while batch.next().is_some() {}
        batch.complete(2, -libc::EIO);
        batch.complete(0, 512);
        batch.complete(1, -libc::ENOSPC);
        assert_eq!(batch.next(), None, "nothing new after a failure");
        let e = batch.result().unwrap_err();
        assert_eq!((e.index, e.off, e.len), (1, 4096, 512));
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC));
        let io: io::Error = e.into();
        assert!(io.to_string().contains("0x1000"), "{io}");
    }

    #[test]
    fn zero_bytes_is_an_error_and_empty_writes_are_skipped() {
        let (a, b) = (Vec::new(), data(512));
        let writes: Vec<(u64, &[u8])> = vec![(0, &a), (512, &b)];
        let mut batch = Batch::new(&writes);
        assert_eq!(batch.next(), Some(1));
        assert_eq!(batch.next(), None);
        batch.complete(1, 0);
        let e = batch.result().unwrap_err();
        assert_eq!((e.index, e.source.kind()), (1, io::ErrorKind::WriteZero));
    }
}
