//! The breaker state machine of one circuit.
//!
//! `CLOSED` counts outcomes and trips on the policy's rules; `OPEN` rejects
//! until its deadline; `HALF_OPEN` grants at most `half_open_max_probes`
//! probe leases at a time, closes after `successes_to_close` successful
//! probes and reopens on any failed one. Every transition bumps the
//! generation; outcomes from another generation are stale and move nothing.
//!
//! Nothing here reads a clock: every method takes `now`, and [`Breaker::advance`]
//! applies the deadlines (open timer, probe leases, override expiry) that are
//! due, so callers schedule a timer for [`Breaker::next_deadline`].
//!
//! A coordinator holds one breaker per circuit, most of them closed and
//! healthy, so a breaker keeps inline only what such a circuit uses: the
//! policy is shared, and the rate window, the quorum memory and everything
//! of open, half-open and overridden circuits sit behind boxes that are
//! allocated when first needed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::Policy;
use crate::quorum::BadNodes;
use crate::types::{
    Counters, Decision, Generation, Lease, LeaseId, NodeId, Outcome, Override, OverrideKind,
    Persisted, Recorded, RejectReason, Report, State, Transition, TransitionCause,
};
use crate::window::Window;

/// Transitions kept in a breaker's history.
pub const HISTORY_LEN: usize = 16;

/// Retry hint for a forced-open circuit without an expiry: the override can
/// be cleared at any moment, so callers should look again soon.
const FORCED_OPEN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct HeldLease {
    id: LeaseId,
    expires_at: Instant,
}

/// What a closed circuit that never tripped, was never overridden and never
/// had its policy changed does not need: allocated by the first transition,
/// override, policy change or rejected call, and kept from then on.
#[derive(Debug, Clone)]
struct Cold {
    policy_version: u64,
    /// Trips since the last full recovery (drives the open backoff).
    consecutive_trips: u32,
    /// Deadline of `Open`; `None` while a forced-open override holds it.
    open_until: Option<Instant>,
    override_: Option<Override>,
    // Half-open.
    leases: Vec<HeldLease>,
    next_lease: LeaseId,
    half_open_successes: u32,
    history: VecDeque<Transition>,
    total_rejected: u64,
    total_leases_expired: u64,
}

impl Default for Cold {
    fn default() -> Self {
        Self {
            policy_version: 1,
            consecutive_trips: 0,
            open_until: None,
            override_: None,
            leases: Vec::new(),
            next_lease: 1,
            half_open_successes: 0,
            history: VecDeque::new(),
            total_rejected: 0,
            total_leases_expired: 0,
        }
    }
}

/// The rate rules' window, while one of them is on.
#[derive(Debug, Clone)]
struct Windowed {
    window: Window,
    /// The latest `now` seen since the window exists, for its counters.
    last_seen: Instant,
}

impl Windowed {
    fn for_policy(policy: &Policy, now: Instant, last_seen: Instant) -> Option<Box<Self>> {
        Window::for_policy(policy, now).map(|window| Box::new(Self { window, last_seen }))
    }
}

/// The quorum rule's memory, while the rule is on.
#[derive(Debug, Clone, Default)]
struct Quorum {
    nodes: BadNodes,
    /// Calls counted while closed, as a sequence.
    seq: u64,
    /// Sequence number of the first failure of the current run.
    run_start_seq: u64,
}

impl Quorum {
    fn for_policy(policy: &Policy) -> Option<Box<Self>> {
        (policy.quorum_nodes > 1).then(Box::default)
    }
}

/// One circuit's breaker. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Breaker {
    /// Shared: every circuit on the same configured policy points at one.
    policy: Arc<Policy>,
    seed: u64,
    generation: Generation,
    // The totals outcomes move (rejections and expired leases are in `Cold`).
    total_allowed: u64,
    total_successes: u64,
    total_failures: u64,
    // Inline too, though rarer: stale outcomes follow every coordinator
    // restart and dropped permits report `Ignored`, and neither should cost
    // a healthy circuit its `Cold` box.
    total_ignored: u64,
    total_stale: u64,
    /// Completion instant of the earliest failure of the current run (only
    /// meaningful while `consecutive_failures > 0`): a success that
    /// completed before it was overtaken by the run and does not end it.
    run_started_at: Instant,
    /// Completion instant of the latest success counted while closed: a
    /// failure that completed before it came before that success, so it is
    /// not part of the current run (it still counts in totals and windows).
    last_success_at: Option<Instant>,
    // Closed-state counting (soft state).
    consecutive_failures: u32,
    state: State,
    window: Option<Box<Windowed>>,
    quorum: Option<Box<Quorum>>,
    cold: Option<Box<Cold>>,
}

