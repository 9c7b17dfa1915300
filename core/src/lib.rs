//! The coordinator core: every circuit's authoritative breaker, with no
//! transport in it.
//!
//! [`Registry`] holds the circuits (a `DashMap` of small per-circuit locks),
//! answers acquire / report / watch / admin calls synchronously, publishes
//! every change of a circuit to watchers through one broadcast hub, and runs
//! one background task ([`Registry::spawn_background`]) that applies
//! deadlines (open timers, probe leases, override expiry) and evicts idle
//! circuits.
//!
//! Time comes from `tokio::time::Instant::now()`, so tests drive it with a
//! paused clock.
//!
//! [`store`] is the embedded store the registry persists to: what must
//! survive a crash and restart.

#![forbid(unsafe_code)]

pub mod store;

mod circuit_name;
mod driver;
mod error;
mod glob;
mod name;
mod resolver;
mod watch;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breakerd_policy::{
    Breaker, Counters, Decision, Generation, LeaseId, NodeId, Outcome, Override, OverrideKind,
    Policy, PolicySpec, Recorded, RejectReason, Report, State, TransitionCause,
};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use circuit_name::CircuitName;
pub use error::CoreError;
pub use glob::glob_match;
pub use name::{MAX_NAME_LEN, NameProblem, validate_circuit_name, validate_node_id};
pub use resolver::{PolicyResolver, ResolverError, merge_spec};
pub use watch::{Subscription, WatchUpdate};

use crate::store::{AuditRecord, CircuitRecord, Clocks, Loaded, Store, generation_floor};

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
        }
    }
}

/// The answer to [`Registry::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireOutcome {
    /// The breaker's decision (allowed with generation and lease, or
    /// rejected with reason and retry hint).
    pub decision: Decision,
    /// Version of the circuit's policy.
    pub policy_version: u64,
}

/// One reported outcome, as [`Registry::report`] takes it.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideSnapshot {
    /// What it does.
    pub kind: OverrideKind,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// Time until it lapses (`None`: never).
    pub expires_in: Option<Duration>,
}

/// The state of one circuit as a client needs it to decide locally.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitSnapshot {
    /// The circuit's name.
    pub name: Arc<str>,
    /// Breaker state.
    pub state: State,
    /// Generation of this state.
    pub generation: Generation,
    /// While open: time until half-open. Zero otherwise.
    pub open_remaining: Duration,
    /// Grows on every policy change of this circuit.
    pub policy_version: u64,
    /// The effective policy.
    pub policy: Policy,
    /// The operator override, if any.
    pub override_: Option<OverrideSnapshot>,
    /// True when this snapshot announces the circuit's deletion.
    pub deleted: bool,
}

/// A transition in a circuit's recent history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionView {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Generation after.
    pub generation: Generation,
    /// Time since it happened.
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
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The circuits of this page.
    pub circuits: Vec<CircuitSnapshot>,
    /// Token of the next page; empty on the last page.
    pub next_page_token: String,
    /// Circuits matching the filter across all pages.
    pub total_matching: u64,
}

/// Totals since the registry started, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Circuits held now.
    pub circuits: usize,
    /// Acquire calls answered.
    pub acquires: u64,
    /// Acquire calls rejected.
    pub rejections: u64,
    /// Outcomes applied.
    pub applied: u64,
    /// Outcomes dropped as stale.
    pub stale: u64,
    /// Outcomes for unknown circuits.
    pub unknown: u64,
    /// Circuits created.
    pub created: u64,
    /// Circuits evicted as idle.
    pub evicted: u64,
    /// Watchers resynchronised after falling behind.
    pub watch_resyncs: u64,
    /// Acquire calls rejected because the circuit was open.
    pub rejected_open: u64,
    /// Acquire calls rejected because every half-open probe was taken.
    pub rejected_probes_exhausted: u64,
    /// Acquire calls rejected by a forced-open override.
    pub rejected_forced_open: u64,
    /// Successes applied.
    pub successes: u64,
    /// Failures applied.
    pub failures: u64,
    /// Ignored outcomes applied.
    pub ignored: u64,
    /// Half-open probe leases granted.
    pub leases_granted: u64,
    /// Probe leases taken back after their lease time ran out.
    pub leases_expired: u64,
}

/// How many transitions of one kind happened since the registry started
/// (see [`Registry::transition_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionCount {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Why.
    pub cause: TransitionCause,
    /// How many times.
    pub count: u64,
}

#[derive(Debug, Default)]
struct Stats {
    acquires: AtomicU64,
    rejections: AtomicU64,
    applied: AtomicU64,
    stale: AtomicU64,
    unknown: AtomicU64,
    created: AtomicU64,
    evicted: AtomicU64,
    watch_resyncs: AtomicU64,
    /// Indexed by [`reject_index`].
    rejected_by: [AtomicU64; 3],
    /// Success, failure, ignored.
    outcomes_by: [AtomicU64; 3],
    leases_granted: AtomicU64,
    leases_expired: AtomicU64,
    /// Transitions are rare next to calls: one small map behind a lock
    /// costs nothing on the hot path.
    transitions: Mutex<HashMap<(State, State, TransitionCause), u64>>,
}

