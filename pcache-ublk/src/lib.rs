//! pcache-ublk: serves a pcache (a persistent-memory cache device in front of a backing
//! block device) to the host as `/dev/ublkbN`, through the kernel's ublk driver.
//!
//! The crate is a library plus the `pcache-ublk` binary. The library holds everything the
//! binary does, split along seams that can be tested without a ublk-capable kernel:
//! - [`target`]: the [`target::Target`] trait the queue threads call, and an in-memory
//!   model; [`engine`] adapts `pcache_engine::Cache` to it;
//! - [`request`]: ublk I/O descriptor → target call → request result (errno mapping);
//! - [`queue`]: one ublk queue thread (copy, user-copy or zero-copy data path), with
//!   [`offload`]: worker threads for requests that may wait for the backing device, and
//!   [`zero_copy`]: writes from the request's pages to a pmem block device cache;
//! - [`state`], [`rpc`]: what a running daemon leaves in the run directory and its
//!   control socket;
//! - [`cli`]: the command line; [`daemon`]: `add`/`recover`, with [`lifecycle`] (start
//!   reports, stop requests, signals), [`notify`] (`sd_notify` for systemd) and
//!   [`restart`] (`add --recover-if-exists`); [`client`]: `del`, `list`, `status`, `set`.

pub mod cli;
pub mod client;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod lifecycle;
pub mod notify;
pub mod offload;
pub mod queue;
pub mod request;
pub mod restart;
pub mod rpc;
pub mod state;
pub mod target;
pub mod unflushed;
pub mod zero_copy;

pub use error::Error;
