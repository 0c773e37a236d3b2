//! One ublk queue: a thread that fetches requests from the kernel, hands each to
//! [`request::handle`], and commits the result.
//!
//! Each queue thread calls the target directly and synchronously for every request that
//! stays in the cache; requests that may wait for the backing device (read misses,
//! discards) go to the queue's worker threads instead ([`crate::offload`]), so that they
//! do not hold up the rest of the queue. Two data paths exist:
//! - **user-copy** (`UBLK_F_USER_COPY`, Linux 6.5+): no per-tag buffers; a write's data is
//!   `pread` from `/dev/ublkcN` straight into the cache media during the target call (data
//!   moves once; see `Target::write_with`), a read's is `pwrite`d straight from the
//!   cache media during the target call (`Target::read_with`; small fragments are
//!   gathered in a per-queue staging buffer first);
//! - **buffer** (fallback): libublk allocates one buffer per tag and the kernel copies the
//!   data into it when the request is fetched (write) or out of it on commit (read).
//!
//! Nothing here panics on the I/O path: every failure completes the request with a
//! negative errno, and a queue that cannot be set up logs and returns (the device then
//! fails to start and `add` reports it).

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkIOCtx, UblkQueue};
use libublk::{sys, BufDesc, BufDescList, UblkError, UblkIORes};

use crate::error::describe_ublk;
use crate::offload::{Mailbox, Pool, TagBuf, WorkerEnv};
use crate::request::{self, DataPath, IoDesc};
use crate::state::CopyMode;
use crate::target::Target;
use crate::zero_copy::{self, Finished, Start, ZeroCopy};

/// The copy mode a device was created with (the kernel may have dropped a flag we asked
/// for, so this reads what it granted).
pub fn copy_mode_of(dev_flags: u64) -> CopyMode {
    let user_copy = dev_flags & u64::from(sys::UBLK_F_USER_COPY) != 0;
    if user_copy && dev_flags & u64::from(sys::UBLK_F_AUTO_BUF_REG) != 0 {
        CopyMode::ZeroCopy
    } else if user_copy {
        CopyMode::UserCopy
    } else {
        CopyMode::Buffer
    }
}

/// Serves queue `qid` of `dev` until the device stops. Runs on the queue's own thread
/// (libublk's `run_target` spawns it). Up to `workers` threads serve the requests that
/// may wait for the backing device ([`crate::offload`]); with 0, the queue thread serves
/// everything.
pub fn serve(qid: u16, dev: &UblkDev, target: &Arc<dyn Target>, workers: usize) {
    let mode = copy_mode_of(dev.dev_info.flags);
    tracing::debug!(qid, %mode, workers, "queue thread started");
    let res = match mode {
        CopyMode::UserCopy | CopyMode::ZeroCopy => serve_user_copy(qid, dev, target, workers),
        CopyMode::Buffer => serve_buffered(qid, dev, target, workers),
    };
    match res {
        Ok(()) => tracing::debug!(qid, "queue stopped"),
        Err(e) => tracing::error!(qid, error = %describe_ublk(&e), "queue failed"),
    }
}

fn complete(q: &UblkQueue<'_>, tag: u16, buf: &[u8], res: i32) {
    complete_as(q, tag, BufDesc::Slice(buf), res);
}

/// Completes request `tag` with `res`; `desc` says what the kernel fetches the tag's next
/// request with (a buffer, nothing in user-copy mode, or the buffer index to register in
/// zero-copy mode).
fn complete_as(q: &UblkQueue<'_>, tag: u16, desc: BufDesc<'_>, res: i32) {
    if res < 0 {
        tracing::trace!(qid = q.get_qid(), tag, res, "request failed");
    }
    if let Err(e) = q.complete_io_cmd_unified(tag, desc, Ok(UblkIORes::Result(res))) {
        tracing::error!(qid = q.get_qid(), tag, error = %describe_ublk(&e), "commit failed");
    }
}

