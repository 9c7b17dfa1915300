//! What goes into and comes out of the registry: its configuration, the
//! answers of the data plane, circuit snapshots and details, list queries
//! and pages. Plain data; the behaviour is in the files that use them.
//!
//! What operators are shown (report summaries, snapshots, details,
//! transitions, pages) serializes with serde in the shape of the HTTP
//! API's JSON: durations as whole milliseconds in `*_ms` fields, the
//! override as `override`, and a detail flat, its snapshot's fields beside
//! its counters, history and full effective policy.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use breakerd_policy::{
    Counters, Decision, Generation, LeaseId, Outcome, OverrideKind, Policy, PolicySpec, State,
    TransitionCause,
};

/// Longest `actor` of an admin change, in bytes.
pub const MAX_ACTOR_LEN: usize = 200;
/// Longest `reason` of an admin change, in bytes.
pub const MAX_REASON_LEN: usize = 1000;
/// Page size of a list when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page of a list; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Largest age of a reported outcome that is believed; larger ages are
/// clamped to it, never refused. A client's batch waits milliseconds, so a
/// larger age is a bug or a lie, and it only orders the consecutive rule.
pub const MAX_OUTCOME_AGE: Duration = Duration::from_secs(10);

/// Limits and timings of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Most circuits held at once; creating one more is refused.
    pub max_circuits: usize,
    /// A closed circuit without override, admin policy or watcher, unused
    /// for this long, is forgotten.
    pub idle_evict_after: Duration,
    /// How often the background task looks for idle circuits.
    pub evict_interval: Duration,
    /// Most outcomes in one report batch.
    pub max_report_batch: usize,
    /// Most circuits in one watch request.
    pub max_watch_circuits: usize,
    /// Most transitions returned in a [`CircuitDetail`] (the breaker keeps
    /// at most `breakerd_policy::HISTORY_LEN`).
    pub history_len: usize,
    /// Events buffered for watchers; a watcher further behind than this is
    /// resynchronised with fresh snapshots.
    pub watch_buffer: usize,
    /// Circuits of the cap that only operators (admin calls) may create, so
    /// that data-plane clients filling the cap cannot lock operators out.
    /// At most a tenth of `max_circuits` is reserved, whatever this says.
    pub operator_reserve: usize,
}

impl RegistryConfig {
    /// Most circuits the data plane (Acquire, Watch) may create: the cap
    /// less the operators' reserve.
    pub fn data_plane_cap(&self) -> usize {
        self.max_circuits - self.operator_reserve.min(self.max_circuits / 10)
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_circuits: 100_000,
            idle_evict_after: Duration::from_secs(600),
            evict_interval: Duration::from_secs(30),
            max_report_batch: 10_000,
            max_watch_circuits: 10_000,
            history_len: breakerd_policy::HISTORY_LEN,
            watch_buffer: 4096,
            operator_reserve: 1_000,
        }
    }
}

/// The answer to [`Registry::acquire`](crate::Registry::acquire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireOutcome {
    /// The breaker's decision (allowed with generation and lease, or
    /// rejected with reason and retry hint).
    pub decision: Decision,
    /// Version of the circuit's policy.
    pub policy_version: u64,
}

/// One reported outcome, as [`Registry::report`](crate::Registry::report) takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeIn {
    /// Circuit name.
    pub circuit: String,
    /// Generation the call was granted under.
    pub generation: Generation,
    /// Probe lease the call held, if any.
    pub lease: Option<LeaseId>,
    /// How it went.
    pub outcome: Outcome,
    /// How long it took.
    pub latency: Duration,
    /// How long before the batch arrived it completed (zero: just now or
    /// unknown, counted in arrival order); clamped to [`MAX_OUTCOME_AGE`].
    pub age: Duration,
}

