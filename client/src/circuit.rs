//! A named circuit as this node sees it: a cell holding the latest state the
//! coordinator pushed, and the decision logic that reads it.
//!
//! The hot path ([`Circuit::acquire`] on a `CLOSED` circuit) is one atomic
//! load of a packed word (state, override, degraded mode and generation are
//! stored together, so they are always read consistently), one load of the
//! connectivity flag and a clock read for the latency: no lock, no
//! allocation, no network. Writers (the watch task and RPC responses)
//! serialise on a small per-circuit mutex that readers never take.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use breakerd_policy::{
    Breaker, DegradedMode, NodeId, Outcome, OverrideKind, Policy, RejectReason, State,
};
use breakerd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::coordinator::{Common, Link};
use crate::error::{CallError, Error};
use crate::permit::{Permit, PermitKind};
use crate::trace;
use crate::{TaskGuard, degraded};

/// Check a circuit name with the coordinator's rule (the same code:
/// `breakerd_policy::name_problem`): 1-200 bytes of `[A-Za-z0-9._:/-]`.
/// Names are never rewritten.
pub fn validate_name(name: &str) -> Result<(), Error> {
    match breakerd_policy::name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidName {
            name: name.to_owned(),
            problem,
        }),
    }
}

// ---- the packed word ------------------------------------------------------

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

/// What this node currently knows about a circuit (see
/// [`Circuit::view`] and [`Circuit::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitView {
    /// Last known breaker state; `None` until the coordinator has told.
    pub state: Option<State>,
    /// Generation of that state.
    pub generation: u64,
    /// Operator override in force, if any.
    pub override_kind: Option<OverrideKind>,
    /// What the client does for this circuit while the coordinator is
    /// unreachable.
    pub degraded_mode: DegradedMode,
    /// While open: when the coordinator will move it to half-open, on this
    /// node's clock.
    pub open_until: Option<Instant>,
    /// Version of the circuit's policy.
    pub policy_version: u64,
}

impl CircuitView {
    fn unknown() -> Self {
        Self {
            state: None,
            generation: 0,
            override_kind: None,
            degraded_mode: DegradedMode::Local,
            open_until: None,
            policy_version: 0,
        }
    }

    /// True when calls are rejected without asking: open, or forced open.
    pub fn is_rejecting(&self) -> bool {
        self.override_kind == Some(OverrideKind::ForcedOpen)
            || (self.override_kind.is_none() && self.state == Some(State::Open))
    }
}

/// The part of a circuit only writers touch.
pub(crate) struct Slow {
    /// Last policy the coordinator sent (defaults until then).
    pub(crate) policy: Policy,
    pub(crate) policy_version: u64,
    /// The local breaker of `LOCAL` degraded mode; exists only while the
    /// coordinator is unreachable and is dropped on the next snapshot.
    pub(crate) local: Option<Breaker>,
}

/// Shared by every handle and permit of one circuit.
pub(crate) struct CircuitShared {
    pub(crate) name: Arc<str>,
    /// Index in the coordinator's registry (reports carry it, not the name).
    pub(crate) idx: u32,
    pub(crate) word: AtomicU64,
    /// Open deadline, in nanoseconds since `Common::epoch` (0: none).
    pub(crate) open_until: AtomicU64,
    /// Override expiry, in nanoseconds since `Common::epoch` (0: none).
    pub(crate) override_until: AtomicU64,
    pub(crate) slow: Mutex<Slow>,
    pub(crate) view: watch::Sender<CircuitView>,
    pub(crate) common: Arc<Common>,
}

