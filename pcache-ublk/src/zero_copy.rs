//! Zero copy on a pmem block device: a write's pages go from the request to the cache
//! device in one `WRITE_FIXED` on the queue's ring.
//!
//! With `UBLK_F_AUTO_BUF_REG`, the ublk driver registers each request's pages in the
//! queue ring's fixed-buffer table (at the index the daemon gave for its tag) before it
//! hands the request over, and unregisters them when the request is committed. A write
//! the target can stage ([`Target::stage_direct`]: the cache space is taken, the keys
//! not logged) becomes one `WRITE_FIXED` per piece of it, from the request's pages at
//! the piece's offset in the request, to the cache device at the piece's place, with
//! `RWF_DSYNC`: the pmem driver copies the bytes with its cache-bypassing copy and
//! flushes (`REQ_FUA`), so a piece is durable when its completion arrives (step D1).
//! Once every piece completed, the queue thread logs the keys
//! ([`Target::commit_direct`]) and completes the request. The data moved once, and the
//! queue thread made no system call of its own for it: the writes go out with the ring's
//! next submission, beside the commits of other requests.
//!
//! Everything else (reads, flushes, discards, a write the target cannot stage, a write
//! whose `WRITE_FIXED` failed) takes the user-copy path (`UBLK_F_USER_COPY` is granted
//! with it), on the queue thread or its workers as before.
//!
//! Staged writes hold cache space that only their commit releases, and the commit
//! happens on this thread. So this thread never waits for space, nor for anything that
//! could wait for it, while writes of its own are in flight: a request that may wait (a
//! write that cannot be staged, a flush, a write-zeroes) is deferred until they have all
//! completed, and requests that arrive after it wait behind it (reads excepted), so a
//! stream of writes cannot hold a flush back for longer than the writes already in
//! flight take.

use std::collections::VecDeque;

use io_uring::{opcode, squeue, types};
use libublk::io::UblkIOCtx;
use pcache_engine::DirectWrite;

use crate::request::{self, IoDesc, Request};
use crate::target::Target;

/// The op code of a piece's `WRITE_FIXED` in its `user_data` (the mailbox poll is
/// `0xfe`).
pub const PIECE_OP: u32 = 0xfd;

/// The smallest write that goes out by zero copy; smaller ones are copied.
///
/// The pmem driver does not take `REQ_NOWAIT` bios, so io_uring cannot issue a write to
/// `/dev/pmemN` from the submitting thread: every `WRITE_FIXED` is handed to one of the
/// ring's io-wq worker threads, and its completion comes back from there. Two thread
/// switches cost more than copying 4 KiB twice (the VM bench: zero copy at 0.5× user
/// copy for 4 KiB writes at QD 1, 1.1–1.4× for 64 KiB ones; docs/performance-vm.md).
pub const ZERO_COPY_MIN: usize = 32 << 10;

/// The cache device's slot in the ring's fixed-file table (0 is `/dev/ublkcN`).
pub const DEVICE_SLOT: u32 = 1;

#[derive(Debug)]
struct InFlight {
    w: DirectWrite,
    /// Pieces not completed yet.
    left: usize,
    /// The first failure of a piece (0: none).
    failed: i32,
    fua: bool,
}

/// What became of a request handed to [`ZeroCopy::start`].
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Its pieces are submitted; [`ZeroCopy::piece_done`] finishes it.
    Submitted,
    /// Deferred until no write of this queue is in flight; [`ZeroCopy::ready`] hands it
    /// back.
    Deferred,
    /// The caller serves it now, as without zero copy.
    Serve,
}

/// The zero-copy writes of one queue.
#[derive(Debug)]
pub struct ZeroCopy {
    qid: u16,
    inflight: Vec<Option<InFlight>>,
    count: usize,
    deferred: VecDeque<u16>,
    /// Tags whose zero-copy write failed: served by copy when their turn comes.
    copy_only: Vec<bool>,
    /// False once the device refused a `WRITE_FIXED` as unsupported: the rest of this
    /// queue's life takes the user-copy path.
    enabled: bool,
}

impl ZeroCopy {
    /// For queue `qid` of `depth` tags.
    pub fn new(qid: u16, depth: u16) -> Self {
        ZeroCopy {
            qid,
            inflight: (0..depth).map(|_| None).collect(),
            count: 0,
            deferred: VecDeque::new(),
            copy_only: vec![false; usize::from(depth)],
            enabled: true,
        }
    }

    /// Starts request `tag`: stages it and submits its pieces (`submit`) if it is a write
    /// the target can stage, defers it if it may wait while writes are in flight, or
    /// leaves it to the caller.
    pub fn start(
        &mut self,
        target: &dyn Target,
        tag: u16,
        desc: &IoDesc,
        submit: &mut dyn FnMut(squeue::Entry),
    ) -> Start {
        let req = request::decode(desc, target.size(), usize::MAX);
        let is_read = matches!(req, Ok(Request::Read { .. }));
        if is_read || req.is_err() {
            return Start::Serve;
        }
        if !self.deferred.is_empty() {
            self.deferred.push_back(tag);
            return Start::Deferred;
        }
        if self.try_stage(target, tag, req, submit) {
            return Start::Submitted;
        }
        if self.count > 0 {
            self.deferred.push_back(tag);
            return Start::Deferred;
        }
        Start::Serve
    }