fn reject_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::Open => 0,
        RejectReason::ProbesExhausted => 1,
        RejectReason::ForcedOpen => 2,
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Ignored => 2,
    }
}

/// One circuit: its breaker behind a small lock of its own.
///
/// The registry may hold a million (bench W6), most of them closed and
/// untouched by operators, so a circuit is one allocation (`Arc<Circuit>`,
/// with the name inline when short) plus one word in the map, and whatever
/// only some circuits need is boxed away (see `tests::a_circuit_is_small`).
#[derive(Debug)]
struct Circuit {
    name: CircuitName,
    inner: Mutex<CircuitInner>,
    /// Milliseconds since the registry's epoch of the latest use.
    last_used: AtomicU64,
}

#[derive(Debug)]
struct CircuitInner {
    breaker: Breaker,
    /// Only while the circuit has an admin policy or a deadline scheduled.
    extra: Option<Box<CircuitExtra>>,
    /// Removed from the map (deleted or evicted): whoever still holds the
    /// `Arc` must look the name up again.
    deleted: bool,
}

/// The parts of a circuit that most circuits never need.
#[derive(Debug, Default)]
struct CircuitExtra {
    /// Admin policy changes, layered over the configured policy.
    admin_spec: Option<PolicySpec>,
    /// Earliest deadline handed to the background driver and not yet fired.
    scheduled: Option<Instant>,
}

impl CircuitInner {
    fn new(breaker: Breaker, admin_spec: Option<PolicySpec>) -> Self {
        Self {
            breaker,
            extra: admin_spec.map(|spec| {
                Box::new(CircuitExtra {
                    admin_spec: Some(spec),
                    scheduled: None,
                })
            }),
            deleted: false,
        }
    }

    fn admin_spec(&self) -> Option<&PolicySpec> {
        self.extra.as_ref().and_then(|e| e.admin_spec.as_ref())
    }

    fn set_admin_spec(&mut self, spec: PolicySpec) {
        self.extra.get_or_insert_with(Box::default).admin_spec = Some(spec);
    }

    fn scheduled(&self) -> Option<Instant> {
        self.extra.as_ref().and_then(|e| e.scheduled)
    }

    /// Notes the deadline handed to the driver, or (`None`) that it fired.
    fn set_scheduled(&mut self, at: Option<Instant>) {
        match (&mut self.extra, at) {
            (Some(extra), None) if extra.admin_spec.is_none() => self.extra = None,
            (Some(extra), at) => extra.scheduled = at,
            (None, None) => {}
            (None, Some(at)) => {
                self.extra = Some(Box::new(CircuitExtra {
                    admin_spec: None,
                    scheduled: Some(at),
                }));
            }
        }
    }
}

/// A key of the registry's map: the circuit itself, found by its name, so
/// that the map keeps no second copy of the name.
#[derive(Debug, Clone)]
struct CircuitKey(Arc<Circuit>);

impl Borrow<str> for CircuitKey {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// Hashes as the name's `str` does, as `Borrow<str>` requires.
impl Hash for CircuitKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.as_str().hash(state);
    }
}

impl PartialEq for CircuitKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for CircuitKey {}

/// A deadline handed to the background driver: when, and which circuit.
type TimerEntry = (Instant, Arc<str>);

/// What decides whether watchers must hear about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    generation: Generation,
    policy_version: u64,
    state: State,
    override_: Option<(OverrideKind, Option<Instant>)>,
}

impl Fingerprint {
    fn of(b: &Breaker) -> Self {
        Self {
            generation: b.generation(),
            policy_version: b.policy_version(),
            state: b.state(),
            override_: b.override_().map(|o| (o.kind, o.expires_at)),
        }
    }
}

/// A breaker before a change: what watchers know of it, and how many probe
/// leases it had taken back (the stats count the difference).
#[derive(Debug, Clone, Copy)]
struct Before {
    fingerprint: Fingerprint,
    leases_expired: u64,
}

impl Before {
    fn of(b: &Breaker) -> Self {
        Self {
            fingerprint: Fingerprint::of(b),
            leases_expired: b.leases_expired(),
        }
    }
}

/// The coordinator's circuits. Share it as `Arc<Registry>`; every method
/// but the background task is synchronous and never blocks for long.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    resolver: PolicyResolver,
    circuits: DashMap<CircuitKey, ()>,
    /// Circuits held or being created: reserved before insertion, so the
    /// cap is exact under concurrency.
    reserved: AtomicUsize,
    /// Live watchers per circuit name; watched circuits are never evicted.
    watched: DashMap<Arc<str>, usize>,
    /// Highest generation of any circuit removed so far: a circuit created
    /// again under the same name starts above it, so that its generations
    /// never go back.
    removed_generation: AtomicU64,
    hub: broadcast::Sender<Arc<CircuitSnapshot>>,
    timers: mpsc::UnboundedSender<TimerEntry>,
    timer_rx: Mutex<Option<mpsc::UnboundedReceiver<TimerEntry>>>,
    /// Bumped by the driver after every batch of deadlines it applied
    /// (lets tests wait for it instead of sleeping).
    driver_ticks: tokio::sync::watch::Sender<u64>,
    epoch: Instant,
    stats: Stats,
    /// Where durable state goes; `None` runs in memory only.
    store: Option<Store>,
    /// Every generation handed out in this run is above this (see
    /// [`generation_floor`]), so generations never go back across restarts.
    generation_floor: Generation,
}

