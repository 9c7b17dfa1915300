//! The packed word of a circuit cell: state, override, degraded mode and
//! generation in one `u64`, so the hot path reads all four with one atomic
//! load and never sees a torn combination.

use breakerd_policy::{DegradedMode, OverrideKind, State};

const GEN_BITS: u32 = 56;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// State, override, degraded mode and generation in one `u64`:
/// bits 0-55 generation, 56-57 state (0 = unknown), 58-59 override,
/// 60-61 degraded mode. Generations beyond 2^56 are saturated, which a
/// circuit transitioning every microsecond reaches after two millennia.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) const UNKNOWN: Word = Word(0);

    pub(crate) fn new(
        state: Option<State>,
        generation: u64,
        ov: Option<OverrideKind>,
        mode: DegradedMode,
    ) -> Self {
        let s = match state {
            None => 0,
            Some(State::Closed) => 1,
            Some(State::Open) => 2,
            Some(State::HalfOpen) => 3,
        };
        let o = match ov {
            None => 0,
            Some(OverrideKind::ForcedOpen) => 1,
            Some(OverrideKind::ForcedClosed) => 2,
            Some(OverrideKind::Disabled) => 3,
        };
        let m = match mode {
            DegradedMode::Local => 0,
            DegradedMode::FailOpen => 1,
            DegradedMode::FailClosed => 2,
        };
        Word(generation.min(GEN_MASK) | (s << 56) | (o << 58) | (m << 60))
    }

    pub(crate) fn generation(self) -> u64 {
        self.0 & GEN_MASK
    }

    pub(crate) fn state(self) -> Option<State> {
        match (self.0 >> 56) & 3 {
            1 => Some(State::Closed),
            2 => Some(State::Open),
            3 => Some(State::HalfOpen),
            _ => None,
        }
    }

    pub(crate) fn override_kind(self) -> Option<OverrideKind> {
        match (self.0 >> 58) & 3 {
            1 => Some(OverrideKind::ForcedOpen),
            2 => Some(OverrideKind::ForcedClosed),
            3 => Some(OverrideKind::Disabled),
            _ => None,
        }
    }

    pub(crate) fn degraded_mode(self) -> DegradedMode {
        match (self.0 >> 60) & 3 {
            1 => DegradedMode::FailOpen,
            2 => DegradedMode::FailClosed,
            _ => DegradedMode::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips() {
        for state in [
            None,
            Some(State::Closed),
            Some(State::Open),
            Some(State::HalfOpen),
        ] {
            for ov in [
                None,
                Some(OverrideKind::ForcedOpen),
                Some(OverrideKind::ForcedClosed),
                Some(OverrideKind::Disabled),
            ] {
                for mode in [
                    DegradedMode::Local,
                    DegradedMode::FailOpen,
                    DegradedMode::FailClosed,
                ] {
                    for generation in [0, 1, 12345, GEN_MASK] {
                        let w = Word::new(state, generation, ov, mode);
                        assert_eq!(w.state(), state);
                        assert_eq!(w.override_kind(), ov);
                        assert_eq!(w.degraded_mode(), mode);
                        assert_eq!(w.generation(), generation);
                    }
                }
            }
        }
        assert_eq!(
            Word::new(None, u64::MAX, None, DegradedMode::Local).generation(),
            GEN_MASK
        );
        assert_eq!(Word::UNKNOWN.state(), None);
    }
}
