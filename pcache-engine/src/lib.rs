//! The pcache engine: a persistent-memory write-back cache in front of a block device,
//! byte-compatible with Linux dm-pcache. See `docs/design.md` for the persistence
//! protocol, whose steps the code names at every flush and fence.
//!
//! This crate knows nothing about ublk: a frontend hands [`Cache`] block requests.
//!
//! - [`media`]: the cache device (DAX, mapped file, memory);
//! - [`backing`]: the backing device (file or block device, memory);
//! - [`shared`]: shared cache devices (several caches on one device, a cache table);
//! - [`Cache`]: open (validate, format, replay), read, write, flush, discard, status,
//!   close; background writeback, GC and kset flushing;
//! - `testing`, with the `test-utils` feature (tests only, never in a release build):
//!   test doubles (a crash simulator, a media and a backing device with injected
//!   failures) and fixtures.

pub use pcache_format as format;

pub mod backing;
mod cache;
pub mod claim;
mod direct;
pub mod error;
mod gc;
mod index;
mod io;
mod load;
mod log;
pub mod media;
mod meta;
pub mod mutants;
mod policy;
mod reader;
mod reclaim;
mod replay;
pub mod report;
pub mod salvage;
mod segments;
pub mod shared;
pub mod status;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
mod through;
pub mod walk;
mod workers;
mod writeback;
mod zero;

pub use cache::{Cache, CacheConfig, REPLAY_THREADS_MAX, WRITEBACK_PERCENT_MAX};
pub use direct::{DirectPiece, DirectWrite};
pub use error::{EngineError, ErrorKind, Result};
pub use pcache_format::CacheMode;
pub use policy::SeqCutoff;
pub use replay::ReplayStats;
pub use status::{KernelStatus, Status, StatusJson, JSON_SCHEMA};

#[cfg(test)]
mod tests;
