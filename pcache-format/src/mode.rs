//! Cache modes: how writes and read misses use the cache. The mode is kept in cache_info's
//! CACHE_MODE bits (2..5) with the kernel's values for the four modes it defines; the
//! kernel keeps the bits as they are and runs every cache as writeback.

use core::fmt;
use core::str::FromStr;

/// How a cache treats writes and read misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheMode {
    /// Writes go to the cache and are written back later; misses are cached.
    #[default]
    Writeback,
    /// Writes go to the backing device and the cache (clean); misses are cached.
    Writethrough,
    /// Writes go to the backing device (cached bytes of the range are updated); misses
    /// are cached.
    Writearound,
    /// Writes as writeback; misses are not cached.
    Writeonly,
    /// Writes as writearound; nothing is cached, dirty data drains (a pcache extension:
    /// CACHE_MODE value 4, which the kernel does not define and does not look at).
    Passthrough,
}

impl CacheMode {
    /// Every mode, in the order of their values.
    pub const ALL: [CacheMode; 5] = [
        CacheMode::Writeback,
        CacheMode::Writethrough,
        CacheMode::Writearound,
        CacheMode::Writeonly,
        CacheMode::Passthrough,
    ];

    /// The CACHE_MODE value (the kernel's for 0..=3).
    #[must_use]
    pub const fn value(self) -> u8 {
        match self {
            CacheMode::Writeback => 0,
            CacheMode::Writethrough => 1,
            CacheMode::Writearound => 2,
            CacheMode::Writeonly => 3,
            CacheMode::Passthrough => 4,
        }
    }

    /// The mode of a CACHE_MODE value; `None` for one pcache does not know.
    #[must_use]
    pub const fn from_value(v: u8) -> Option<Self> {
        Some(match v {
            0 => CacheMode::Writeback,
            1 => CacheMode::Writethrough,
            2 => CacheMode::Writearound,
            3 => CacheMode::Writeonly,
            4 => CacheMode::Passthrough,
            _ => return None,
        })
    }

    /// The mode's name, as the kernel's table line and pcache's options spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Writearound => "writearound",
            CacheMode::Writeonly => "writeonly",
            CacheMode::Passthrough => "passthrough",
        }
    }

    /// Whether new writes may leave dirty data in the cache.
    #[must_use]
    pub const fn keeps_dirty(self) -> bool {
        matches!(self, CacheMode::Writeback | CacheMode::Writeonly)
    }

    /// Whether read misses are cached.
    #[must_use]
    pub const fn fills(self) -> bool {
        matches!(
            self,
            CacheMode::Writeback | CacheMode::Writethrough | CacheMode::Writearound
        )
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a cache mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown cache mode {:?} (writeback, writethrough, writearound, writeonly or \
             passthrough)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for CacheMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CacheMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_round_trip() {
        for (i, m) in CacheMode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(m.value()), i);
            assert_eq!(CacheMode::from_value(m.value()), Some(m));
            assert_eq!(m.name().parse::<CacheMode>(), Ok(m));
        }
        // The kernel's values (include/.../pcache_internal.h: WRITEBACK 0 .. WRITEONLY 3).
        assert_eq!(CacheMode::Writethrough.value(), 1);
        assert_eq!(CacheMode::Writeonly.value(), 3);
        assert_eq!(CacheMode::from_value(5), None);
        assert!("WriteBack".parse::<CacheMode>().is_err());
    }
}
