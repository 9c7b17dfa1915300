//! The vocabulary of a breaker: states, overrides, decisions and outcomes.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Grows by one on every transition of a circuit (state change, override
/// change, reset). Outcomes carry the generation they were granted under.
pub type Generation = u64;

/// Identifies a probe lease within one circuit. Never 0.
pub type LeaseId = u64;

/// A breaker state. `Open` means calls are *blocked*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open deadline.
    Open,
    /// Only granted probes flow.
    HalfOpen,
}

impl State {
    /// Lower-case name, as used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// What an operator override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// Reject every call. Clearing it moves the circuit to half-open, so the
    /// fleet probes before it resumes.
    ForcedOpen,
    /// Allow every call; outcomes never trip the circuit.
    ForcedClosed,
    /// Shadow mode: allow every call, still count, still move the state.
    Disabled,
}

/// An operator override in force on a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// What it does.
    pub kind: OverrideKind,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When it lapses on its own (`None`: never).
    pub expires_at: Option<Instant>,
}

/// Who reported or asked: a node of the fleet, by a stable hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of a named node (FNV-1a of the name: stable across processes
    /// and releases, so persisted state and clients agree).
    pub fn from_name(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        NodeId(h)
    }
}

/// How a protected call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that counts against the dependency.
    Failure,
    /// Says nothing about the dependency; returns a probe lease, counts nothing.
    Ignored,
}

/// One reported outcome, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Generation the call was granted under.
    pub generation: Generation,
    /// Probe lease the call held, if any.
    pub lease: Option<LeaseId>,
    /// How it went.
    pub outcome: Outcome,
    /// How long it took (for the slow-call rule).
    pub latency: Duration,
    /// Who made it (for the quorum rule).
    pub node: NodeId,
    /// When it completed, if known (the coordinator derives it from the
    /// report's age). It orders the consecutive-failure rule: a success that
    /// completed before the current run of failures began does not end it,
    /// however late it arrives. `None`: unknown, taken as the moment it is
    /// recorded, so outcomes count in arrival order. Later than the `now`
    /// given to [`record`](crate::Breaker::record) counts as `now`.
    pub completed_at: Option<Instant>,
}

/// A probe lease granted in half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Report this back with the outcome.
    pub id: LeaseId,
    /// How long it is held before the breaker takes it back.
    pub ttl: Duration,
}

/// Why a call was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The circuit is open until its deadline.
    Open,
    /// Half-open and every probe lease is taken.
    ProbesExhausted,
    /// An operator forced the circuit open.
    ForcedOpen,
}

/// The answer to [`Breaker::acquire`](crate::Breaker::acquire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call may go ahead.
    Allow {
        /// Generation to report back.
        generation: Generation,
        /// State the call was allowed in.
        state: State,
        /// The probe lease, in half-open.
        lease: Option<Lease>,
    },
    /// The call must not be made.
    Reject {
        /// Generation of the rejecting state.
        generation: Generation,
        /// State that rejected it.
        state: State,
        /// Why.
        reason: RejectReason,
        /// Time until asking again is worthwhile.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the call may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The generation the decision was made under.
    pub fn generation(&self) -> Generation {
        match self {
            Decision::Allow { generation, .. } | Decision::Reject { generation, .. } => *generation,
        }
    }
}

/// What [`Breaker::record`](crate::Breaker::record) did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted under the current generation.
    Applied,
    /// From another generation, or for a lease the breaker no longer holds:
    /// counted as stale, state unchanged.
    Stale,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionCause {
    /// Consecutive-failure rule tripped.
    ConsecutiveFailures,
    /// Failure-rate rule tripped.
    FailureRate,
    /// Slow-call-rate rule tripped.
    SlowCallRate,
    /// The open deadline passed.
    OpenElapsed,
    /// A probe failed.
    ProbeFailed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// An operator override was set.
    OverrideSet,
    /// An operator override was cleared.
    OverrideCleared,
    /// An operator override reached its expiry.
    OverrideExpired,
    /// An operator reset the circuit.
    Reset,
}

impl TransitionCause {
    /// Snake-case name, as used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionCause::ConsecutiveFailures => "consecutive_failures",
            TransitionCause::FailureRate => "failure_rate",
            TransitionCause::SlowCallRate => "slow_call_rate",
            TransitionCause::OpenElapsed => "open_elapsed",
            TransitionCause::ProbeFailed => "probe_failed",
            TransitionCause::ProbesSucceeded => "probes_succeeded",
            TransitionCause::OverrideSet => "override_set",
            TransitionCause::OverrideCleared => "override_cleared",
            TransitionCause::OverrideExpired => "override_expired",
            TransitionCause::Reset => "reset",
        }
    }
}

/// One entry of a circuit's recent history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Generation after.
    pub generation: Generation,
    /// When it happened.
    pub at: Instant,
    /// Why.
    pub cause: TransitionCause,
}

/// Counters of one breaker. Window counters are soft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Consecutive failures in the current run.
    pub consecutive_failures: u32,
    /// Calls in the current rate window.
    pub window_calls: u64,
    /// Failures in the current rate window.
    pub window_failures: u64,
    /// Slow calls in the current rate window.
    pub window_slow_calls: u64,
    /// Probe leases in flight.
    pub probes_in_flight: u32,
    /// Successful probes in the current half-open period.
    pub half_open_successes: u32,
    /// Consecutive trips without a full recovery.
    pub consecutive_trips: u32,
    /// Calls allowed.
    pub total_allowed: u64,
    /// Calls rejected.
    pub total_rejected: u64,
    /// Successes applied.
    pub total_successes: u64,
    /// Failures applied.
    pub total_failures: u64,
    /// Ignored outcomes applied.
    pub total_ignored: u64,
    /// Stale outcomes dropped.
    pub total_stale: u64,
    /// Probe leases taken back after their lease time.
    pub total_leases_expired: u64,
}

/// The parts of a breaker that survive a restart (see
/// [`Breaker::persisted`](crate::Breaker::persisted)). Counters inside a
/// closed window are soft state and are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// State at the time of saving.
    pub state: State,
    /// Generation at the time of saving.
    pub generation: Generation,
    /// Open deadline, while open with one.
    pub open_until: Option<Instant>,
    /// Trips since the last full recovery (backoff memory).
    pub consecutive_trips: u32,
    /// Operator override.
    pub override_: Option<Override>,
}