/// The current instant on tokio's clock (paused in tests).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// When an outcome that arrived at `now` aged `age` completed: `None` (order
/// of arrival) for a zero age, or one before the clock's earliest instant.
fn completed_at(now: Instant, age: Duration) -> Option<Instant> {
    if age.is_zero() {
        return None;
    }
    now.checked_sub(age.min(MAX_OUTCOME_AGE))
}

fn check_audit(actor: &str, reason: &str) -> Result<(), CoreError> {
    let field = |name: &str, value: &str, max: usize| {
        if value.trim().is_empty() {
            Err(CoreError::InvalidArgument(format!("{name} is required")))
        } else if value.len() > max {
            Err(CoreError::InvalidArgument(format!(
                "{name} has {} bytes; the limit is {max}",
                value.len()
            )))
        } else {
            Ok(())
        }
    };
    field("actor", actor, MAX_ACTOR_LEN)?;
    field("reason", reason, MAX_REASON_LEN)
}

fn snapshot_of(name: &str, inner: &CircuitInner, now: Instant) -> CircuitSnapshot {
    let b = &inner.breaker;
    CircuitSnapshot {
        name: Arc::from(name),
        state: b.state(),
        generation: b.generation(),
        open_remaining: b.open_remaining(now),
        policy_version: b.policy_version(),
        policy: b.policy().clone(),
        override_: b.override_().map(|o| OverrideSnapshot {
            kind: o.kind,
            reason: o.reason.clone(),
            actor: o.actor.clone(),
            expires_in: o.expires_at.map(|t| t.saturating_duration_since(now)),
        }),
        deleted: inner.deleted,
    }
}

impl Registry {
    /// An empty registry. Call [`spawn_background`](Self::spawn_background)
    /// on it to run deadlines and eviction.
    pub fn new(config: RegistryConfig, resolver: PolicyResolver) -> Arc<Self> {
        Arc::new(Self::build(config, resolver, None, 0))
    }

    /// A registry backed by `store`, holding every circuit `loaded` from it:
    /// overrides, admin policies, backoff memory, and open circuits until
    /// their original deadline (downtime counted). Every generation of this
    /// run is above those of earlier runs.
    pub fn restore(
        config: RegistryConfig,
        resolver: PolicyResolver,
        store: Store,
        loaded: Loaded,
    ) -> Arc<Self> {
        let floor = generation_floor(loaded.epoch);
        let registry = Self::build(config, resolver, Some(store), floor);
        let clocks = Clocks::now();
        let now = clocks.mono;
        for record in loaded.circuits {
            if let Some(problem) = name::name_problem(&record.name) {
                tracing::error!(circuit = %record.name, %problem, "store holds an invalid circuit name; skipped");
                continue;
            }
            let configured = registry.resolver.resolve_shared(&record.name);
            let (policy, admin_spec) = match &record.admin_policy {
                None => (configured, None),
                Some(spec) => match configured.apply(spec) {
                    Ok(p) => (Arc::new(p), Some(spec.clone())),
                    Err(e) => {
                        tracing::error!(circuit = %record.name, error = %e, "stored admin policy no longer valid over the configured policy; using the configured policy");
                        (configured, None)
                    }
                },
            };
            let mut saved = record.to_persisted(clocks);
            saved.generation = saved.generation.max(floor);
            let breaker = Breaker::restore(policy, NodeId::from_name(&record.name).0, saved, now);
            let circuit = Arc::new(Circuit {
                name: CircuitName::new(&record.name),
                inner: Mutex::new(CircuitInner::new(breaker, admin_spec)),
                last_used: AtomicU64::new(0),
            });
            // Nothing is written back: what restoring changed (a deadline
            // that passed, the new generation floor) is derived again the
            // same way on the next start, and later changes are persisted as
            // they happen.
            registry.schedule(&circuit, &mut circuit.inner.lock(), now);
            // Durable state is never dropped for the cap: restored circuits
            // count against it but are all kept.
            registry.reserved.fetch_add(1, Ordering::AcqRel);
            registry.circuits.insert(CircuitKey(circuit), ());
        }
        tracing::info!(
            circuits = registry.len(),
            epoch = loaded.epoch,
            "state restored"
        );
        Arc::new(registry)
    }

    fn build(
        config: RegistryConfig,
        resolver: PolicyResolver,
        store: Option<Store>,
        generation_floor: Generation,
    ) -> Self {
        let (hub, _) = broadcast::channel(config.watch_buffer.max(1));
        let (timers, timer_rx) = mpsc::unbounded_channel();
        Self {
            config,
            resolver,
            circuits: DashMap::new(),
            reserved: AtomicUsize::new(0),
            watched: DashMap::new(),
            removed_generation: AtomicU64::new(0),
            hub,
            timers,
            timer_rx: Mutex::new(Some(timer_rx)),
            driver_ticks: tokio::sync::watch::channel(0).0,
            epoch: now(),
            stats: Stats::default(),
            store,
            generation_floor,
        }
    }

