//! mkfs