    /// Stages `req` and submits its pieces if it is a write of [`ZERO_COPY_MIN`] bytes or
    /// more that the target can stage.
    fn try_stage(
        &mut self,
        target: &dyn Target,
        tag: u16,
        req: Result<Request, crate::target::Errno>,
        submit: &mut dyn FnMut(squeue::Entry),
    ) -> bool {
        let Ok(Request::Write { off, len, fua }) = req else {
            return false;
        };
        // A tag past the queue's depth (never, from the driver) is served by copy.
        if !self.enabled || len < ZERO_COPY_MIN || usize::from(tag) >= self.inflight.len() {
            return false;
        }
        match target.stage_direct(u32::from(self.qid), off, len) {
            Some(w) => {
                self.submit(tag, w, fua, submit);
                true
            }
            None => false,
        }
    }

    fn submit(
        &mut self,
        tag: u16,
        w: DirectWrite,
        fua: bool,
        submit: &mut dyn FnMut(squeue::Entry),
    ) {
        for (i, p) in w.pieces().iter().enumerate() {
            // Pieces of one request are few (a request of at most a few MiB spans at most
            // one segment end per 16 MiB); the index fits the 8 bits libublk keeps.
            #[allow(clippy::cast_possible_truncation)]
            let data = UblkIOCtx::build_user_data(tag, PIECE_OP, (i as u32) & 0xff, true);
            // The request's pages are fixed buffer `tag`, whose addresses start at 0:
            // `at` is where the piece starts in the request.
            let sqe =
                opcode::WriteFixed::new(types::Fixed(DEVICE_SLOT), p.at as *const u8, p.len, tag)
                    .offset(p.dev_off)
                    .rw_flags(libc::RWF_DSYNC)
                    .build()
                    .user_data(data);
            submit(sqe);
        }
        let left = w.pieces().len();
        if let Some(slot) = self.inflight.get_mut(usize::from(tag)) {
            *slot = Some(InFlight {
                w,
                left,
                failed: 0,
                fua,
            });
            self.count += 1;
        }
    }

    /// A piece of request `tag` completed (`user_data` and `res` of its completion: the
    /// bytes written or a negative errno). Once the request's last piece is in, logs its keys and says
    /// what to complete it with; if a piece failed, gives the staged write up and
    /// defers the request, first in line, to be served by copy.
    pub fn piece_done(
        &mut self,
        target: &dyn Target,
        tag: u16,
        user_data: u64,
        res: i32,
    ) -> Finished {
        let i = (user_data >> 24) & 0xff;
        let Some(slot) = self.inflight.get_mut(usize::from(tag)) else {
            return Finished::Pending;
        };
        let Some(f) = slot.as_mut() else {
            return Finished::Pending;
        };
        #[allow(clippy::cast_possible_truncation)]
        let want = f.w.pieces().get(i as usize).map_or(0, |p| p.len as i32);
        if res != want && f.failed == 0 {
            f.failed = if res < 0 { res } else { -libc::EIO };
        }
        f.left = f.left.saturating_sub(1);
        if f.left > 0 {
            return Finished::Pending;
        }
        let Some(f) = slot.take() else {
            return Finished::Pending;
        };
        self.count -= 1;
        if f.failed != 0 {
            tracing::debug!(
                qid = self.qid,
                tag,
                errno = -f.failed,
                "zero-copy write failed; taking the copy path"
            );
            if matches!(-f.failed, libc::EOPNOTSUPP | libc::EINVAL | libc::EFAULT) {
                if self.enabled {
                    tracing::warn!(
                        qid = self.qid,
                        errno = -f.failed,
                        "the cache device refused a zero-copy write; this queue copies from now on"
                    );
                }
                self.enabled = false;
            }
            // Its space goes back; the request's pages are still there for a copy, which
            // may wait, so it waits for the other writes in flight as a deferred request.
            drop(f.w);
            if let Some(c) = self.copy_only.get_mut(usize::from(tag)) {
                *c = true;
            }
            self.deferred.push_front(tag);
            return Finished::Retry;
        }
        let len = f.w.len();
        match target.commit_direct(f.w, f.fua) {
            Ok(()) => Finished::Done(i32::try_from(len).unwrap_or(i32::MAX)),
            Err(e) => Finished::Done(e),
        }
    }

    /// The next deferred request that may run now (no write of this queue is in
    /// flight), in the order they came: the caller runs it with [`ZeroCopy::resume`],
    /// and serves it by copy unless that submitted it.
    pub fn ready(&mut self) -> Option<u16> {
        if self.count == 0 {
            self.deferred.pop_front()
        } else {
            None
        }
    }

    /// Starts deferred request `tag` (from [`ZeroCopy::ready`]) as [`ZeroCopy::start`]
    /// would have if nothing had been in flight.
    pub fn resume(
        &mut self,
        target: &dyn Target,
        tag: u16,
        desc: &IoDesc,
        submit: &mut dyn FnMut(squeue::Entry),
    ) -> Start {
        if let Some(c) = self.copy_only.get_mut(usize::from(tag)) {
            if std::mem::take(c) {
                return Start::Serve;
            }
        }
        let req = request::decode(desc, target.size(), usize::MAX);
        if self.try_stage(target, tag, req, submit) {
            return Start::Submitted;
        }
        Start::Serve
    }

    /// Writes in flight.
    pub fn in_flight(&self) -> usize {
        self.count
    }

    /// The staged write of request `tag`, while in flight.
    pub fn staged(&self, tag: u16) -> Option<&DirectWrite> {
        self.inflight
            .get(usize::from(tag))
            .and_then(|f| f.as_ref())
            .map(|f| &f.w)
    }
}

/// What [`ZeroCopy::piece_done`] says.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Pieces are still in flight.
    Pending,
    /// The request is done: complete it with this result.
    Done(i32),
    /// A piece failed: the staged write is given up, and the request deferred, to be
    /// served by copy ([`ZeroCopy::ready`]).
    Retry,
}

#[cfg(test)]
#[path = "zero_copy_tests.rs"]
mod tests;
