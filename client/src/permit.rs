//! The permission to make one call, and the report of how it went.
//!
//! A [`Permit`] records its outcome exactly once. Reporting never blocks and
//! never fails the caller: outcomes go into a bounded queue that a background
//! task flushes to the coordinator (the report task). Dropping
//! a permit without reporting records [`Outcome::Ignored`], which hands a
//! half-open probe lease straight back to the coordinator instead of letting
//! it wait for the lease to expire.

use std::sync::Arc;
use std::time::Duration;

pub use breakerd_policy::Outcome;
use std::time::Instant;

use crate::degraded;
use crate::shared::{CircuitShared, Grant, Link, PermitKind, Queued};

/// Permission to make one protected call. Report how it went with
/// [`success`](Self::success), [`failure`](Self::failure),
/// [`ignored`](Self::ignored) or [`record`](Self::record); dropping it
/// unreported counts as ignored.
#[must_use = "a permit must be given the call's outcome (dropping it reports IGNORED)"]
pub struct Permit {
    circuit: Arc<CircuitShared>,
    generation: u64,
    lease: u64,
    kind: PermitKind,
    started: Instant,
    done: bool,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("circuit", &self.circuit.name)
            .field("generation", &self.generation)
            .field("lease", &self.lease)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Permit {
    pub(crate) fn new(
        circuit: Arc<CircuitShared>,
        generation: u64,
        lease: u64,
        kind: PermitKind,
    ) -> Self {
        Self {
            circuit,
            generation,
            lease,
            kind,
            started: Instant::now(),
            done: false,
        }
    }

    /// The permit for a call a decider below the handles allowed.
    pub(crate) fn granted(circuit: Arc<CircuitShared>, g: Grant) -> Self {
        Self::new(circuit, g.generation, g.lease, g.kind)
    }

    /// The circuit this permit is for.
    pub fn circuit(&self) -> &str {
        &self.circuit.name
    }

    /// Generation the call was granted under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The half-open probe lease this permit holds, if it is a probe.
    pub fn lease_id(&self) -> Option<u64> {
        (self.lease != 0).then_some(self.lease)
    }

    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.lease != 0
    }

    /// True when the decision was made locally because the coordinator was
    /// unreachable (degraded mode).
    pub fn is_degraded(&self) -> bool {
        self.kind != PermitKind::Coordinated
    }

    /// Time since the permit was granted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The call succeeded.
    pub fn success(self) {
        self.record_outcome(Outcome::Success);
    }

    /// The call failed in a way that counts against the dependency.
    pub fn failure(self) {
        self.record_outcome(Outcome::Failure);
    }

    /// The call says nothing about the dependency (cancelled, bad request).
    /// Returns a probe lease at once.
    pub fn ignored(self) {
        self.record_outcome(Outcome::Ignored);
    }

    /// Record `outcome` with the latency measured since the permit was
    /// granted.
    pub fn record_outcome(mut self, outcome: Outcome) {
        // One clock read gives both the latency and the completion instant.
        let now = Instant::now();
        self.finish(outcome, now.saturating_duration_since(self.started), now);
    }

    /// Record `outcome` with a latency the caller measured.
    pub fn record(mut self, outcome: Outcome, latency: Duration) {
        self.finish(outcome, latency, Instant::now());
    }

    /// `completed`: when the call ended, so the report can say how long it
    /// waited in its batch (its `age_us`).
    fn finish(&mut self, outcome: Outcome, latency: Duration, completed: Instant) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let c = &self.circuit;
        match self.kind {
            PermitKind::Coordinated => {
                // While unreachable, the node's own outcomes also feed the
                // local breaker, so it trips on what it sees.
                if c.common.link() == Link::Down {
                    degraded::feed(c, self.generation, None, outcome, latency);
                }
                c.common.enqueue(Queued {
                    idx: c.idx,
                    generation: self.generation,
                    lease: self.lease,
                    outcome,
                    latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    completed,
                });
            }
            PermitKind::Local => {
                let lease = (self.lease != 0).then_some(self.lease);
                degraded::feed(c, self.generation, lease, outcome, latency);
            }
            PermitKind::Unchecked => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            let now = Instant::now();
            self.finish(
                Outcome::Ignored,
                now.saturating_duration_since(self.started),
                now,
            );
        }
    }
}
