//! Mutants of the persistence protocol, for proving that the power-cut proof
//! (`tests/crash.rs`) catches a broken step: with the `mutants` feature, the step named
//! by the environment variable `PCACHE_MUTANT` (read once) is dropped or moved at its
//! site, which [`skip`] tells. Without the feature, [`skip`] is a constant `false` and the
//! code is what it always was. `cargo xtask crash --mutants` runs the proof once per
//! step; `docs/design.md` ("Mutants") says what each one does and how it is caught.

/// A persistence step of `docs/design.md`, as a mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The data is never made durable (its flush and fence are dropped).
    D1,
    /// The terminator after a kset is not made durable.
    K1,
    /// The kset but its commit word is not made durable.
    K2a,
    /// The commit word is not made durable.
    K2b,
    /// The terminator at a new log segment's start is not made durable.
    L1,
    /// The LAST kset but its commit word is not made durable.
    L2a,
    /// The LAST kset's commit word is not made durable.
    L2b,
    /// key_tail and dirty_tail records are not made durable.
    T1,
    /// Writeback does not flush the backing device before dirty_tail moves.
    W1,
    /// Writeback moves dirty_tail before the round's backing writes.
    W2,
    /// Writeback leaves replaced dirty data unwritten without making the replacing
    /// writes' keys durable first.
    W0,
    /// GC's key_tail record is not made durable.
    G1,
    /// GC frees a segment without bumping its generation.
    G2,
    /// A bumped generation record is not made durable.
    G3,
    /// No dual-copy record (tails, generations, cache_info) is made durable.
    M1,
    /// cache_info (INIT_DONE, the mode) is not made durable at an activation.
    A1,
    /// The format's stores are not made durable.
    F1,
    /// A kset holding written-through keys does not flush the backing device first.
    WT1,
    /// A FUA write or a FLUSH does not flush what reached the backing device.
    WT2,
    /// A written-through write over a cached range (or FUA) completes before its keys
    /// are durable.
    WT3,
    /// A shared device's empty table is not made durable before its superblock.
    SF1,
    /// A shared device's superblock is not made durable.
    SF2,
    /// A new cache table copy is not made durable (CR2 and RM1 are this step).
    TB1,
    /// A new cache's superblock (and its cleared metadata) is not made durable before
    /// the activation formats behind it.
    CR1,
}

impl Step {
    /// Every step, in the order of `docs/design.md`.
    pub const ALL: [Step; 24] = [
        Step::D1,
        Step::K1,
        Step::K2a,
        Step::K2b,
        Step::L1,
        Step::L2a,
        Step::L2b,
        Step::T1,
        Step::W1,
        Step::W2,
        Step::W0,
        Step::G1,
        Step::G2,
        Step::G3,
        Step::M1,
        Step::A1,
        Step::F1,
        Step::WT1,
        Step::WT2,
        Step::WT3,
        Step::SF1,
        Step::SF2,
        Step::TB1,
        Step::CR1,
    ];

    /// The step's name in `docs/design.md`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Step::D1 => "D1",
            Step::K1 => "K1",
            Step::K2a => "K2a",
            Step::K2b => "K2b",
            Step::L1 => "L1",
            Step::L2a => "L2a",
            Step::L2b => "L2b",
            Step::T1 => "T1",
            Step::W1 => "W1",
            Step::W2 => "W2",
            Step::W0 => "W0",
            Step::G1 => "G1",
            Step::G2 => "G2",
            Step::G3 => "G3",
            Step::M1 => "M1",
            Step::A1 => "A1",
            Step::F1 => "F1",
            Step::WT1 => "WT1",
            Step::WT2 => "WT2",
            Step::WT3 => "WT3",
            Step::SF1 => "SF1",
            Step::SF2 => "SF2",
            Step::TB1 => "TB1",
            Step::CR1 => "CR1",
        }
    }

    /// The step named `name` (as [`Step::name`] spells it, any case).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// Whether `step` is dropped (or moved) in this process: the step `PCACHE_MUTANT`
/// names, read once.
///
/// # Panics
/// If `PCACHE_MUTANT` names no step: a mutant run must not pass by running none.
#[cfg(feature = "mutants")]
#[must_use]
pub fn skip(step: Step) -> bool {
    static ACTIVE: std::sync::OnceLock<Option<Step>> = std::sync::OnceLock::new();
    let active = ACTIVE.get_or_init(|| {
        let name = std::env::var("PCACHE_MUTANT").ok()?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let step = Step::from_name(name);
        assert!(step.is_some(), "PCACHE_MUTANT={name} names no step");
        step
    });
    *active == Some(step)
}

/// Whether `step` is dropped: never, without the `mutants` feature.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
#[must_use]
pub const fn skip(_step: Step) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn names_round_trip() {
        for s in Step::ALL {
            assert_eq!(Step::from_name(s.name()), Some(s));
            assert_eq!(Step::from_name(&s.name().to_lowercase()), Some(s));
        }
        assert_eq!(Step::from_name("X9"), None);
    }
}
