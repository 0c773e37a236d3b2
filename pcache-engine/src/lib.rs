//! The pcache engine: a persistent-memory write-back cache in front of a block device,
//! byte-compatible with Linux dm-pcache. See `docs/design.md`.
//!
//! This crate knows nothing about ublk: a frontend hands it block requests.

pub use pcache_format as format;