impl Breaker {
    /// A closed breaker at `generation`. `seed` makes this circuit's open
    /// jitter differ from other circuits' (use a hash of its name). Pass an
    /// `Arc<Policy>` to share one policy between many breakers.
    pub fn new(
        policy: impl Into<Arc<Policy>>,
        generation: Generation,
        seed: u64,
        now: Instant,
    ) -> Self {
        let policy = policy.into();
        Self {
            window: Windowed::for_policy(&policy, now, now),
            quorum: Quorum::for_policy(&policy),
            policy,
            seed,
            generation,
            total_allowed: 0,
            total_successes: 0,
            total_failures: 0,
            total_ignored: 0,
            total_stale: 0,
            run_started_at: now,
            last_success_at: None,
            consecutive_failures: 0,
            state: State::Closed,
            cold: None,
        }
    }

    /// A breaker restored from what [`persisted`](Self::persisted) saved
    /// (after a restart): same state, generation, override and backoff
    /// memory; soft counters start afresh and no probe is in flight. An
    /// open circuit without a deadline and without the forced-open override
    /// that would explain it is restored half-open, so it probes first.
    /// Deadlines beyond what this policy could have set are capped first
    /// ([`Persisted::cap_deadlines`]): a wall clock that ran ahead cannot
    /// keep a circuit open, or an override in force, for years.
    pub fn restore(
        policy: impl Into<Arc<Policy>>,
        seed: u64,
        mut saved: Persisted,
        now: Instant,
    ) -> Self {
        let policy = policy.into();
        saved.cap_deadlines(&policy, now);
        let mut b = Self::new(policy, saved.generation, seed, now);
        if saved.consecutive_trips > 0 {
            b.cold_mut().consecutive_trips = saved.consecutive_trips;
        }
        if let Some(ov) = saved.override_ {
            b.cold_mut().override_ = Some(ov);
        }
        b.state = saved.state;
        if saved.state == State::Open {
            b.cold_mut().open_until = saved.open_until;
            if b.held_open() && !b.forced_open() {
                b.state = State::HalfOpen;
            }
        }
        b.advance(now);
        b
    }

