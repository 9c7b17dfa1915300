//! The one place where wire types meet the policy engine's: every enum and
//! struct conversion between `breakerd.v1` and `breakerd-policy`, shared by
//! the server, the client and breakerctl (feature `policy`).
//!
//! Towards the wire every conversion is total (`From`). From the wire an
//! enum arrives as a number, which may be one this version does not know
//! (a newer peer) or the zero value (`UNSPECIFIED`, `NONE`) that names no
//! policy value; both are an [`EnumError`] saying which. What to do with one
//! is the caller's: the server refuses the request naming the field, the
//! client falls back to a default so that an older client keeps working with
//! a newer server.

use std::fmt;

use breakerd_policy::{
    Counters, DegradedMode, Outcome, OverrideKind, Policy, PolicySpec, RejectReason, State,
    WindowKind,
};
use prost::UnknownEnumValue;

use crate::v1 as pb;

/// Why a wire enum number is not a value of the policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnumError {
    /// A number this version does not know.
    Unknown {
        /// The proto enum (`Outcome`, `CircuitState`, ...).
        enum_name: &'static str,
        /// The number received.
        value: i32,
    },
    /// The zero value, which the API reserves for "no value".
    Unset {
        /// Its proto name (`OUTCOME_UNSPECIFIED`, `OVERRIDE_KIND_NONE`).
        value_name: &'static str,
        /// What was wanted instead, as the message goes on ("an outcome").
        expected: &'static str,
    },
}

impl EnumError {
    /// True for the zero value, which some fields read as "any" or
    /// "unchanged" rather than as an error.
    pub fn is_unset(&self) -> bool {
        matches!(self, EnumError::Unset { .. })
    }

    fn unknown(enum_name: &'static str) -> impl Fn(UnknownEnumValue) -> EnumError {
        move |UnknownEnumValue(value)| EnumError::Unknown { enum_name, value }
    }
}

/// `unknown Outcome 42`; `OUTCOME_UNSPECIFIED is not an outcome`.
impl fmt::Display for EnumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnumError::Unknown { enum_name, value } => write!(f, "unknown {enum_name} {value}"),
            EnumError::Unset {
                value_name,
                expected,
            } => write!(f, "{value_name} is not {expected}"),
        }
    }
}

impl std::error::Error for EnumError {}

impl From<State> for pb::CircuitState {
    fn from(s: State) -> Self {
        match s {
            State::Closed => pb::CircuitState::Closed,
            State::Open => pb::CircuitState::Open,
            State::HalfOpen => pb::CircuitState::HalfOpen,
        }
    }
}

impl TryFrom<pb::CircuitState> for State {
    type Error = EnumError;

    fn try_from(s: pb::CircuitState) -> Result<Self, EnumError> {
        match s {
            pb::CircuitState::Closed => Ok(State::Closed),
            pb::CircuitState::Open => Ok(State::Open),
            pb::CircuitState::HalfOpen => Ok(State::HalfOpen),
            pb::CircuitState::Unspecified => Err(EnumError::Unset {
                value_name: s.as_str_name(),
                expected: "a state",
            }),
        }
    }
}

/// A `CircuitState` number as a breaker state.
pub fn state_from_proto(n: i32) -> Result<State, EnumError> {
    pb::CircuitState::try_from(n)
        .map_err(EnumError::unknown("CircuitState"))?
        .try_into()
}

/// A `CircuitState` number as a filter: `UNSPECIFIED` is "any state"
/// (`None`); unknown numbers are an error.
pub fn state_filter_from_proto(n: i32) -> Result<Option<State>, EnumError> {
    match state_from_proto(n) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.is_unset() => Ok(None),
        Err(e) => Err(e),
    }
}

impl From<RejectReason> for pb::RejectReason {
    fn from(r: RejectReason) -> Self {
        match r {
            RejectReason::Open => pb::RejectReason::Open,
            RejectReason::ProbesExhausted => pb::RejectReason::ProbesExhausted,
            RejectReason::ForcedOpen => pb::RejectReason::ForcedOpen,
        }
    }
}

impl TryFrom<pb::RejectReason> for RejectReason {
    type Error = EnumError;

    fn try_from(r: pb::RejectReason) -> Result<Self, EnumError> {
        match r {
            pb::RejectReason::Open => Ok(RejectReason::Open),
            pb::RejectReason::ProbesExhausted => Ok(RejectReason::ProbesExhausted),
            pb::RejectReason::ForcedOpen => Ok(RejectReason::ForcedOpen),
            pb::RejectReason::None => Err(EnumError::Unset {
                value_name: r.as_str_name(),
                expected: "a reject reason",
            }),
        }
    }
}

/// A `RejectReason` number as the policy's reason.
pub fn reject_reason_from_proto(n: i32) -> Result<RejectReason, EnumError> {
    pb::RejectReason::try_from(n)
        .map_err(EnumError::unknown("RejectReason"))?
        .try_into()
}