fn serve_buffered(
    qid: u16,
    dev: &UblkDev,
    target: &Arc<dyn Target>,
    workers: usize,
) -> Result<(), UblkError> {
    // Declared before the workers, so dropped after them: a worker may hold a loan of a
    // buffer until it is joined.
    let mut bufs = dev.alloc_queue_io_bufs();
    let offload = start_offload(qid, dev, target, None, workers)?;
    let queue = match UblkQueue::new(qid, dev) {
        Ok(q) => q,
        Err(e) => {
            // In copy mode the device start waits for every queue to register its
            // buffers; a queue that never gets there must not leave it waiting forever.
            // libublk only exposes the "registered, but mlock failed" report for this,
            // which makes the start fail (with EPERM); the real cause is logged here.
            tracing::error!(qid, error = %describe_ublk(&e), "queue setup failed; failing the device start");
            dev.notify_buffer_registration_complete(true);
            return Err(e);
        }
    };
    let queue = queue.submit_fetch_commands_unified(BufDescList::Slices(Some(&bufs)))?;
    if let Some((_, mailbox)) = &offload {
        arm_mailbox(&queue, mailbox);
    }
    let mut done = Vec::new();
    queue.wait_and_handle_io(|q, tag, ctx| {
        if ctx.is_tgt_io() {
            // Only the mailbox poll is target I/O; the loans of the finished requests'
            // buffers have ended.
            if let Some((_, mailbox)) = &offload {
                complete_offloaded(q, mailbox, &mut done, |t| {
                    BufDesc::Slice(bufs.get(usize::from(t)).map_or(&[][..], |b| b.as_slice()))
                });
            }
            return;
        }
        let desc = IoDesc::from_iod(q.get_iod(tag));
        let Some(buf) = bufs.get_mut(usize::from(tag)) else {
            complete(q, tag, &[], -libc::EINVAL);
            return;
        };
        if let Some((pool, _)) = &offload {
            if request::may_wait(&**target, &desc) {
                // SAFETY: this thread touches the buffer of `tag` again only when it
                // commits the request, which it does once the worker's result is in the
                // mailbox (above); the kernel does not touch it while the request is
                // ours; the buffers outlive the workers (declared before them).
                let lent = unsafe { TagBuf::lend(buf.as_mut_slice()) };
                if pool.submit(tag, desc, Some(lent)).is_ok() {
                    return;
                }
            }
        }
        let res = request::handle(&**target, qid, &desc, DataPath::Buffer(buf.as_mut_slice()));
        complete(q, tag, buf.as_slice(), res);
    });
    if let Some((pool, _)) = offload {
        pool.stop();
    }
    Ok(())
}

/// The mailbox poll fired: commits what the workers finished (`desc_of(tag)`: the
/// request's buffer in copy mode, nothing in user-copy mode, the registration in
/// zero-copy mode) and polls again.
fn complete_offloaded<'b>(
    q: &UblkQueue<'_>,
    mailbox: &Mailbox,
    done: &mut Vec<(u16, i32)>,
    desc_of: impl Fn(u16) -> BufDesc<'b>,
) {
    mailbox.take(done);
    for (tag, res) in done.drain(..) {
        complete_as(q, tag, desc_of(tag), res);
    }
    arm_mailbox(q, mailbox);
}

/// Starts the queue's workers and their mailbox, if `workers` > 0. `cdev` is the
/// user-copy descriptor (none in copy mode).
fn start_offload(
    qid: u16,
    dev: &UblkDev,
    target: &Arc<dyn Target>,
    cdev: Option<Arc<File>>,
    workers: usize,
) -> Result<Option<(Pool, Arc<Mailbox>)>, UblkError> {
    if workers == 0 {
        return Ok(None);
    }
    let mailbox = Arc::new(Mailbox::new().map_err(UblkError::IOError)?);
    let env = Arc::new(WorkerEnv {
        target: Arc::clone(target),
        dev: cdev.map(|c| c as Arc<dyn request::UserCopyIo + Send + Sync>),
        qid,
        max_io: dev.dev_info.max_io_buf_bytes as usize,
        mailbox: Arc::clone(&mailbox),
    });
    let pool = Pool::start(workers, &env).map_err(UblkError::IOError)?;
    Ok(Some((pool, mailbox)))
}

/// A second descriptor for `/dev/ublkcN`. The character device can only be opened once,
/// so user-copy I/O goes through a duplicate of the descriptor libublk holds.
fn dup_cdev(dev: &UblkDev) -> std::io::Result<File> {
    let fd = dev.tgt.fds[0];
    // SAFETY: `tgt.fds[0]` is the `/dev/ublkcN` descriptor that `UblkDev` opened and owns
    // until it is dropped; `dev` is borrowed for this whole call, so the descriptor is open
    // while we borrow it, and we only use the borrow to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(File::from(borrowed.try_clone_to_owned()?))
}

/// `user_data` of the mailbox poll: a target I/O (so libublk hands its completion to our
/// closure) with an op code of our own.
fn mailbox_poll_data() -> u64 {
    UblkIOCtx::build_user_data(0, MAILBOX_POLL_OP, 0, true)
}

/// The op code of the mailbox poll in its `user_data` (any value libublk does not use for
/// target I/O of ours).
const MAILBOX_POLL_OP: u32 = 0xfe;

/// Arms a one-shot poll of the mailbox's eventfd on the queue's ring.
fn arm_mailbox(q: &UblkQueue<'_>, mailbox: &Mailbox) {
    let sqe =
        io_uring::opcode::PollAdd::new(io_uring::types::Fd(mailbox.fd()), libc::POLLIN as u32)
            .build()
            .user_data(mailbox_poll_data());
    if let Err(e) = q.ublk_submit_sqe_sync(sqe) {
        // Without the poll, offloaded requests would never complete: this is fatal for
        // the queue, and `submit_sqe_sync` only fails when the ring itself does.
        tracing::error!(qid = q.get_qid(), error = %describe_ublk(&e), "cannot poll the queue's mailbox");
    }
}

