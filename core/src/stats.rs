//! The registry's counters for metrics: totals since it started, kept in
//! atomics (and one small map for the rare transitions) so that counting
//! costs nothing on the hot path, and the types they are read back as.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use breakerd_policy::{Breaker, Decision, Outcome, RejectReason, State, TransitionCause};
use parking_lot::Mutex;
use serde::Serialize;

use crate::circuit::Before;
use crate::types::ReportSummary;

/// Totals since the registry started, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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
/// (see [`Registry::transition_counts`](crate::Registry::transition_counts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// The counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
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

impl Stats {
    /// Counts one acquire call and its decision.
    pub(crate) fn count_acquire(&self, decision: Decision) {
        self.acquires.fetch_add(1, Ordering::Relaxed);
        match decision {
            Decision::Reject { reason, .. } => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                self.rejected_by[reject_index(reason)].fetch_add(1, Ordering::Relaxed);
            }
            Decision::Allow { lease: Some(_), .. } => {
                self.leases_granted.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Allow { lease: None, .. } => {}
        }
    }

    /// Counts one applied outcome by kind.
    pub(crate) fn count_applied(&self, outcome: Outcome) {
        self.outcomes_by[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what became of a report batch.
    pub(crate) fn count_report(&self, summary: &ReportSummary) {
        let add = |a: &AtomicU64, n: u32| a.fetch_add(u64::from(n), Ordering::Relaxed);
        add(&self.applied, summary.applied);
        add(&self.stale, summary.stale);
        add(&self.unknown, summary.unknown);
    }

    /// Counts one circuit created.
    pub(crate) fn count_created(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` circuits evicted as idle.
    pub(crate) fn count_evicted(&self, n: usize) {
        self.evicted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one watcher resynchronised after falling behind.
    pub(crate) fn count_resync(&self) {
        self.watch_resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the transitions and lease expiries the breaker made since
    /// `before` to the stats.
    pub(crate) fn count_changes(&self, b: &Breaker, before: &Before) {
        let generation = before.fingerprint.generation;
        if b.generation() != generation {
            // Every generation step is one transition, recorded in history.
            let mut map = self.transitions.lock();
            for t in b.history().take_while(|t| t.generation > generation) {
                *map.entry((t.from, t.to, t.cause)).or_insert(0) += 1;
            }
        }
        let expired = b.leases_expired().saturating_sub(before.leases_expired);
        if expired > 0 {
            self.leases_expired.fetch_add(expired, Ordering::Relaxed);
        }
    }

    /// The totals, with `circuits` held now.
    pub(crate) fn totals(&self, circuits: usize) -> RegistryStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RegistryStats {
            circuits,
            acquires: l(&self.acquires),
            rejections: l(&self.rejections),
            applied: l(&self.applied),
            stale: l(&self.stale),
            unknown: l(&self.unknown),
            created: l(&self.created),
            evicted: l(&self.evicted),
            watch_resyncs: l(&self.watch_resyncs),
            rejected_open: l(&self.rejected_by[0]),
            rejected_probes_exhausted: l(&self.rejected_by[1]),
            rejected_forced_open: l(&self.rejected_by[2]),
            successes: l(&self.outcomes_by[0]),
            failures: l(&self.outcomes_by[1]),
            ignored: l(&self.outcomes_by[2]),
            leases_granted: l(&self.leases_granted),
            leases_expired: l(&self.leases_expired),
        }
    }

    /// Every kind of transition seen, with its count.
    pub(crate) fn transition_counts(&self) -> Vec<TransitionCount> {
        self.transitions
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
}