impl CircuitShared {
    pub(crate) fn new(name: Arc<str>, idx: u32, common: Arc<Common>) -> Self {
        Self {
            name,
            idx,
            word: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            override_until: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                policy: Policy::default(),
                policy_version: 0,
                local: None,
            }),
            view: watch::Sender::new(CircuitView::unknown()),
            common,
        }
    }

    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// Time left until `deadline` (nanoseconds since the epoch), if any.
    pub(crate) fn remaining(&self, deadline: u64) -> Option<Duration> {
        let now = self.common.now_nanos();
        (deadline > now).then(|| Duration::from_nanos(deadline - now))
    }

    /// The seed of the local breaker's jitter: stable per circuit name.
    pub(crate) fn seed(&self) -> u64 {
        NodeId::from_name(&self.name).0
    }

    /// Publish a new word (and deadlines) under the writer lock, and tell
    /// subscribers.
    pub(crate) fn publish(&self, slow: &Slow, word: Word, open_until: u64, override_until: u64) {
        self.open_until.store(open_until, Ordering::Release);
        self.override_until.store(override_until, Ordering::Release);
        self.word.store(word.0, Ordering::Release);
        let view = CircuitView {
            state: word.state(),
            generation: word.generation(),
            override_kind: word.override_kind(),
            degraded_mode: word.degraded_mode(),
            open_until: (open_until != 0).then(|| self.common.instant_at(open_until)),
            policy_version: slow.policy_version,
        };
        self.view.send_if_modified(|v| {
            if *v == view {
                false
            } else {
                *v = view;
                true
            }
        });
    }

    /// Fold a unary Acquire answer into the cell: it seeds an unknown cell
    /// and moves a known one forward, never back.
    fn absorb(&self, r: &pb::AcquireResponse) {
        let Some(state) = state_from_proto(r.state) else {
            return;
        };
        let slow = self.slow.lock();
        let cur = self.load();
        if cur.state().is_some() && r.generation <= cur.generation() {
            return;
        }
        let open_until = if state == State::Open && r.retry_after_ms > 0 {
            self.common
                .nanos_after(Duration::from_millis(r.retry_after_ms))
        } else {
            0
        };
        let word = Word::new(
            Some(state),
            r.generation,
            cur.override_kind(),
            cur.degraded_mode(),
        );
        let ov_until = self.override_until.load(Ordering::Acquire);
        self.publish(&slow, word, open_until, ov_until);
    }

    fn open_error(&self, state: State, reason: RejectReason, retry_after: Duration) -> Error {
        Error::Open {
            circuit: Arc::clone(&self.name),
            state,
            reason,
            retry_after,
        }
    }

    /// The rejection for a circuit an operator forced open.
    pub(crate) fn forced_open(&self, w: Word) -> Error {
        let retry_after = self
            .remaining(self.override_until.load(Ordering::Acquire))
            .unwrap_or(FORCED_OPEN_RETRY);
        self.open_error(
            w.state().unwrap_or(State::Open),
            RejectReason::ForcedOpen,
            retry_after,
        )
    }
}

/// `retry_after` of a forced-open circuit whose override never lapses: the
/// next check is worthwhile once a watch push could have cleared it.
const FORCED_OPEN_RETRY: Duration = Duration::from_secs(1);

pub(crate) fn state_from_proto(s: i32) -> Option<State> {
    match pb::CircuitState::try_from(s) {
        Ok(pb::CircuitState::Closed) => Some(State::Closed),
        Ok(pb::CircuitState::Open) => Some(State::Open),
        Ok(pb::CircuitState::HalfOpen) => Some(State::HalfOpen),
        _ => None,
    }
}

fn reason_from_proto(r: i32) -> RejectReason {
    match pb::RejectReason::try_from(r) {
        Ok(pb::RejectReason::ProbesExhausted) => RejectReason::ProbesExhausted,
        Ok(pb::RejectReason::ForcedOpen) => RejectReason::ForcedOpen,
        _ => RejectReason::Open,
    }
}

/// Status codes that mean "the coordinator could not answer", which switch
/// the client to its degraded mode rather than surfacing as errors.
fn is_unreachable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Aborted
    )
}

/// A handle on one named circuit of a [`Coordinator`](crate::Coordinator).
/// Cheap to clone; keep it rather than looking the name up per call.
#[derive(Clone)]
pub struct Circuit {
    pub(crate) shared: Arc<CircuitShared>,
    /// Keeps the coordinator's background tasks alive while a handle exists.
    pub(crate) _tasks: Arc<TaskGuard>,
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit")
            .field("name", &self.shared.name)
            .field("view", &*self.shared.view.borrow())
            .finish()
    }
}

impl Circuit {
    /// The circuit's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Ask whether a call may go ahead.
    ///
    /// * `CLOSED` (the common case): answered from pushed state, no network.
    /// * `OPEN`: rejected locally with [`Error::Open`] until the open
    ///   deadline; after it, one Acquire RPC asks for a probe.
    /// * `HALF_OPEN`, or first use before any state arrived: one Acquire RPC,
    ///   bounded by the configured RPC timeout.
    /// * Coordinator known unreachable: the circuit's degraded mode decides
    ///   at once (`LOCAL` breaker, `FAIL_OPEN`, or `FAIL_CLOSED` →
    ///   [`Error::Unavailable`]).
    ///
    /// The returned [`Permit`] must be given the call's outcome.
    pub async fn acquire(&self) -> Result<Permit, Error> {
        self.acquire_inner(None).await
    }

    /// [`acquire`](Self::acquire), sending `trace_id` as `x-trace-id` (and
    /// as `traceparent` when it is one) if the coordinator is asked.
    pub async fn acquire_traced(&self, trace_id: &str) -> Result<Permit, Error> {
        self.acquire_inner(Some(trace_id)).await
    }

