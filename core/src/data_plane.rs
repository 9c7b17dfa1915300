//! The data plane: acquire (may a call go through?), report (how calls
//! went) and watch (tell me whenever these circuits change). The hot path:
//! a call is one map read and one circuit lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use breakerd_policy::{NodeId, Recorded, Report};

use crate::admission::{Admission, AdmitAll, Refused};
use crate::error::CoreError;
use crate::name::{self, validate_circuit_name, validate_node_id};
use crate::registry::{Registry, now};
use crate::table::Creator;
use crate::types::{AcquireOutcome, MAX_OUTCOME_AGE, OutcomeIn, ReportSummary};
use crate::watch::{self, Subscription};

/// When an outcome that arrived at `now` aged `age` completed: `None` (order
/// of arrival) for a zero age, or one before the clock's earliest instant.
fn completed_at(now: Instant, age: Duration) -> Option<Instant> {
    if age.is_zero() {
        return None;
    }
    now.checked_sub(age.min(MAX_OUTCOME_AGE))
}

impl Registry {
    /// Asks to make a call through `circuit` on behalf of `node`. Creates the
    /// circuit with its configured policy on first use.
    pub fn acquire(&self, circuit: &str, node: &str) -> Result<AcquireOutcome, CoreError> {
        self.acquire_admitted(circuit, node, &AdmitAll)
            .map_err(Refused::into_core)
    }

    /// [`acquire`](Self::acquire), creating the circuit only if `admission`
    /// admits it.
    pub fn acquire_admitted<A: Admission>(
        &self,
        circuit: &str,
        node: &str,
        admission: &A,
    ) -> Result<AcquireOutcome, Refused<A::Refusal>> {
        validate_circuit_name(circuit)?;
        validate_node_id(node)?;
        let now = now();
        let node = NodeId::from_name(node);
        let outcome =
            self.with_created_by(circuit, now, admission, Creator::DataPlane, |_, inner| {
                let decision = inner.breaker.acquire(node, now);
                Ok(AcquireOutcome {
                    decision,
                    policy_version: inner.breaker.policy_version(),
                })
            })?;
        self.stats.count_acquire(outcome.decision);
        Ok(outcome)
    }

    /// Applies a batch of outcomes from `node`, in order. The batch size and
    /// every name are checked first: if anything is invalid nothing is
    /// applied. Outcomes for circuits that do not exist are counted as
    /// unknown; they never create a circuit.
    ///
    /// A batch that moved a circuit (e.g. tripped it open) is answered only
    /// once that state is durable, so an acknowledged trip survives a
    /// crash; any other batch is answered at once.
    pub async fn report(
        &self,
        node: &str,
        outcomes: &[OutcomeIn],
    ) -> Result<ReportSummary, CoreError> {
        let mark = self.mark();
        let summary = self.apply_report(node, outcomes)?;
        if summary.transitions == 0 {
            return Ok(summary);
        }
        self.acknowledge(mark, Ok(summary)).await
    }

    /// The batch of [`report`](Self::report), applied and queued for the
    /// store, not waiting for it to be durable.
    fn apply_report(&self, node: &str, outcomes: &[OutcomeIn]) -> Result<ReportSummary, CoreError> {
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
            match self.with_existing(&o.circuit, now, |_, inner| {
                let before = inner.breaker.generation();
                let recorded = inner.breaker.record(&report, now);
                Ok((recorded, inner.breaker.generation() != before))
            }) {
                Ok((Recorded::Applied, moved)) => {
                    summary.applied += 1;
                    summary.transitions += u32::from(moved);
                    self.stats.count_applied(o.outcome);
                }
                Ok((Recorded::Stale, _)) => summary.stale += 1,
                Err(_) => summary.unknown += 1,
            }
        }
        self.stats.count_report(&summary);
        Ok(summary)
    }

    /// Subscribes to `names` (validated; missing circuits are created, the
    /// cap applies), or to every circuit when `names` is empty (creating
    /// none). The first [`Subscription::next`] yields the current snapshots.
    pub fn watch(self: &Arc<Self>, names: &[String]) -> Result<Subscription, CoreError> {
        self.watch_admitted(names, &AdmitAll)
            .map_err(Refused::into_core)
    }

    /// [`watch`](Self::watch), creating the missing circuits only if
    /// `admission` admits all of them: it is asked once, for every watched
    /// name missing when the watch starts, so a refused watch creates
    /// nothing.
    pub fn watch_admitted<A: Admission>(
        self: &Arc<Self>,
        names: &[String],
        admission: &A,
    ) -> Result<Subscription, Refused<A::Refusal>> {
        if names.len() > self.config.max_watch_circuits {
            return Err(Refused::Core(CoreError::InvalidArgument(format!(
                "a watch holds at most {} circuits, not {}",
                self.config.max_watch_circuits,
                names.len()
            ))));
        }
        for (i, n) in names.iter().enumerate() {
            if let Some(problem) = name::name_problem(n) {
                return Err(Refused::Core(CoreError::InvalidName {
                    what: format!("circuits[{i}]: circuit name"),
                    problem,
                }));
            }
        }
        watch::subscribe(self, names, admission)
    }
}
