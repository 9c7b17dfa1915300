//! The handle on a named circuit, and the decision logic that reads its
//! cell (the latest state the coordinator pushed, in `shared/cell.rs`).
//!
//! The hot path ([`Circuit::acquire`] on a `CLOSED` circuit) is one atomic
//! load of a packed word (state, override, degraded mode and generation are
//! stored together, so they are always read consistently), one load of the
//! connectivity flag and a clock read for the latency: no lock, no
//! allocation, no network. Writers (the watch task and RPC responses)
//! serialise on a small per-circuit mutex that readers never take.
//!
//! The size of the `acquire()` future is pinned by a test in
//! `coordinator.rs` (it needs a coordinator to make a circuit).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use breakerd_policy::{Outcome, OverrideKind, RejectReason, State};
use breakerd_proto::v1 as pb;
use tokio::sync::watch;

use crate::degraded;
use crate::error::{CallError, Error};
use crate::permit::Permit;
use crate::shared::{
    CircuitShared, CircuitView, Link, PermitKind, TaskGuard, Word, is_missed_deadline,
    reason_from_proto, refusal_code, state_from_proto,
};
use crate::trace;

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

/// The degraded-mode decision (coordinator unreachable), as a permit.
fn decide_locally(s: &Arc<CircuitShared>, w: Word) -> Result<Permit, Error> {
    degraded::decide(s, w).map(|g| Permit::granted(Arc::clone(s), g))
}

/// The decision the last pushed state makes on its own, with no RPC:
/// `None` when only the coordinator can decide (half-open, open past its
/// deadline, or nothing known yet).
fn from_pushed(s: &Arc<CircuitShared>, w: Word) -> Option<Result<Permit, Error>> {
    let coordinated = || {
        Ok(Permit::new(
            Arc::clone(s),
            w.generation(),
            0,
            PermitKind::Coordinated,
        ))
    };
    match w.override_kind() {
        Some(OverrideKind::ForcedOpen) => return Some(Err(s.forced_open(w))),
        Some(OverrideKind::ForcedClosed | OverrideKind::Disabled) => return Some(coordinated()),
        None => {}
    }
    match w.state() {
        Some(State::Closed) => Some(coordinated()),
        Some(State::Open) => s
            .remaining(s.open_until.load(Ordering::Acquire))
            .map(|left| Err(s.open_error(State::Open, RejectReason::Open, left))),
        Some(State::HalfOpen) | None => None,
    }
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
    ///   bounded by the configured RPC timeout. If it misses the deadline the
    ///   call is decided at once from the last pushed state: half-open gives
    ///   no probe ([`Error::Open`], `ProbesExhausted`), nothing known yet
    ///   gives the degraded-mode rule. One missed deadline does not switch
    ///   the client to degraded mode; several in a row do.
    /// * Coordinator known unreachable (Watch stream broken, connection
    ///   failed, or enough deadlines missed in a row): the circuit's
    ///   degraded mode decides at once, fail-static (`LOCAL` breaker,
    ///   `FAIL_OPEN`, or `FAIL_CLOSED` → [`Error::Unavailable`]; see the
    ///   crate docs).
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
            return decide_locally(s, w);
        }
        match from_pushed(s, w) {
            Some(decided) => decided,
            // Boxed so that the future of `acquire` stays small for the
            // common case: the RPC's state machine is large, and the
            // allocation is nothing next to the round trip.
            None => Box::pin(self.remote(trace_id)).await,
        }
    }

    /// One Acquire RPC, bounded by the RPC timeout.
    ///
    /// * An answer (allowed, rejected or refused) ends any run of missed
    ///   deadlines.
    /// * A failed connection is evidence that the coordinator is gone: the
    ///   client switches to degraded mode and this call is decided there.
    /// * A missed deadline is not, until enough are missed in a row
    ///   (`degrade_after_missed_deadlines`); meanwhile the call is decided
    ///   from the last pushed state with no further wait: no probe for this
    ///   node (half-open), the degraded-mode rule (nothing known yet).
    async fn remote(&self, trace_id: Option<&str>) -> Result<Permit, Error> {
        let s = &self.shared;
        let c = &s.common;
        c.stats.acquire_rpcs.fetch_add(1, Ordering::Relaxed);
        let started = c.now_nanos();
        let mut req = tonic::Request::new(pb::AcquireRequest {
            circuit: s.name.to_string(),
            node_id: c.node_name.clone(),
        });
        req.set_timeout(c.config.rpc_timeout);
        trace::inject(req.metadata_mut(), trace_id);
        let mut client = c.client.clone();
        match tokio::time::timeout(c.config.rpc_timeout, client.acquire(req)).await {
            Ok(Ok(resp)) => {
                c.rpc_answered();
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
            Ok(Err(status)) => match refusal_code(status.code()) {
                Some(code) => {
                    c.rpc_answered();
                    Err(Error::Refused {
                        circuit: Arc::clone(&s.name),
                        code,
                        message: status.message().to_owned(),
                    })
                }
                // The request's deadline ran out (the coordinator's
                // grpc-timeout, or tonic enforcing it here): a missed
                // deadline, like our own timer's.
                None if is_missed_deadline(&status) => {
                    tracing::debug!(circuit = %s.name, "acquire missed its deadline");
                    self.missed_deadline(started)
                }
                None => {
                    tracing::debug!(circuit = %s.name, code = ?status.code(), "acquire failed; deciding locally");
                    c.mark_down("an RPC could not reach the coordinator");
                    decide_locally(s, s.load())
                }
            },
            Err(_) => {
                tracing::debug!(circuit = %s.name, "acquire missed its deadline");
                self.missed_deadline(started)
            }
        }
    }

    /// The decision of a call whose RPC missed its deadline: degraded mode
    /// if this miss completed the evidence, else the last pushed state.
    fn missed_deadline(&self, started: u64) -> Result<Permit, Error> {
        let s = &self.shared;
        s.common.rpc_missed_deadline(started);
        let w = s.load();
        if s.common.link() == Link::Down {
            return decide_locally(s, w);
        }
        // A push may have arrived meanwhile (closed, open, an override).
        if let Some(decided) = from_pushed(s, w) {
            return decided;
        }
        match w.state() {
            // Half-open (or open past its deadline, so half-open by now):
            // only the coordinator grants probes, and it did not answer.
            Some(_) => Err(s.open_error(
                State::HalfOpen,
                RejectReason::ProbesExhausted,
                s.common.config.rpc_timeout,
            )),
            // Nothing pushed yet: the rule of the (default) degraded mode,
            // for this call only.
            None => degraded::decide_unknown(s, w).map(|g| Permit::granted(Arc::clone(s), g)),
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