fn serve_user_copy(
    qid: u16,
    dev: &UblkDev,
    target: &Arc<dyn Target>,
    workers: usize,
) -> Result<(), UblkError> {
    let cdev = Arc::new(dup_cdev(dev)?);
    let max_io = dev.dev_info.max_io_buf_bytes as usize;
    // The queue thread serves one request at a time, so one staging buffer is enough;
    // it is twice the largest request (see `DataPath::UserCopy`).
    let mut scratch = IoBuf::<u8>::new(2 * max_io);
    let offload = start_offload(qid, dev, target, Some(cdev.clone()), workers)?;
    // Zero copy: the kernel registers the pages of the request of tag `t` as fixed
    // buffer `t` of this queue's ring, at every fetch.
    let zero_copy = copy_mode_of(dev.dev_info.flags) == CopyMode::ZeroCopy;
    let depth = dev.dev_info.queue_depth;
    let regs: Vec<sys::ublk_auto_buf_reg> = if zero_copy {
        (0..depth)
            .map(|t| sys::ublk_auto_buf_reg {
                index: t,
                flags: 0,
                reserved0: 0,
                reserved1: 0,
            })
            .collect()
    } else {
        Vec::new()
    };
    let desc_of = |t: u16| match regs.get(usize::from(t)) {
        Some(r) => BufDesc::AutoReg(*r),
        None => BufDesc::Slice(&[]),
    };
    let list = if zero_copy {
        BufDescList::AutoRegs(&regs)
    } else {
        BufDescList::Slices(None)
    };
    let queue = UblkQueue::new(qid, dev)?.submit_fetch_commands_unified(list)?;
    if let Some((_, mailbox)) = &offload {
        arm_mailbox(&queue, mailbox);
    }
    let mut zc = zero_copy.then(|| ZeroCopy::new(qid, depth));
    let mut done = Vec::new();
    // Serves request `tag` by copy: on a worker if it may wait, else here.
    let mut serve_copy = |q: &UblkQueue<'_>, tag: u16, desc: IoDesc| {
        if let Some((pool, _)) = &offload {
            if request::may_wait(&**target, &desc) && pool.submit(tag, desc, None).is_ok() {
                return;
            }
        }
        let data = DataPath::UserCopy {
            dev: &*cdev,
            pos: request::user_copy_pos(qid, tag),
            scratch: scratch.as_mut_slice(),
        };
        let res = request::handle(&**target, qid, &desc, data);
        complete_as(q, tag, desc_of(tag), res);
    };
    queue.wait_and_handle_io(|q, tag, ctx| {
        let mut submit = |sqe| {
            if let Err(e) = q.ublk_submit_sqe_sync(sqe) {
                tracing::error!(qid, error = %describe_ublk(&e), "cannot queue a zero-copy write");
            }
        };
        if ctx.is_tgt_io() {
            let op = UblkIOCtx::user_data_to_op(ctx.user_data());
            if op == zero_copy::PIECE_OP {
                let Some(zc) = zc.as_mut() else { return };
                match zc.piece_done(&**target, tag, ctx.user_data(), ctx.result()) {
                    Finished::Pending => {}
                    Finished::Done(res) => complete_as(q, tag, desc_of(tag), res),
                    Finished::Retry => {}
                }
                // Deferred requests run once no write is in flight.
                while let Some(t) = zc.ready() {
                    let desc = IoDesc::from_iod(q.get_iod(t));
                    if zc.resume(&**target, t, &desc, &mut submit) != Start::Submitted {
                        serve_copy(q, t, desc);
                    }
                }
            } else if let Some((_, mailbox)) = &offload {
                // The mailbox poll.
                complete_offloaded(q, mailbox, &mut done, desc_of);
            }
            return;
        }
        let desc = IoDesc::from_iod(q.get_iod(tag));
        if let Some(zc) = zc.as_mut() {
            if zc.start(&**target, tag, &desc, &mut submit) != Start::Serve {
                return;
            }
        }
        serve_copy(q, tag, desc);
    });
    if let Some((pool, _)) = offload {
        // The device has stopped, so no request is left with the workers (the block layer
        // drains requests before ublk aborts the queue's commands); this joins them.
        pool.stop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_mode_follows_the_granted_flags() {
        assert_eq!(
            copy_mode_of(u64::from(sys::UBLK_F_USER_COPY | sys::UBLK_F_USER_RECOVERY)),
            CopyMode::UserCopy
        );
        assert_eq!(
            copy_mode_of(u64::from(sys::UBLK_F_USER_RECOVERY)),
            CopyMode::Buffer
        );
    }
}