impl From<OverrideKind> for pb::OverrideKind {
    fn from(k: OverrideKind) -> Self {
        match k {
            OverrideKind::ForcedOpen => pb::OverrideKind::ForcedOpen,
            OverrideKind::ForcedClosed => pb::OverrideKind::ForcedClosed,
            OverrideKind::Disabled => pb::OverrideKind::Disabled,
        }
    }
}

impl TryFrom<pb::OverrideKind> for OverrideKind {
    type Error = EnumError;

    fn try_from(k: pb::OverrideKind) -> Result<Self, EnumError> {
        match k {
            pb::OverrideKind::ForcedOpen => Ok(OverrideKind::ForcedOpen),
            pb::OverrideKind::ForcedClosed => Ok(OverrideKind::ForcedClosed),
            pb::OverrideKind::Disabled => Ok(OverrideKind::Disabled),
            // "No override" is ClearOverride's job, hence the hint.
            pb::OverrideKind::None => Err(EnumError::Unset {
                value_name: k.as_str_name(),
                expected: "an override; use ClearOverride",
            }),
        }
    }
}

/// An `OverrideKind` number as the policy's kind.
pub fn override_kind_from_proto(n: i32) -> Result<OverrideKind, EnumError> {
    pb::OverrideKind::try_from(n)
        .map_err(EnumError::unknown("OverrideKind"))?
        .try_into()
}

impl From<Outcome> for pb::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => pb::Outcome::Success,
            Outcome::Failure => pb::Outcome::Failure,
            Outcome::Ignored => pb::Outcome::Ignored,
        }
    }
}

impl TryFrom<pb::Outcome> for Outcome {
    type Error = EnumError;

    fn try_from(o: pb::Outcome) -> Result<Self, EnumError> {
        match o {
            pb::Outcome::Success => Ok(Outcome::Success),
            pb::Outcome::Failure => Ok(Outcome::Failure),
            pb::Outcome::Ignored => Ok(Outcome::Ignored),
            pb::Outcome::Unspecified => Err(EnumError::Unset {
                value_name: o.as_str_name(),
                expected: "an outcome",
            }),
        }
    }
}

/// An `Outcome` number as the policy's outcome.
pub fn outcome_from_proto(n: i32) -> Result<Outcome, EnumError> {
    pb::Outcome::try_from(n)
        .map_err(EnumError::unknown("Outcome"))?
        .try_into()
}

impl From<WindowKind> for pb::WindowKind {
    fn from(k: WindowKind) -> Self {
        match k {
            WindowKind::Count => pb::WindowKind::Count,
            WindowKind::Time => pb::WindowKind::Time,
        }
    }
}

impl TryFrom<pb::WindowKind> for WindowKind {
    type Error = EnumError;

    fn try_from(k: pb::WindowKind) -> Result<Self, EnumError> {
        match k {
            pb::WindowKind::Count => Ok(WindowKind::Count),
            pb::WindowKind::Time => Ok(WindowKind::Time),
            pb::WindowKind::Unspecified => Err(EnumError::Unset {
                value_name: k.as_str_name(),
                expected: "a window kind",
            }),
        }
    }
}

/// A `WindowKind` number as the policy's window kind.
pub fn window_kind_from_proto(n: i32) -> Result<WindowKind, EnumError> {
    pb::WindowKind::try_from(n)
        .map_err(EnumError::unknown("WindowKind"))?
        .try_into()
}

impl From<DegradedMode> for pb::DegradedMode {
    fn from(m: DegradedMode) -> Self {
        match m {
            DegradedMode::Local => pb::DegradedMode::Local,
            DegradedMode::FailOpen => pb::DegradedMode::FailOpen,
            DegradedMode::FailClosed => pb::DegradedMode::FailClosed,
        }
    }
}

impl TryFrom<pb::DegradedMode> for DegradedMode {
    type Error = EnumError;

    fn try_from(m: pb::DegradedMode) -> Result<Self, EnumError> {
        match m {
            pb::DegradedMode::Local => Ok(DegradedMode::Local),
            pb::DegradedMode::FailOpen => Ok(DegradedMode::FailOpen),
            pb::DegradedMode::FailClosed => Ok(DegradedMode::FailClosed),
            pb::DegradedMode::Unspecified => Err(EnumError::Unset {
                value_name: m.as_str_name(),
                expected: "a degraded mode",
            }),
        }
    }
}

/// A `DegradedMode` number as the policy's degraded mode.
pub fn degraded_mode_from_proto(n: i32) -> Result<DegradedMode, EnumError> {
    pb::DegradedMode::try_from(n)
        .map_err(EnumError::unknown("DegradedMode"))?
        .try_into()
}

impl From<&Counters> for pb::Counters {
    fn from(c: &Counters) -> Self {
        pb::Counters {
            consecutive_failures: c.consecutive_failures,
            window_calls: c.window_calls,
            window_failures: c.window_failures,
            window_slow_calls: c.window_slow_calls,
            probes_in_flight: c.probes_in_flight,
            half_open_successes: c.half_open_successes,
            consecutive_trips: c.consecutive_trips,
            total_allowed: c.total_allowed,
            total_rejected: c.total_rejected,
            total_successes: c.total_successes,
            total_failures: c.total_failures,
            total_ignored: c.total_ignored,
            total_stale: c.total_stale,
            total_leases_expired: c.total_leases_expired,
        }
    }
}

