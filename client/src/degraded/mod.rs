//! Decisions while the coordinator is unreachable.
//!
//! The client switches here only on evidence that the coordinator is gone:
//! the Watch stream broke or could not be opened, an RPC's connection
//! failed, or `degrade_after_missed_deadlines` (default 3) RPC deadlines
//! were missed in a row (`shared/evidence.rs`). One slow or timed-out RPC is
//! not evidence: that call alone is decided from the last pushed state
//! (`Circuit::remote`). Once here, every call is decided with no network
//! wait, by the circuit's degraded mode from the last snapshot.
//!
//! **Fail-static first.** Whatever the mode, a node keeps honouring the
//! OPEN or HALF_OPEN state the coordinator last pushed to it, rather than
//! handing the decision to something that lets calls through:
//!
//! * pushed `OPEN`: every call is rejected until the announced deadline;
//! * pushed `HALF_OPEN` (or `OPEN` past its deadline, which the coordinator
//!   has turned half-open by then): only the coordinator grants probes, so
//!   this node makes none until the coordinator answers again (the Watch
//!   stream delivers a fresh snapshot) or one probe lease
//!   (`probe_lease_ms` of the last known policy) has passed since the node
//!   lost the coordinator, or since the open deadline if that came later.
//!   Until then calls are rejected with [`Error::Open`]
//!   (`HALF_OPEN`, `ProbesExhausted`). The lease is how long the
//!   coordinator itself waits for a silent probe holder, so by then a live
//!   coordinator has settled the probes it granted to other nodes.
//!
//! Then the mode decides:
//!
//! * `LOCAL` (default): the very same [`breakerd_policy::Breaker`] the
//!   coordinator runs, built from the last known policy, fed this node's
//!   own outcomes, and started in the state the node was following: closed
//!   if the pushed state was `CLOSED` (or nothing was pushed), half-open
//!   (after the hold-off above) if it was `OPEN` or `HALF_OPEN`, never a
//!   fresh closed breaker in place of an open circuit. It can trip on its
//!   own. It is discarded when the coordinator is back: the fresh snapshot
//!   replaces local state.
//! * `FAIL_OPEN`: every call the fail-static rule does not refuse is
//!   allowed.
//! * `FAIL_CLOSED`: every call is refused with [`Error::Unavailable`].
//!
//! An operator override from the last snapshot still applies first: forced
//! open rejects, forced closed and disabled allow.
//!
//! Outcomes recorded while unreachable feed the local breaker only; they are
//! not replayed to the coordinator later (they would mostly be stale by
//! then, and generations would reject them anyway).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use breakerd_policy::{
    Breaker, Decision, DegradedMode, Outcome, OverrideKind, Persisted, Policy, RejectReason,
    Report, State,
};
use tokio::time::Instant;

use crate::error::Error;
use crate::shared::{CircuitShared, Grant, PermitKind, Word};

fn unchecked(w: Word) -> Grant {
    Grant {
        generation: w.generation(),
        lease: 0,
        kind: PermitKind::Unchecked,
    }
}

/// Decide a call locally; the caller turns the grant into a permit.
pub(crate) fn decide(s: &CircuitShared, w: Word) -> Result<Grant, Error> {
    match w.override_kind() {
        Some(OverrideKind::ForcedOpen) => return Err(s.forced_open(w)),
        Some(OverrideKind::ForcedClosed | OverrideKind::Disabled) => return Ok(unchecked(w)),
        None => {}
    }
    let mode = w.degraded_mode();
    if mode == DegradedMode::FailClosed {
        return Err(Error::Unavailable {
            circuit: Arc::clone(&s.name),
        });
    }
    if let Some(refused) = fail_static(s, w) {
        return Err(refused);
    }
    if mode == DegradedMode::FailOpen {
        return Ok(unchecked(w));
    }
    let now = Instant::now().into_std();
    let node = s.common.node;
    let mut slow = s.slow.lock();
    let policy = slow.policy.clone();
    let seed = s.seed();
    let breaker = slow
        .local
        .get_or_insert_with(|| local_breaker(policy, w, seed, now));
    breaker.advance(now);
    match breaker.acquire(node, now) {
        Decision::Allow {
            generation, lease, ..
        } => Ok(Grant {
            generation,
            lease: lease.map_or(0, |l| l.id),
            kind: PermitKind::Local,
        }),
        Decision::Reject {
            state,
            reason,
            retry_after,
            ..
        } => Err(Error::Open {
            circuit: Arc::clone(&s.name),
            state,
            reason,
            retry_after,
        }),
    }
}

/// A call whose RPC missed its deadline while nothing was pushed for the
/// circuit yet (and the client is not degraded): the degraded mode's rule
/// for this one call, without starting a local breaker.
pub(crate) fn decide_unknown(s: &CircuitShared, w: Word) -> Result<Grant, Error> {
    match w.degraded_mode() {
        DegradedMode::FailClosed => Err(Error::Unavailable {
            circuit: Arc::clone(&s.name),
        }),
        DegradedMode::Local | DegradedMode::FailOpen => Ok(unchecked(w)),
    }
}

/// The fail-static rule (module docs): the refusal the last pushed
/// `OPEN` / `HALF_OPEN` state still makes, if any.
fn fail_static(s: &CircuitShared, w: Word) -> Option<Error> {
    let since = match w.state() {
        Some(State::Open) => {
            let until = s.open_until.load(Ordering::Acquire);
            if let Some(left) = s.remaining(until) {
                return Some(s.open_error(State::Open, RejectReason::Open, left));
            }
            until.max(s.common.down_since())
        }
        Some(State::HalfOpen) => s.common.down_since(),
        Some(State::Closed) | None => return None,
    };
    let lease = s.slow.lock().policy.probe_lease();
    let hold_until = since.saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX));
    s.remaining(hold_until)
        .map(|left| s.open_error(State::HalfOpen, RejectReason::ProbesExhausted, left))
}

/// The local breaker of `LOCAL` mode, in the state the node was following.
fn local_breaker(policy: Policy, w: Word, seed: u64, now: std::time::Instant) -> Breaker {
    match w.state() {
        Some(State::Open | State::HalfOpen) => Breaker::restore(
            policy,
            seed,
            Persisted {
                state: State::HalfOpen,
                generation: w.generation(),
                open_until: None,
                consecutive_trips: 1,
                override_: None,
            },
            now,
        ),
        Some(State::Closed) | None => Breaker::new(policy, w.generation(), seed, now),
    }
}

/// Feed an outcome to the local breaker, if one is running.
pub(crate) fn feed(
    s: &CircuitShared,
    generation: u64,
    lease: Option<u64>,
    outcome: Outcome,
    latency: Duration,
) {
    let now = Instant::now().into_std();
    let mut slow = s.slow.lock();
    if let Some(b) = slow.local.as_mut() {
        b.advance(now);
        let _ = b.record(
            &Report {
                generation,
                lease,
                outcome,
                latency,
                node: s.common.node,
                completed_at: None,
            },
            now,
        );
    }
}

#[cfg(test)]
mod tests;
