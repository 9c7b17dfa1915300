//! Decisions while the coordinator is unreachable.
//!
//! Once the client knows the coordinator is gone (Watch stream down, or an
//! RPC failed or timed out), every call is decided here with no network
//! wait, by the circuit's degraded mode from the last snapshot:
//!
//! * `LOCAL` (default): the last known open deadline is honoured, then the
//!   very same [`breakerd_policy::Breaker`] the coordinator runs decides,
//!   built from the last known policy and fed this node's own outcomes. It
//!   can trip on its own. It is discarded when the coordinator is back: the
//!   fresh snapshot replaces local state.
//! * `FAIL_OPEN`: every call is allowed.
//! * `FAIL_CLOSED`: every call is refused with [`Error::Unavailable`].
//!
//! An operator override from the last snapshot still applies: forced open
//! rejects, forced closed and disabled allow.
//!
//! Outcomes recorded while unreachable feed the local breaker only; they are
//! not replayed to the coordinator later (they would mostly be stale by
//! then, and generations would reject them anyway).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use breakerd_policy::{
    Breaker, Decision, DegradedMode, Outcome, OverrideKind, RejectReason, Report, State,
};
use tokio::time::Instant;

use crate::error::Error;
use crate::shared::{CircuitShared, Grant, PermitKind, Word};

/// Decide a call locally; the caller turns the grant into a permit.
pub(crate) fn decide(s: &CircuitShared, w: Word) -> Result<Grant, Error> {
    let unchecked = Grant {
        generation: w.generation(),
        lease: 0,
        kind: PermitKind::Unchecked,
    };
    match w.override_kind() {
        Some(OverrideKind::ForcedOpen) => return Err(s.forced_open(w)),
        Some(OverrideKind::ForcedClosed | OverrideKind::Disabled) => return Ok(unchecked),
        None => {}
    }
    match w.degraded_mode() {
        DegradedMode::FailOpen => Ok(unchecked),
        DegradedMode::FailClosed => Err(Error::Unavailable {
            circuit: Arc::clone(&s.name),
        }),
        DegradedMode::Local => {
            // The fleet stopped calling this dependency: keep it that way
            // until the deadline the coordinator announced.
            if w.state() == Some(State::Open)
                && let Some(left) = s.remaining(s.open_until.load(Ordering::Acquire))
            {
                return Err(Error::Open {
                    circuit: Arc::clone(&s.name),
                    state: State::Open,
                    reason: RejectReason::Open,
                    retry_after: left,
                });
            }
            let now = Instant::now().into_std();
            let node = s.common.node;
            let mut slow = s.slow.lock();
            let policy = slow.policy.clone();
            let seed = s.seed();
            let breaker = slow
                .local
                .get_or_insert_with(|| Breaker::new(policy, w.generation(), seed, now));
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