impl From<&pb::Counters> for Counters {
    fn from(c: &pb::Counters) -> Self {
        Counters {
            consecutive_failures: c.consecutive_failures,
            window_calls: c.window_calls,
            window_failures: c.window_failures,
            window_slow_calls: c.window_slow_calls,
            probes_in_flight: c.probes_in_flight,
            half_open_successes: c.half_open_successes,
            consecutive_trips: c.consecutive_trips,
            total_allowed: c.total_allowed,
            total_rejected: c.total_rejected,
            total_successes: c.total_successes,
            total_failures: c.total_failures,
            total_ignored: c.total_ignored,
            total_stale: c.total_stale,
            total_leases_expired: c.total_leases_expired,
        }
    }
}

/// The set fields of a spec; unset ones stay unset on the wire.
impl From<&PolicySpec> for pb::Policy {
    fn from(s: &PolicySpec) -> Self {
        pb::Policy {
            consecutive_failures: s.consecutive_failures,
            window_kind: s.window_kind.map(|k| pb::WindowKind::from(k).into()),
            window_size: s.window_size,
            window_buckets: s.window_buckets,
            minimum_calls: s.minimum_calls,
            failure_rate_threshold: s.failure_rate_threshold,
            slow_call_rate_threshold: s.slow_call_rate_threshold,
            slow_call_duration_ms: s.slow_call_duration_ms,
            quorum_nodes: s.quorum_nodes,
            open_base_ms: s.open_base_ms,
            open_backoff_multiplier: s.open_backoff_multiplier,
            open_max_ms: s.open_max_ms,
            open_jitter: s.open_jitter,
            half_open_max_probes: s.half_open_max_probes,
            probe_lease_ms: s.probe_lease_ms,
            successes_to_close: s.successes_to_close,
            degraded_mode: s.degraded_mode.map(|m| pb::DegradedMode::from(m).into()),
        }
    }
}

/// A validated policy with every field set, for responses.
impl From<&Policy> for pb::Policy {
    fn from(p: &Policy) -> Self {
        pb::Policy::from(&p.to_spec())
    }
}

/// An enum field of a `Policy` holding a number this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEnum {
    /// The field, as named in the proto (`window_kind`, `degraded_mode`).
    pub field: &'static str,
    /// The enum type (`WindowKind`, `DegradedMode`).
    pub enum_name: &'static str,
    /// The number received.
    pub value: i32,
}

/// `unknown WindowKind 7`, as [`EnumError::Unknown`] reads.
impl fmt::Display for UnknownEnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {}", self.enum_name, self.value)
    }
}

/// The set fields of `p` as a spec. `UNSPECIFIED` enum values mean
/// "unchanged" (unset); unknown enum numbers are left unset too and
/// reported, the first one in field order. The server refuses a policy with
/// one; the client ignores it, so an older client keeps working with a newer
/// server.
pub fn spec_from_proto(p: &pb::Policy) -> (PolicySpec, Option<UnknownEnum>) {
    let mut unknown = None;
    let window_kind = p
        .window_kind
        .and_then(|n| set_or_note("window_kind", window_kind_from_proto(n), &mut unknown));
    let degraded_mode = p
        .degraded_mode
        .and_then(|n| set_or_note("degraded_mode", degraded_mode_from_proto(n), &mut unknown));
    let spec = PolicySpec {
        consecutive_failures: p.consecutive_failures,
        window_kind,
        window_size: p.window_size,
        window_buckets: p.window_buckets,
        minimum_calls: p.minimum_calls,
        failure_rate_threshold: p.failure_rate_threshold,
        slow_call_rate_threshold: p.slow_call_rate_threshold,
        slow_call_duration_ms: p.slow_call_duration_ms,
        quorum_nodes: p.quorum_nodes,
        open_base_ms: p.open_base_ms,
        open_backoff_multiplier: p.open_backoff_multiplier,
        open_max_ms: p.open_max_ms,
        open_jitter: p.open_jitter,
        half_open_max_probes: p.half_open_max_probes,
        probe_lease_ms: p.probe_lease_ms,
        successes_to_close: p.successes_to_close,
        degraded_mode,
    };
    (spec, unknown)
}

/// An optional enum field of a `Policy`: set when known; unset for the zero
/// value ("unchanged") and for an unknown number, which is noted unless an
/// earlier field's already was.
fn set_or_note<T>(
    field: &'static str,
    read: Result<T, EnumError>,
    unknown: &mut Option<UnknownEnum>,
) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(EnumError::Unknown { enum_name, value }) => {
            unknown.get_or_insert(UnknownEnum {
                field,
                enum_name,
                value,
            });
            None
        }
        Err(EnumError::Unset { .. }) => None,
    }
}

#[cfg(test)]
mod tests;