    async fn acquire_inner(&self, trace_id: Option<&str>) -> Result<Permit, Error> {
        let s = &self.shared;
        let w = s.load();
        if s.common.link() == Link::Down {
            return degraded::decide(s, w);
        }
        match w.override_kind() {
            Some(OverrideKind::ForcedOpen) => return Err(s.forced_open(w)),
            Some(OverrideKind::ForcedClosed | OverrideKind::Disabled) => {
                return Ok(Permit::new(
                    Arc::clone(s),
                    w.generation(),
                    0,
                    PermitKind::Coordinated,
                ));
            }
            None => {}
        }
        match w.state() {
            Some(State::Closed) => Ok(Permit::new(
                Arc::clone(s),
                w.generation(),
                0,
                PermitKind::Coordinated,
            )),
            Some(State::Open) => match s.remaining(s.open_until.load(Ordering::Acquire)) {
                Some(left) => Err(s.open_error(State::Open, RejectReason::Open, left)),
                None => Box::pin(self.remote(trace_id)).await,
            },
            // Boxed so that the future of `acquire` stays small for the
            // common case: the RPC's state machine is large, and the
            // allocation is nothing next to the round trip.
            Some(State::HalfOpen) | None => Box::pin(self.remote(trace_id)).await,
        }
    }

    /// One Acquire RPC, bounded by the RPC timeout. A transport failure or
    /// timeout marks the coordinator unreachable and falls back to the
    /// degraded decision with no further wait.
    async fn remote(&self, trace_id: Option<&str>) -> Result<Permit, Error> {
        let s = &self.shared;
        let c = &s.common;
        c.stats.acquire_rpcs.fetch_add(1, Ordering::Relaxed);
        let mut req = tonic::Request::new(pb::AcquireRequest {
            circuit: s.name.to_string(),
            node_id: c.node_name.clone(),
        });
        req.set_timeout(c.config.rpc_timeout);
        trace::inject(req.metadata_mut(), trace_id);
        let mut client = c.client.clone();
        match tokio::time::timeout(c.config.rpc_timeout, client.acquire(req)).await {
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                s.absorb(&r);
                if r.allowed {
                    let lease = r.lease_id;
                    Ok(Permit::new(
                        Arc::clone(s),
                        r.generation,
                        lease,
                        PermitKind::Coordinated,
                    ))
                } else {
                    let state = state_from_proto(r.state).unwrap_or(State::Open);
                    Err(s.open_error(
                        state,
                        reason_from_proto(r.reject_reason),
                        Duration::from_millis(r.retry_after_ms),
                    ))
                }
            }
            Ok(Err(status)) if !is_unreachable(status.code()) => Err(Error::Refused {
                circuit: Arc::clone(&s.name),
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Ok(Err(status)) => {
                tracing::debug!(circuit = %s.name, code = ?status.code(), "acquire failed; deciding locally");
                c.mark_down();
                degraded::decide(s, s.load())
            }
            Err(_) => {
                tracing::debug!(circuit = %s.name, "acquire timed out; deciding locally");
                c.mark_down();
                degraded::decide(s, s.load())
            }
        }
    }

    /// Run a protected call: acquire, run `f()` under `timeout`, report
    /// `Ok` as success and `Err` or a timeout as failure.
    pub async fn call<T, E, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(
            timeout,
            |r: &Result<T, E>| {
                if r.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }
            },
            f,
        )
        .await
    }

    /// [`call`](Self::call) with a custom classification of the result (for
    /// example: a "not found" error says nothing about the dependency's
    /// health and is [`Outcome::Ignored`]). A timeout is always a failure.
    pub async fn call_with<T, E, F, Fut, C>(
        &self,
        timeout: Duration,
        classify: C,
        f: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        let permit = self.acquire().await.map_err(CallError::Rejected)?;
        match tokio::time::timeout(timeout, f()).await {
            Ok(r) => {
                permit.record_outcome(classify(&r));
                r.map_err(CallError::Inner)
            }
            Err(_) => {
                permit.failure();
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// What this node currently knows about the circuit.
    pub fn view(&self) -> CircuitView {
        self.shared.view.borrow().clone()
    }

    /// A receiver that sees every change of [`view`](Self::view) (for
    /// dashboards, health checks, and tests that wait for a state).
    pub fn subscribe(&self) -> watch::Receiver<CircuitView> {
        self.shared.view.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acquire_future_stays_small() {
        fn size_of_future<F: Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let coordinator = crate::Coordinator::builder()
            .endpoint("http://127.0.0.1:9")
            .build()
            .expect("config");
        let circuit = coordinator.circuit("size").expect("name");
        let size = size_of_future(&circuit.acquire());
        assert!(size <= 256, "acquire() future is {size} bytes");
    }

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

    #[test]
    fn names_follow_the_coordinator_rule() {
        assert!(validate_name("payments").is_ok());
        assert!(validate_name("recs:v2/eu-west.1_a").is_ok());
        assert!(validate_name(&"a".repeat(200)).is_ok());
        assert!(matches!(validate_name(""), Err(Error::InvalidName { .. })));
        assert!(validate_name(&"a".repeat(201)).is_err());
        assert!(validate_name("pay ments").is_err());
        assert!(validate_name("zahlungsverkehr-ü").is_err());
    }
}