    /// The parts of this breaker that must survive a restart.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            state: self.state,
            generation: self.generation,
            open_until: self.open_deadline(),
            consecutive_trips: self.consecutive_trips(),
            override_: self.override_().cloned(),
        }
    }

    fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    fn open_until(&self) -> Option<Instant> {
        self.cold.as_ref().and_then(|c| c.open_until)
    }

    fn leases(&self) -> &[HeldLease] {
        self.cold.as_ref().map_or(&[], |c| &c.leases)
    }

    fn override_kind(&self) -> Option<OverrideKind> {
        self.override_().map(|o| o.kind)
    }

    /// Asks to make a call at `now`.
    pub fn acquire(&mut self, node: NodeId, now: Instant) -> Decision {
        let _ = node; // Leases are fleet-wide; the node matters only to reports.
        self.advance(now);
        let decision = match self.override_().map(|o| (o.kind, o.expires_at)) {
            Some((OverrideKind::ForcedOpen, expires_at)) => Decision::Reject {
                generation: self.generation,
                state: self.state,
                reason: RejectReason::ForcedOpen,
                retry_after: expires_at
                    .map_or(FORCED_OPEN_RETRY, |t| t.saturating_duration_since(now)),
            },
            Some((OverrideKind::ForcedClosed, _)) => self.allow(None),
            Some((OverrideKind::Disabled, _)) => match self.decide(now) {
                // Shadow mode: the breaker runs, but never stops a call.
                Decision::Reject { .. } => self.allow(None),
                allowed => allowed,
            },
            None => self.decide(now),
        };
        if decision.is_allowed() {
            self.total_allowed += 1;
        } else {
            self.cold_mut().total_rejected += 1;
        }
        decision
    }

    fn allow(&self, lease: Option<Lease>) -> Decision {
        Decision::Allow {
            generation: self.generation,
            state: self.state,
            lease,
        }
    }

    fn decide(&mut self, now: Instant) -> Decision {
        match self.state {
            State::Closed => self.allow(None),
            State::Open => Decision::Reject {
                generation: self.generation,
                state: State::Open,
                reason: RejectReason::Open,
                retry_after: self.open_remaining(now),
            },
            State::HalfOpen => {
                let max_probes = self.policy.half_open_max_probes as usize;
                let ttl = self.policy.probe_lease;
                let cold = self.cold_mut();
                if cold.leases.len() < max_probes {
                    let id = cold.next_lease;
                    cold.next_lease += 1;
                    cold.leases.push(HeldLease {
                        id,
                        expires_at: now + ttl,
                    });
                    self.allow(Some(Lease { id, ttl }))
                } else {
                    let first_free = cold.leases.iter().map(|l| l.expires_at).min();
                    Decision::Reject {
                        generation: self.generation,
                        state: State::HalfOpen,
                        reason: RejectReason::ProbesExhausted,
                        retry_after: first_free
                            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
                    }
                }
            }
        }
    }

    /// Records how a call went. Outcomes from another generation, and
    /// half-open outcomes without a lease this breaker still holds, are
    /// stale: they are counted as such and change nothing else.
    ///
    /// Only the consecutive-failure rule looks at
    /// [`Report::completed_at`]: a success that completed before the
    /// current run's first failure does not end the run. Rate windows, the
    /// slow-call rule, the quorum and half-open probes count outcomes when
    /// they arrive: a batch delay of milliseconds is noise against windows
    /// of seconds, the slow-call rule reads latency only, and a probe is
    /// matched by its lease.
    pub fn record(&mut self, report: &Report, now: Instant) -> Recorded {
        self.advance(now);
        if report.generation != self.generation {
            self.total_stale += 1;
            return Recorded::Stale;
        }
        match self.state {
            State::Closed => self.record_closed(report, now),
            State::HalfOpen => {
                let held = report
                    .lease
                    .and_then(|id| self.leases().iter().position(|l| l.id == id));
                let Some(index) = held else {
                    self.total_stale += 1;
                    return Recorded::Stale;
                };
                self.cold_mut().leases.swap_remove(index);
                self.count_total(report.outcome);
                match report.outcome {
                    Outcome::Success => {
                        let successes = {
                            let cold = self.cold_mut();
                            cold.half_open_successes += 1;
                            cold.half_open_successes
                        };
                        if successes >= self.policy.successes_to_close {
                            self.cold_mut().consecutive_trips = 0;
                            self.transition(State::Closed, TransitionCause::ProbesSucceeded, now);
                        }
                    }
                    Outcome::Failure => self.trip(TransitionCause::ProbeFailed, now),
                    Outcome::Ignored => {}
                }
            }
            // Only shadow mode lets calls through while open: count, never
            // move. Anything else under an open generation was never allowed.
            State::Open if self.shadow() => self.count_total(report.outcome),
            State::Open => {
                self.total_stale += 1;
                return Recorded::Stale;
            }
        }
        Recorded::Applied
    }

    fn count_total(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.total_successes += 1,
            Outcome::Failure => self.total_failures += 1,
            Outcome::Ignored => self.total_ignored += 1,
        }
    }

    fn record_closed(&mut self, report: &Report, now: Instant) {
        self.count_total(report.outcome);
        let failure = match report.outcome {
            Outcome::Ignored => return,
            Outcome::Success => false,
            Outcome::Failure => true,
        };
        let slow = report.latency >= self.policy.slow_call_duration;
        let seq = self.quorum.as_mut().map_or(0, |q| {
            q.seq += 1;
            q.seq - 1
        });
        // "Consecutive" is in completion order, not arrival order: nodes
        // batch successes but send failures at once, so a success from
        // before a run began can land after some of its failures.
        let completed = report.completed_at.map(|t| t.min(now));
        let at = completed.unwrap_or(now);
        if failure {
            // Before the latest counted success: not in the current run.
            if self.last_success_at.is_none_or(|s| at >= s) {
                if self.consecutive_failures == 0 {
                    if let Some(q) = &mut self.quorum {
                        q.run_start_seq = seq;
                    }
                    self.run_started_at = at;
                } else if at < self.run_started_at {
                    // Never before the latest success: checked above.
                    self.run_started_at = at;
                }
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
        } else {
            if self.consecutive_failures == 0 || at >= self.run_started_at {
                // A success inside the run ends it. The run's failures that
                // completed after it are not recounted (that would need
                // every failure's completion time): a late success can only
                // delay a trip, as it did when arrival order counted.
                self.consecutive_failures = 0;
            }
            // Overtaken or not, it orders the failures still to come.
            if self.last_success_at.is_none_or(|s| at > s) {
                self.last_success_at = Some(at);
            }
        }
        if let Some(w) = &mut self.window {
            w.window.push(now, failure, slow);
        }
        let bad = failure || (slow && self.policy.slow_call_rate_threshold > 0.0);
        if let (true, Some(q)) = (bad, &mut self.quorum) {
            q.nodes.note(report.node, seq, now);
        }
        if self.override_kind() == Some(OverrideKind::ForcedClosed) {
            return;
        }
        if let Some(cause) = self.trip_cause(now) {
            self.trip(cause, now);
        }
    }

    /// The rule that trips the circuit now, if any.
    fn trip_cause(&self, now: Instant) -> Option<TransitionCause> {
        let p = &self.policy;
        // Call sequence numbers exist only while the quorum rule is on;
        // without it `quorum_since` ignores them.
        let (seq, run_start_seq) = self
            .quorum
            .as_ref()
            .map_or((0, 0), |q| (q.seq, q.run_start_seq));
        let quorum_since = |min_seq: u64, min_at: Option<Instant>| {
            self.quorum
                .as_ref()
                .is_none_or(|q| q.nodes.count_since(min_seq, min_at) >= p.quorum_nodes)
        };
        if p.consecutive_failures > 0
            && self.consecutive_failures >= p.consecutive_failures
            && quorum_since(run_start_seq, None)
        {
            return Some(TransitionCause::ConsecutiveFailures);
        }
        let window = &self.window.as_ref()?.window;
        let t = window.totals(now);
        if t.calls == 0 || t.calls < u64::from(p.minimum_calls) {
            return None;
        }
        let window_quorum = || match window {
            Window::Count(_) => quorum_since(seq.saturating_sub(p.window_size), None),
            Window::Time(_) => {
                quorum_since(0, now.checked_sub(Duration::from_millis(p.window_size)))
            }
        };
        let rate = |n: u64| n as f64 / t.calls as f64;
        if p.failure_rate_threshold > 0.0
            && rate(t.failures) >= p.failure_rate_threshold
            && window_quorum()
        {
            return Some(TransitionCause::FailureRate);
        }
        if p.slow_call_rate_threshold > 0.0
            && rate(t.slow) >= p.slow_call_rate_threshold
            && window_quorum()
        {
            return Some(TransitionCause::SlowCallRate);
        }
        None
    }

    /// Opens the circuit for the backed-off, jittered open duration.
    fn trip(&mut self, cause: TransitionCause, now: Instant) {
        let trips = {
            let cold = self.cold_mut();
            cold.consecutive_trips = cold.consecutive_trips.saturating_add(1);
            cold.consecutive_trips
        };
        let base = self.policy.open_duration_before_jitter(trips);
        let unit = unit_sample(self.seed, self.generation.wrapping_add(1));
        self.cold_mut().open_until = Some(now + self.policy.jittered(base, unit));
        self.transition(State::Open, cause, now);
    }

    /// Moves to `to` (possibly the same state) under a new generation. All
    /// soft counting restarts and probe leases are dropped: outcomes of the
    /// old generation are stale from now on.
    fn transition(&mut self, to: State, cause: TransitionCause, now: Instant) {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.consecutive_failures = 0;
        self.last_success_at = None;
        // The policy is unchanged, so a window stays a window: refill it
        // in its box.
        if let Some(w) = &mut self.window
            && let Some(fresh) = Window::for_policy(&self.policy, now)
        {
            w.window = fresh;
        }
        if let Some(q) = &mut self.quorum {
            q.nodes.clear();
            q.seq = 0;
            q.run_start_seq = 0;
        }
        let generation = self.generation;
        let cold = self.cold_mut();
        if to != State::Open {
            cold.open_until = None;
        }
        cold.leases.clear();
        cold.half_open_successes = 0;
        if cold.history.len() == HISTORY_LEN {
            cold.history.pop_back();
        }
        cold.history.push_front(Transition {
            from,
            to,
            generation,
            at: now,
            cause,
        });
    }

    /// Applies every deadline due at `now`: an expired override lapses, an
    /// elapsed open timer moves to half-open, expired probe leases are taken
    /// back. Idempotent; every other method calls it first.
    pub fn advance(&mut self, now: Instant) {
        if let Some(w) = &mut self.window
            && now > w.last_seen
        {
            w.last_seen = now;
        }
        let Some(cold) = self.cold.as_deref() else {
            // No override, no deadline, no lease: nothing can be due.
            return;
        };
        if cold
            .override_
            .as_ref()
            .and_then(|o| o.expires_at)
            .is_some_and(|t| t <= now)
        {
            self.lift_override(TransitionCause::OverrideExpired, now);
        }
        if self.state == State::Open && self.open_until().is_some_and(|t| t <= now) {
            self.transition(State::HalfOpen, TransitionCause::OpenElapsed, now);
        }
        if self.state == State::HalfOpen {
            let cold = self.cold_mut();
            let before = cold.leases.len();
            cold.leases.retain(|l| l.expires_at > now);
            cold.total_leases_expired += (before - cold.leases.len()) as u64;
        }
    }

    /// The earliest instant at which [`advance`](Self::advance) has work to
    /// do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let cold = self.cold.as_ref()?;
        let open = if self.state == State::Open {
            cold.open_until
        } else {
            None
        };
        let lease = cold.leases.iter().map(|l| l.expires_at).min();
        let over = cold.override_.as_ref().and_then(|o| o.expires_at);
        [open, lease, over].into_iter().flatten().min()
    }

    /// Replaces the policy. Counting restarts if the window's shape changed;
    /// the state and generation stay.
    pub fn set_policy(&mut self, policy: impl Into<Arc<Policy>>, now: Instant) {
        let policy = policy.into();
        self.advance(now);
        let same_window = policy.window_kind == self.policy.window_kind
            && policy.window_size == self.policy.window_size
            && policy.window_buckets == self.policy.window_buckets
            && policy.uses_window() == self.policy.uses_window();
        if !same_window {
            let last_seen = self.window.as_ref().map_or(now, |w| w.last_seen);
            self.window = Windowed::for_policy(&policy, now, last_seen);
        }
        if (policy.quorum_nodes > 1) != self.quorum.is_some() {
            self.quorum = Quorum::for_policy(&policy);
        }
        self.policy = policy;
        self.cold_mut().policy_version += 1;
    }

    /// Raises the policy version to at least `version`: a restored breaker
    /// continues from its saved version, so versions never go back across
    /// a restart.
    pub fn raise_policy_version(&mut self, version: u64) {
        if version > self.policy_version() {
            self.cold_mut().policy_version = version;
        }
    }

    /// Sets an operator override (replacing any other) under a new
    /// generation. Forced open holds the circuit open with no deadline;
    /// forced closed closes it with fresh counters; disabled lets the
    /// breaker run in shadow mode from where it is.
    pub fn set_override(&mut self, ov: Override, now: Instant) {
        self.advance(now);
        let kind = ov.kind;
        self.cold_mut().override_ = Some(ov);
        let to = match kind {
            OverrideKind::ForcedOpen => State::Open,
            OverrideKind::ForcedClosed => State::Closed,
            // A circuit held open by a former forced-open has no deadline
            // to wait for: probe first.
            OverrideKind::Disabled if self.held_open() => State::HalfOpen,
            OverrideKind::Disabled => self.state,
        };
        if kind == OverrideKind::ForcedOpen {
            self.cold_mut().open_until = None;
        }
        self.transition(to, TransitionCause::OverrideSet, now);
    }

    /// Removes the operator override, if any, under a new generation. A
    /// circuit leaving forced-open goes to half-open, so the fleet probes
    /// the dependency before it resumes. Returns whether there was one.
    pub fn clear_override(&mut self, now: Instant) -> bool {
        self.advance(now);
        if self.override_().is_none() {
            return false;
        }
        self.lift_override(TransitionCause::OverrideCleared, now);
        true
    }

    fn lift_override(&mut self, cause: TransitionCause, now: Instant) {
        let was_forced_open = self.forced_open();
        self.cold_mut().override_ = None;
        let to = if was_forced_open || self.held_open() {
            State::HalfOpen
        } else {
            self.state
        };
        self.transition(to, cause, now);
    }

    /// Open with no deadline: only a forced-open override does that.
    fn held_open(&self) -> bool {
        self.state == State::Open && self.open_until().is_none()
    }

    fn shadow(&self) -> bool {
        self.override_kind() == Some(OverrideKind::Disabled)
    }

    fn forced_open(&self) -> bool {
        self.override_kind() == Some(OverrideKind::ForcedOpen)
    }

    /// Back to closed with fresh counters and no backoff memory, under a new
    /// generation. A forced-open override stays in force and keeps the
    /// circuit open.
    pub fn reset(&mut self, now: Instant) {
        self.advance(now);
        self.cold_mut().consecutive_trips = 0;
        let forced_open = self.forced_open();
        let to = if forced_open {
            State::Open
        } else {
            State::Closed
        };
        if forced_open {
            self.cold_mut().open_until = None;
        }
        self.transition(to, TransitionCause::Reset, now);
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Current generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy in force, shared.
    pub fn shared_policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Grows by one on every policy change.
    pub fn policy_version(&self) -> u64 {
        self.cold.as_ref().map_or(1, |c| c.policy_version)
    }

    /// The operator override in force, if any.
    pub fn override_(&self) -> Option<&Override> {
        self.cold.as_ref().and_then(|c| c.override_.as_ref())
    }

    /// The open deadline, while open with one.
    pub fn open_deadline(&self) -> Option<Instant> {
        if self.state == State::Open {
            self.open_until()
        } else {
            None
        }
    }

    /// Time until the open deadline; zero unless open with a deadline.
    pub fn open_remaining(&self, now: Instant) -> Duration {
        self.open_deadline()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Trips since the last full recovery.
    pub fn consecutive_trips(&self) -> u32 {
        self.cold.as_ref().map_or(0, |c| c.consecutive_trips)
    }

    /// Counters, with window totals as of the latest `now` seen.
    pub fn counters(&self) -> Counters {
        let t = self
            .window
            .as_ref()
            .map(|w| w.window.totals(w.last_seen))
            .unwrap_or_default();
        let cold = self.cold.as_deref();
        let rare = |f: fn(&Cold) -> u64| cold.map_or(0, f);
        Counters {
            consecutive_failures: self.consecutive_failures,
            window_calls: t.calls,
            window_failures: t.failures,
            window_slow_calls: t.slow,
            probes_in_flight: self.leases().len() as u32,
            half_open_successes: cold.map_or(0, |c| c.half_open_successes),
            consecutive_trips: self.consecutive_trips(),
            total_allowed: self.total_allowed,
            total_rejected: rare(|c| c.total_rejected),
            total_successes: self.total_successes,
            total_failures: self.total_failures,
            total_ignored: self.total_ignored,
            total_stale: self.total_stale,
            total_leases_expired: rare(|c| c.total_leases_expired),
        }
    }

    /// Probe leases taken back so far (`counters().total_leases_expired`,
    /// without computing the other counters).
    pub fn leases_expired(&self) -> u64 {
        self.cold.as_ref().map_or(0, |c| c.total_leases_expired)
    }

    /// Recent transitions, newest first, at most [`HISTORY_LEN`].
    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.cold.iter().flat_map(|c| c.history.iter())
    }

    /// Whether nothing would be lost by forgetting this breaker: closed, no
    /// override, no probe in flight.
    pub fn is_evictable(&self) -> bool {
        self.state == State::Closed && self.override_().is_none() && self.leases().is_empty()
    }
}

/// A deterministic sample in `[0, 1)` from a circuit's seed and generation
/// (splitmix64), so jitter differs between circuits and between trips
/// without the breaker owning a random number generator.
fn unit_sample(seed: u64, generation: Generation) -> f64 {
    let mut z = seed ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
