//! The pcache engine: a persistent-memory write-back cache in front of a block device,
//! byte-compatible with Linux dm-pcache. See `docs/design.md` for the persistence
//! protocol, whose steps the code names at every flush and fence.
//!
//! This crate knows nothing about ublk: a frontend hands [`Cache`] block requests.
//!
//! - [`media`]: the cache device (DAX, mapped file, memory, a crash simulator);
//! - [`backing`]: the backing device (file or block device, memory);
//! - [`Cache`]: open (validate, format, replay), read, write, flush, discard, status,
//!   close; background writeback, GC and kset flushing.

pub use pcache_format as format;

pub mod backing;
mod cache;
pub mod claim;
pub mod error;
mod gc;
mod index;
mod io;
mod load;
mod log;
pub mod media;
mod meta;
mod policy;
mod reader;
mod reclaim;
mod replay;
pub mod report;
pub mod salvage;
mod segments;
mod through;
pub mod status;
pub mod walk;
mod workers;
mod writeback;

pub use cache::{Cache, CacheConfig};
pub use policy::SeqCutoff;
pub use pcache_format::CacheMode;
pub use error::{EngineError, ErrorKind, Result};
pub use replay::ReplayStats;
pub use status::{KernelStatus, Status, StatusJson, JSON_SCHEMA};

#[cfg(test)]
mod tests;