/// What became of a report batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReportSummary {
    /// Outcomes counted under their circuit's current generation.
    pub applied: u32,
    /// Outcomes from another generation (or for a lease no longer held).
    pub stale: u32,
    /// Outcomes for circuits that do not exist.
    pub unknown: u32,
    /// Applied outcomes that moved their circuit to a new generation (a
    /// trip, a close, a reopen): the batch changed durable state.
    pub transitions: u32,
}

/// An operator override as watchers see it: the expiry as time remaining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideSnapshot {
    /// What it does.
    pub kind: OverrideKind,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// Time until it lapses (`None`: never).
    #[serde(rename = "expires_in_ms", serialize_with = "ser::millis_opt")]
    pub expires_in: Option<Duration>,
}

/// The state of one circuit as a client needs it to decide locally.
/// Serialized without its policy (a [`CircuitDetail`] carries it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitSnapshot {
    /// The circuit's name.
    #[serde(serialize_with = "ser::name")]
    pub name: Arc<str>,
    /// Breaker state.
    pub state: State,
    /// Generation of this state.
    pub generation: Generation,
    /// While open: time until half-open. Zero otherwise.
    #[serde(rename = "open_remaining_ms", serialize_with = "ser::millis")]
    pub open_remaining: Duration,
    /// Grows on every policy change of this circuit.
    pub policy_version: u64,
    /// The effective policy.
    #[serde(skip)]
    pub policy: Policy,
    /// The operator override, if any.
    #[serde(rename = "override")]
    pub override_: Option<OverrideSnapshot>,
    /// True when this snapshot announces the circuit's deletion.
    pub deleted: bool,
}

/// A transition in a circuit's recent history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransitionView {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Generation after.
    pub generation: Generation,
    /// Time since it happened.
    #[serde(rename = "age_ms", serialize_with = "ser::millis")]
    pub age: Duration,
    /// Why it happened.
    pub cause: TransitionCause,
}

/// Everything the coordinator knows about one circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitDetail {
    /// Current snapshot.
    pub snapshot: CircuitSnapshot,
    /// Counters.
    pub counters: Counters,
    /// Recent transitions, newest first.
    pub history: Vec<TransitionView>,
    /// The per-circuit admin policy layered over the configured one, if any.
    pub admin_policy: Option<PolicySpec>,
}

/// A list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only names starting with this (empty: all).
    pub prefix: String,
    /// Only circuits in this state.
    pub state: Option<State>,
    /// Page size; 0 means [`DEFAULT_PAGE_SIZE`], larger than
    /// [`MAX_PAGE_SIZE`] is clamped.
    pub page_size: usize,
    /// `next_page_token` of the previous page; empty for the first.
    pub page_token: String,
}

/// A page of circuits, ordered by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The circuits of this page.
    pub circuits: Vec<CircuitSnapshot>,
    /// Token of the next page; empty on the last page.
    pub next_page_token: String,
    /// Circuits matching the filter across all pages.
    pub total_matching: u64,
}

/// The snapshot's fields, then the counters, the history, the full
/// effective policy (every field set) and the admin policy (`null` when
/// there is none).
impl Serialize for CircuitDetail {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            snapshot: &'a CircuitSnapshot,
            counters: &'a Counters,
            history: &'a [TransitionView],
            policy: PolicySpec,
            admin_policy: &'a Option<PolicySpec>,
        }
        Flat {
            snapshot: &self.snapshot,
            counters: &self.counters,
            history: &self.history,
            policy: self.snapshot.policy.to_spec(),
            admin_policy: &self.admin_policy,
        }
        .serialize(serializer)
    }
}

/// How durations and shared names serialize.
mod ser {
    use std::sync::Arc;
    use std::time::Duration;

    use serde::Serializer;

    fn whole_millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// A duration as whole milliseconds.
    pub(super) fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(whole_millis(*d))
    }

    /// An optional duration as whole milliseconds, or `null`.
    pub(super) fn millis_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&whole_millis(*d)),
            None => s.serialize_none(),
        }
    }

    /// A shared name as a string.
    pub(super) fn name<S: Serializer>(name: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name)
    }
}
