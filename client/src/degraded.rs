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

use crate::circuit::{CircuitShared, Word};
use crate::error::Error;
use crate::permit::{Permit, PermitKind};

/// Decide a call locally.
pub(crate) fn decide(s: &Arc<CircuitShared>, w: Word) -> Result<Permit, Error> {
    match w.override_kind() {
        Some(OverrideKind::ForcedOpen) => return Err(s.forced_open(w)),
        Some(OverrideKind::ForcedClosed | OverrideKind::Disabled) => {
            return Ok(Permit::new(
                Arc::clone(s),
                w.generation(),
                0,
                PermitKind::Unchecked,
            ));
        }
        None => {}
    }
    match w.degraded_mode() {
        DegradedMode::FailOpen => Ok(Permit::new(
            Arc::clone(s),
            w.generation(),
            0,
            PermitKind::Unchecked,
        )),
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
                } => Ok(Permit::new(
                    Arc::clone(s),
                    generation,
                    lease.map_or(0, |l| l.id),
                    PermitKind::Local,
                )),
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
mod tests {
    use std::time::Duration;

    use breakerd_proto::v1 as pb;

    use super::*;
    use crate::{Coordinator, Error};

    /// A coordinator address nobody listens on.
    async fn dead_endpoint() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}")
    }

    async fn unreachable() -> Coordinator {
        Coordinator::builder()
            .endpoint(dead_endpoint().await)
            .node_id("unit-1")
            .rpc_timeout(Duration::from_millis(30))
            .build()
            .expect("config")
    }

    fn snapshot(
        name: &str,
        state: pb::CircuitState,
        mode: pb::DegradedMode,
        open_ms: u64,
    ) -> pb::CircuitSnapshot {
        pb::CircuitSnapshot {
            name: name.into(),
            state: state as i32,
            generation: 7,
            open_remaining_ms: open_ms,
            policy_version: 1,
            policy: Some(pb::Policy {
                degraded_mode: Some(mode as i32),
                ..Default::default()
            }),
            r#override: None,
            deleted: false,
        }
    }

    #[tokio::test]
    async fn local_breaker_trips_on_its_own_outcomes() {
        let c = unreachable().await;
        let circuit = c.circuit("db-primary").expect("name");
        let t = Instant::now();
        for _ in 0..5 {
            let p = circuit.acquire().await.expect("local breaker closed");
            assert!(p.is_degraded());
            p.failure();
        }
        match circuit.acquire().await {
            Err(Error::Open {
                state: State::Open, ..
            }) => {}
            other => panic!("expected the local breaker open, got {other:?}"),
        }
        assert!(!c.is_connected());
        assert!(
            c.stats().acquire_rpcs <= 1,
            "one failed RPC, then local decisions"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no call waited on the network twice"
        );
    }

    #[tokio::test]
    async fn fail_closed_and_fail_open_decide_without_asking() {
        let c = unreachable().await;
        let closed = c.circuit("ledger").expect("name");
        let open = c.circuit("ads").expect("name");
        let s = snapshot(
            "ledger",
            pb::CircuitState::Closed,
            pb::DegradedMode::FailClosed,
            0,
        );
        crate::watch::apply_snapshot(&closed.shared, &s, true);
        let s = snapshot(
            "ads",
            pb::CircuitState::Closed,
            pb::DegradedMode::FailOpen,
            0,
        );
        crate::watch::apply_snapshot(&open.shared, &s, true);
        closed.shared.common.mark_down_quiet();

        assert!(matches!(
            closed.acquire().await,
            Err(Error::Unavailable { .. })
        ));
        let p = open.acquire().await.expect("fail open");
        assert!(p.is_degraded());
        p.failure();
        assert_eq!(c.stats().acquire_rpcs, 0);
    }

    #[tokio::test]
    async fn open_circuit_rejects_locally_until_its_deadline() {
        let c = unreachable().await;
        let circuit = c.circuit("payments").expect("name");
        let s = snapshot(
            "payments",
            pb::CircuitState::Open,
            pb::DegradedMode::Local,
            60_000,
        );
        crate::watch::apply_snapshot(&circuit.shared, &s, true);
        match circuit.acquire().await {
            Err(Error::Open {
                state: State::Open,
                reason: RejectReason::Open,
                retry_after,
                ..
            }) => assert!(
                retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60)
            ),
            other => panic!("expected a local rejection, got {other:?}"),
        }
        // Unreachable too: the announced deadline still holds.
        circuit.shared.common.mark_down_quiet();
        assert!(circuit.acquire().await.is_err_and(|e| e.is_open()));
        assert_eq!(c.stats().acquire_rpcs, 0, "decided from the pushed state");
    }
}