    /// Waits until every change made so far is durable (a no-op without a
    /// store). Admin calls answer only after this, so an acknowledged change
    /// survives a crash.
    pub async fn durable(&self) -> Result<(), CoreError> {
        match &self.store {
            Some(store) => store
                .flush()
                .await
                .map_err(|e| CoreError::Storage(e.to_string())),
            None => Ok(()),
        }
    }

    /// The newest `limit` admin changes, newest first, optionally of one
    /// circuit only. Empty without a store.
    pub fn audit_log(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, CoreError> {
        if let Some(name) = circuit {
            validate_circuit_name(name)?;
        }
        match &self.store {
            Some(store) => store
                .read_audit(circuit, limit)
                .map_err(|e| CoreError::Storage(e.to_string())),
            None => Ok(Vec::new()),
        }
    }

    /// The durable state of a circuit, as the store keeps it.
    fn record_of(name: &str, inner: &CircuitInner, now: Instant) -> CircuitRecord {
        CircuitRecord::from_persisted(
            name,
            &inner.breaker.persisted(),
            inner.admin_spec().cloned(),
            Clocks::at(now),
        )
    }

    /// Queues the circuit's durable state for the store (not waiting for it
    /// to reach the disk; admin calls wait with [`durable`](Self::durable)).
    fn persist(&self, circuit: &Circuit, inner: &CircuitInner, now: Instant) {
        if let Some(store) = &self.store {
            // The Ack is not awaited here: the write stays queued.
            drop(store.put(Self::record_of(&circuit.name, inner, now)));
        }
    }

    /// Records an admin change: a structured log line and, with a store, an
    /// audit record with the circuit's durable state before and after.
    fn audit(
        &self,
        change: Change<'_>,
        before: Option<CircuitRecord>,
        after: Option<CircuitRecord>,
    ) {
        let json = |r: &Option<CircuitRecord>| {
            r.as_ref()
                .and_then(|r| serde_json::to_string(r).ok())
                .unwrap_or_else(|| "null".to_owned())
        };
        tracing::info!(
            target: "breakerd::audit",
            actor = change.actor,
            action = change.action,
            reason = change.reason,
            circuit = change.circuit,
            before = %json(&before),
            after = %json(&after),
            "admin change"
        );
        if let Some(store) = &self.store {
            let at_ms = Clocks::now().unix_ms;
            drop(store.audit(AuditRecord {
                at_ms,
                actor: change.actor.to_owned(),
                action: change.action.to_owned(),
                circuit: change.circuit.to_owned(),
                reason: change.reason.to_owned(),
                before,
                after,
            }));
        }
    }

    /// The configuration this registry runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Circuits held now.
    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    /// Whether no circuit is held.
    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// Whether the circuit `name` exists now, i.e. whether using it would
    /// create nothing. Only a hint under concurrency (it may be created,
    /// deleted or evicted right after): per-client limits on new names use
    /// it, where an off-by-one race does not matter.
    pub fn exists(&self, name: &str) -> bool {
        self.circuits.contains_key(name)
    }

    /// Totals for metrics.
    pub fn stats(&self) -> RegistryStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RegistryStats {
            circuits: self.len(),
            acquires: l(&self.stats.acquires),
            rejections: l(&self.stats.rejections),
            applied: l(&self.stats.applied),
            stale: l(&self.stats.stale),
            unknown: l(&self.stats.unknown),
            created: l(&self.stats.created),
            evicted: l(&self.stats.evicted),
            watch_resyncs: l(&self.stats.watch_resyncs),
            rejected_open: l(&self.stats.rejected_by[0]),
            rejected_probes_exhausted: l(&self.stats.rejected_by[1]),
            rejected_forced_open: l(&self.stats.rejected_by[2]),
            successes: l(&self.stats.outcomes_by[0]),
            failures: l(&self.stats.outcomes_by[1]),
            ignored: l(&self.stats.outcomes_by[2]),
            leases_granted: l(&self.stats.leases_granted),
            leases_expired: l(&self.stats.leases_expired),
        }
    }

    /// Every kind of transition seen since the registry started, with its
    /// count, for metrics.
    pub fn transition_counts(&self) -> Vec<TransitionCount> {
        self.stats
            .transitions
            .lock()
            .iter()
            .map(|(&(from, to, cause), &count)| TransitionCount {
                from,
                to,
                cause,
                count,
            })
            .collect()
    }

    /// Adds the transitions and lease expiries the breaker made since
    /// `before` to the stats.
    fn count_changes(&self, b: &Breaker, before: &Before) {
        let generation = before.fingerprint.generation;
        if b.generation() != generation {
            // Every generation step is one transition, recorded in history.
            let mut map = self.stats.transitions.lock();
            for t in b.history().take_while(|t| t.generation > generation) {
                *map.entry((t.from, t.to, t.cause)).or_insert(0) += 1;
            }
        }
        let expired = b.leases_expired().saturating_sub(before.leases_expired);
        if expired > 0 {
            self.stats
                .leases_expired
                .fetch_add(expired, Ordering::Relaxed);
        }
    }

    /// The generation a newly created circuit starts at: above every
    /// generation of a removed circuit and of earlier runs.
    fn initial_generation(&self) -> Generation {
        self.removed_generation
            .load(Ordering::Acquire)
            .max(self.generation_floor)
            + 1
    }

    fn millis_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self, circuit: &Circuit, now: Instant) {
        circuit
            .last_used
            .fetch_max(self.millis_since_epoch(now), Ordering::Relaxed);
    }

    fn lookup(&self, name: &str) -> Option<Arc<Circuit>> {
        // Clone the Arc and drop the shard guard before anyone locks it.
        self.circuits.get(name).map(|e| e.key().0.clone())
    }

    fn reserve_slot(&self) -> Result<(), CoreError> {
        let limit = self.config.max_circuits;
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| CoreError::TooManyCircuits { limit })
    }

    fn release_slot(&self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// The circuit `name` (already validated), created with its configured
    /// policy when missing.
    fn get_or_create(&self, name: &str, now: Instant) -> Result<Arc<Circuit>, CoreError> {
        if let Some(c) = self.lookup(name) {
            return Ok(c);
        }
        let policy = self.resolver.resolve_shared(name);
        let seed = NodeId::from_name(name).0;
        // The map's key is the circuit itself, so it is built before the
        // shard is locked; its breaker is built again with the real
        // generation once the name is known to be free.
        let circuit = Arc::new(Circuit {
            name: CircuitName::new(name),
            inner: Mutex::new(CircuitInner::new(
                Breaker::new(Arc::clone(&policy), 0, seed, now),
                None,
            )),
            last_used: AtomicU64::new(self.millis_since_epoch(now)),
        });
        match self.circuits.entry(CircuitKey(Arc::clone(&circuit))) {
            Entry::Occupied(e) => Ok(e.key().0.clone()),
            Entry::Vacant(v) => {
                self.reserve_slot()?;
                let snapshot = {
                    let mut inner = circuit.inner.lock();
                    // Read under the shard lock, after any removal of this
                    // name: the new circuit starts above its generations.
                    inner.breaker = Breaker::new(policy, self.initial_generation(), seed, now);
                    snapshot_of(&circuit.name, &inner, now)
                };
                // Announced while the shard is still locked (the guard
                // `insert` returns holds it), so no other event of this
                // circuit can reach the hub before it. `publish` only sends
                // on the hub's channel: it never touches the map.
                let shard = v.insert(());
                self.publish(Arc::new(snapshot));
                drop(shard);
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                Ok(circuit)
            }
        }
    }

    /// Runs `f` on the live circuit `name` (created when `create`), under its
    /// lock, then publishes and schedules whatever changed. Retries when the
    /// circuit was removed between lookup and lock.
    fn with_circuit<T>(
        &self,
        name: &str,
        create: bool,
        now: Instant,
        f: impl FnOnce(&Arc<Circuit>, &mut CircuitInner) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        loop {
            let circuit = if create {
                self.get_or_create(name, now)?
            } else {
                self.lookup(name).ok_or_else(|| CoreError::NotFound {
                    name: name.to_owned(),
                })?
            };
            let mut inner = circuit.inner.lock();
            if inner.deleted {
                continue;
            }
            self.touch(&circuit, now);
            let before = Before::of(&inner.breaker);
            let result = f(&circuit, &mut inner);
            self.after_change(&circuit, &mut inner, before, now, now);
            return result;
        }
    }

    /// Counts, publishes and persists the circuit's new state if its
    /// generation, state, override or policy changed since `before`, and
    /// schedules its next deadline (never before `not_before`). Called with
    /// the circuit locked, so events of one circuit reach the hub and the
    /// store in order.
    fn after_change(
        &self,
        circuit: &Circuit,
        inner: &mut CircuitInner,
        before: Before,
        now: Instant,
        not_before: Instant,
    ) {
        self.count_changes(&inner.breaker, &before);
        if Fingerprint::of(&inner.breaker) != before.fingerprint {
            self.publish(Arc::new(snapshot_of(&circuit.name, inner, now)));
            self.persist(circuit, inner, now);
        }
        self.schedule(circuit, inner, not_before);
    }

    fn publish(&self, snapshot: Arc<CircuitSnapshot>) {
        // An error only means nobody is watching.
        let _ = self.hub.send(snapshot);
    }

    /// Hands the circuit's next deadline to the driver when it is earlier
    /// than what is already scheduled. Deadlines are never scheduled before
    /// `not_before`.
    fn schedule(&self, circuit: &Circuit, inner: &mut CircuitInner, not_before: Instant) {
        let Some(deadline) = inner.breaker.next_deadline() else {
            return;
        };
        let deadline = deadline.max(not_before);
        if inner.scheduled().is_none_or(|s| deadline < s) {
            inner.set_scheduled(Some(deadline));
            // Fails only when the driver has stopped (shutdown).
            let _ = self
                .timers
                .send((deadline, Arc::from(circuit.name.as_str())));
        }
    }

    /// Asks to make a call through `circuit` on behalf of `node`. Creates the
    /// circuit with its configured policy on first use.
    pub fn acquire(&self, circuit: &str, node: &str) -> Result<AcquireOutcome, CoreError> {
        validate_circuit_name(circuit)?;
        validate_node_id(node)?;
        let now = now();
        let node = NodeId::from_name(node);
        let outcome = self.with_circuit(circuit, true, now, |_, inner| {
            let decision = inner.breaker.acquire(node, now);
            Ok(AcquireOutcome {
                decision,
                policy_version: inner.breaker.policy_version(),
            })
        })?;
        self.stats.acquires.fetch_add(1, Ordering::Relaxed);
        match outcome.decision {
            Decision::Reject { reason, .. } => {
                self.stats.rejections.fetch_add(1, Ordering::Relaxed);
                self.stats.rejected_by[reject_index(reason)].fetch_add(1, Ordering::Relaxed);
            }
            Decision::Allow { lease: Some(_), .. } => {
                self.stats.leases_granted.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Allow { lease: None, .. } => {}
        }
        Ok(outcome)
    }

    /// Applies a batch of outcomes from `node`, in order. The batch size and
    /// every name are checked first: if anything is invalid nothing is
    /// applied. Outcomes for circuits that do not exist are counted as
    /// unknown; they never create a circuit.
    pub fn report(&self, node: &str, outcomes: &[OutcomeIn]) -> Result<ReportSummary, CoreError> {
        validate_node_id(node)?;
        if outcomes.len() > self.config.max_report_batch {
            return Err(CoreError::InvalidArgument(format!(
                "a report batch holds at most {} outcomes, not {}",
                self.config.max_report_batch,
                outcomes.len()
            )));
        }
        for (i, o) in outcomes.iter().enumerate() {
            if let Some(problem) = name::name_problem(&o.circuit) {
                return Err(CoreError::InvalidName {
                    what: format!("outcomes[{i}].circuit: circuit name"),
                    problem,
                });
            }
        }
        let node = NodeId::from_name(node);
        let now = now();
        let mut summary = ReportSummary::default();
        for o in outcomes {
            let report = Report {
                generation: o.generation,
                lease: o.lease,
                outcome: o.outcome,
                latency: o.latency,
                node,
                completed_at: completed_at(now, o.age),
            };
            match self.with_circuit(&o.circuit, false, now, |_, inner| {
                let before = inner.breaker.generation();
                let recorded = inner.breaker.record(&report, now);
                Ok((recorded, inner.breaker.generation() != before))
            }) {
                Ok((Recorded::Applied, moved)) => {
                    summary.applied += 1;
                    summary.transitions += u32::from(moved);
                    self.stats.outcomes_by[outcome_index(o.outcome)]
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok((Recorded::Stale, _)) => summary.stale += 1,
                Err(_) => summary.unknown += 1,
            }
        }
        let add = |a: &AtomicU64, n: u32| a.fetch_add(u64::from(n), Ordering::Relaxed);
        add(&self.stats.applied, summary.applied);
        add(&self.stats.stale, summary.stale);
        add(&self.stats.unknown, summary.unknown);
        Ok(summary)
    }

    /// One circuit in detail.
    pub fn get(&self, name: &str) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        let now = now();
        let circuit = self.lookup(name).ok_or_else(|| CoreError::NotFound {
            name: name.to_owned(),
        })?;
        let inner = circuit.inner.lock();
        if inner.deleted {
            return Err(CoreError::NotFound {
                name: name.to_owned(),
            });
        }
        Ok(self.detail_of(&circuit, &inner, now))
    }

    fn detail_of(&self, circuit: &Circuit, inner: &CircuitInner, now: Instant) -> CircuitDetail {
        CircuitDetail {
            snapshot: snapshot_of(&circuit.name, inner, now),
            counters: inner.breaker.counters(),
            history: inner
                .breaker
                .history()
                .take(self.config.history_len)
                .map(|t| TransitionView {
                    from: t.from,
                    to: t.to,
                    generation: t.generation,
                    age: now.saturating_duration_since(t.at),
                    cause: t.cause,
                })
                .collect(),
            admin_policy: inner.admin_spec().cloned(),
        }
    }

    /// The current snapshot of an existing circuit.
    fn snapshot(&self, name: &str, now: Instant) -> Option<Arc<CircuitSnapshot>> {
        let circuit = self.lookup(name)?;
        let inner = circuit.inner.lock();
        (!inner.deleted).then(|| Arc::new(snapshot_of(&circuit.name, &inner, now)))
    }

    /// Snapshots of every circuit, ordered by name.
    fn snapshot_all(&self, now: Instant) -> Vec<Arc<CircuitSnapshot>> {
        let mut all: Vec<Arc<Circuit>> = self.circuits.iter().map(|e| e.key().0.clone()).collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all.iter()
            .filter_map(|c| {
                let inner = c.inner.lock();
                (!inner.deleted).then(|| Arc::new(snapshot_of(&c.name, &inner, now)))
            })
            .collect()
    }

    /// Circuits filtered by prefix and state, ordered by name, one page at
    /// a time.
    pub fn list(&self, query: &ListQuery) -> Result<Page, CoreError> {
        if !query.page_token.is_empty() && name::name_problem(&query.page_token).is_some() {
            return Err(CoreError::InvalidArgument(format!(
                "invalid page token {:?}",
                query.page_token
            )));
        }
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let now = now();
        // Collect first: no map guard may be held while a circuit is locked.
        let candidates: Vec<Arc<Circuit>> = self
            .circuits
            .iter()
            .filter(|e| e.key().0.name.starts_with(query.prefix.as_str()))
            .map(|e| e.key().0.clone())
            .collect();
        let mut total_matching = 0u64;
        let mut after_token: Vec<Arc<Circuit>> = Vec::new();
        for c in candidates {
            if let Some(state) = query.state {
                let inner = c.inner.lock();
                if inner.deleted || inner.breaker.state() != state {
                    continue;
                }
            }
            total_matching += 1;
            if query.page_token.is_empty() || &*c.name > query.page_token.as_str() {
                after_token.push(c);
            }
        }
        let more = after_token.len() > page_size;
        if more {
            after_token.select_nth_unstable_by(page_size, |a, b| a.name.cmp(&b.name));
            after_token.truncate(page_size);
        }
        after_token.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let circuits: Vec<CircuitSnapshot> = after_token
            .iter()
            .filter_map(|c| {
                let inner = c.inner.lock();
                (!inner.deleted).then(|| snapshot_of(&c.name, &inner, now))
            })
            .collect();
        let next_page_token = match (more, after_token.last()) {
            (true, Some(last)) => last.name.to_string(),
            _ => String::new(),
        };
        Ok(Page {
            circuits,
            next_page_token,
            total_matching,
        })
    }

    /// Changes the admin policy of `name` (creating the circuit): the set
    /// fields of `spec` are merged onto its current admin policy, and the
    /// result is layered over the configured policy. An invalid result
    /// changes nothing.
    pub fn set_policy(
        &self,
        name: &str,
        spec: &PolicySpec,
        actor: &str,
        reason: &str,
    ) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let base = self.resolver.resolve_shared(name);
        // Refuse before creating anything when the change cannot be valid
        // even on a fresh circuit.
        if self.lookup(name).is_none() {
            base.apply(spec)?;
        }
        let now = now();
        self.with_circuit(name, true, now, |circuit, inner| {
            let merged = merge_spec(inner.admin_spec().unwrap_or(&PolicySpec::default()), spec);
            let policy = base.apply(&merged)?;
            let before = Self::record_of(&circuit.name, inner, now);
            inner.set_admin_spec(merged);
            inner.breaker.set_policy(policy, now);
            let after = Self::record_of(&circuit.name, inner, now);
            self.audit(
                Change::new(actor, "set_policy", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok(self.detail_of(circuit, inner, now))
        })
    }

    /// Sets an operator override on `name` (creating the circuit), lapsing
    /// after `expires_in` when given.
    pub fn set_override(
        &self,
        name: &str,
        kind: OverrideKind,
        actor: &str,
        reason: &str,
        expires_in: Option<Duration>,
    ) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        let expires_at = match expires_in {
            None => None,
            Some(d) if d.is_zero() => {
                return Err(CoreError::InvalidArgument(
                    "expires_in must be positive (omit it for an override that never lapses)"
                        .into(),
                ));
            }
            Some(d) => Some(now.checked_add(d).ok_or_else(|| {
                CoreError::InvalidArgument(format!("expires_in {d:?} is too far in the future"))
            })?),
        };
        self.with_circuit(name, true, now, |circuit, inner| {
            let before = Self::record_of(&circuit.name, inner, now);
            inner.breaker.set_override(
                Override {
                    kind,
                    reason: reason.to_owned(),
                    actor: actor.to_owned(),
                    expires_at,
                },
                now,
            );
            let after = Self::record_of(&circuit.name, inner, now);
            self.audit(
                Change::new(actor, "set_override", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok(self.detail_of(circuit, inner, now))
        })
    }

    /// Removes the operator override of `name`, if any (a no-op when there
    /// is none).
    pub fn clear_override(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        self.with_circuit(name, false, now, |circuit, inner| {
            let before = Self::record_of(&circuit.name, inner, now);
            inner.breaker.clear_override(now);
            let after = Self::record_of(&circuit.name, inner, now);
            self.audit(
                Change::new(actor, "clear_override", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok(self.detail_of(circuit, inner, now))
        })
    }

    /// Puts `name` back to closed with fresh counters under a new
    /// generation; its override and policy stay.
    pub fn reset(&self, name: &str, actor: &str, reason: &str) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        self.with_circuit(name, false, now, |circuit, inner| {
            let before = Self::record_of(&circuit.name, inner, now);
            inner.breaker.reset(now);
            let after = Self::record_of(&circuit.name, inner, now);
            self.audit(
                Change::new(actor, "reset", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok(self.detail_of(circuit, inner, now))
        })
    }

    /// Forgets `name`, its override and its admin policy. Watchers receive a
    /// `deleted` snapshot.
    pub fn delete(&self, name: &str, actor: &str, reason: &str) -> Result<(), CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        loop {
            let circuit = self.lookup(name).ok_or_else(|| CoreError::NotFound {
                name: name.to_owned(),
            })?;
            let mut inner = circuit.inner.lock();
            if inner.deleted {
                continue;
            }
            let before = Self::record_of(&circuit.name, &inner, now);
            self.remove_locked(&circuit, &mut inner);
            if let Some(store) = &self.store {
                drop(store.forget(&circuit.name));
            }
            self.audit(
                Change::new(actor, "delete", reason, &circuit.name),
                Some(before),
                None,
            );
            self.publish(Arc::new(snapshot_of(&circuit.name, &inner, now)));
            return Ok(());
        }
    }

    /// Marks the locked circuit removed and takes it out of the map.
    /// Lock order is circuit, then map shard; the only path that takes them
    /// the other way round (eviction) uses `try_lock`.
    fn remove_locked(&self, circuit: &Arc<Circuit>, inner: &mut CircuitInner) {
        inner.deleted = true;
        self.removed_generation
            .fetch_max(inner.breaker.generation(), Ordering::AcqRel);
        if self
            .circuits
            .remove_if(circuit.name.as_str(), |key, ()| {
                Arc::ptr_eq(&key.0, circuit)
            })
            .is_some()
        {
            self.release_slot();
        }
    }

    /// Forgets every circuit that is evictable (closed, no override, no
    /// probe in flight), has no admin policy and no watcher, and was not
    /// used for `idle_evict_after`. Returns how many were evicted.
    pub fn evict_idle(&self) -> usize {
        let now_ms = self.millis_since_epoch(now());
        let idle_ms = u64::try_from(self.config.idle_evict_after.as_millis()).unwrap_or(u64::MAX);
        let mut evicted = 0;
        self.circuits.retain(|key, ()| {
            let (circuit, name) = (&key.0, key.0.name.as_str());
            if now_ms.saturating_sub(circuit.last_used.load(Ordering::Relaxed)) < idle_ms
                || self.watched.contains_key(name)
            {
                return true;
            }
            // Never wait for a circuit lock while holding a shard lock.
            let Some(mut inner) = circuit.inner.try_lock() else {
                return true;
            };
            if inner.deleted {
                return false;
            }
            if inner.admin_spec().is_some() || !inner.breaker.is_evictable() {
                return true;
            }
            inner.deleted = true;
            self.removed_generation
                .fetch_max(inner.breaker.generation(), Ordering::AcqRel);
            evicted += 1;
            false
        });
        for _ in 0..evicted {
            self.release_slot();
        }
        self.stats
            .evicted
            .fetch_add(evicted as u64, Ordering::Relaxed);
        evicted
    }

    /// Applies the deadlines of `name` that are due (called by the driver).
    fn fire_deadline(&self, name: &str, now: Instant) {
        let Some(circuit) = self.lookup(name) else {
            return;
        };
        let mut inner = circuit.inner.lock();
        if inner.deleted {
            return;
        }
        if inner.scheduled().is_some_and(|s| s <= now) {
            inner.set_scheduled(None);
        }
        let before = Before::of(&inner.breaker);
        inner.breaker.advance(now);
        // A deadline that `advance` left due must not spin the driver.
        self.after_change(
            &circuit,
            &mut inner,
            before,
            now,
            now + Duration::from_millis(1),
        );
    }

    /// Subscribes to `names` (validated; missing circuits are created, the
    /// cap applies), or to every circuit when `names` is empty (creating
    /// none). The first [`Subscription::next`] yields the current snapshots.
    pub fn watch(self: &Arc<Self>, names: &[String]) -> Result<Subscription, CoreError> {
        if names.len() > self.config.max_watch_circuits {
            return Err(CoreError::InvalidArgument(format!(
                "a watch holds at most {} circuits, not {}",
                self.config.max_watch_circuits,
                names.len()
            )));
        }
        for (i, n) in names.iter().enumerate() {
            if let Some(problem) = name::name_problem(n) {
                return Err(CoreError::InvalidName {
                    what: format!("circuits[{i}]: circuit name"),
                    problem,
                });
            }
        }
        watch::subscribe(self, names)
    }

    /// Starts the background task: applies every circuit's deadlines when
    /// they fall due (open timers, probe leases, override expiry), publishing
    /// the transitions, and evicts idle circuits every `evict_interval`.
    /// Runs until `shutdown` completes or the registry is dropped. Returns
    /// `None` when it was already started.
    pub fn spawn_background<F>(self: &Arc<Self>, shutdown: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let rx = self.timer_rx.lock().take()?;
        Some(tokio::spawn(driver::run(
            Arc::downgrade(self),
            rx,
            self.config.evict_interval,
            shutdown,
        )))
    }
}

/// Who changed what on which circuit, and why: the subject of an audit
/// record.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    actor: &'a str,
    action: &'a str,
    reason: &'a str,
    circuit: &'a str,
}

impl<'a> Change<'a> {
    fn new(actor: &'a str, action: &'a str, reason: &'a str, circuit: &'a str) -> Self {
        Self {
            actor,
            action,
            reason,
            circuit,
        }
    }
}
