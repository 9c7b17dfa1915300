//! Scenario tables for every rule, and property tests of the invariants.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::policy::{PolicySpec, WindowKind};

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Acquire as `node` (must be allowed) and report `outcome` after `ms` of latency.
    Call(u64, Outcome, u64),
    /// Like `Call`, reporting that the call completed `ms` from now
    /// (negative: in the past, as a batched report says).
    Done(u64, Outcome, i64),
    /// Acquire must be rejected for this reason.
    Rejected(RejectReason),
    /// Acquire must be allowed; the permit is kept unreported.
    Hold,
    /// Let time pass.
    Wait(u64),
    /// The state must be this.
    Is(State),
    /// The last transition's cause must be this.
    Cause(TransitionCause),
    /// The consecutive-failure count must be this.
    Consecutive(u32),
}

use Outcome::{Failure as F, Ignored as I, Success as S};
use Step::*;

fn policy(spec: PolicySpec) -> Policy {
    // Scenarios run without jitter so deadlines are exact.
    let spec = PolicySpec {
        open_jitter: spec.open_jitter.or(Some(0.0)),
        ..spec
    };
    Policy::try_from(&spec).expect("scenario policy is valid")
}

fn run(name: &str, spec: PolicySpec, steps: &[Step]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut b = Breaker::new(policy(spec), 1, 7, now);
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{name}: step {i} {step:?} (state {:?})", b.state());
        match *step {
            Call(..) | Done(..) => {
                let (node, outcome, ms, completed_at) = match *step {
                    Call(node, outcome, ms) => (node, outcome, ms, None),
                    Done(node, outcome, at) => {
                        let d = Duration::from_millis(at.unsigned_abs());
                        let t = if at < 0 {
                            now.checked_sub(d)
                        } else {
                            Some(now + d)
                        };
                        (
                            node,
                            outcome,
                            1,
                            Some(t.expect("scenario time is representable")),
                        )
                    }
                    _ => unreachable!(),
                };
                let d = b.acquire(NodeId(node), now);
                let Decision::Allow {
                    generation, lease, ..
                } = d
                else {
                    panic!("{at}: rejected: {d:?}")
                };
                let r = Report {
                    generation,
                    lease: lease.map(|l| l.id),
                    outcome,
                    latency: Duration::from_millis(ms),
                    node: NodeId(node),
                    completed_at,
                };
                assert_eq!(b.record(&r, now), Recorded::Applied, "{at}");
            }
            Rejected(reason) => match b.acquire(NodeId(0), now) {
                Decision::Reject { reason: got, .. } => assert_eq!(got, reason, "{at}"),
                d => panic!("{at}: allowed: {d:?}"),
            },
            Hold => assert!(b.acquire(NodeId(0), now).is_allowed(), "{at}"),
            Wait(ms) => {
                now += Duration::from_millis(ms);
                b.advance(now);
            }
            Is(state) => assert_eq!(b.state(), state, "{at}"),
            Cause(cause) => assert_eq!(b.history().next().map(|t| t.cause), Some(cause), "{at}"),
            Consecutive(n) => assert_eq!(b.counters().consecutive_failures, n, "{at}"),
        }
    }
}

#[test]
fn consecutive_failures_scenarios() {
    let default = PolicySpec::default();
    run(
        "seed defaults: 5 failures trip, 60 s open, 1 probe closes",
        default.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Open),
            Cause(TransitionCause::ConsecutiveFailures),
            Rejected(RejectReason::Open),
            Wait(59_999),
            Rejected(RejectReason::Open),
            Wait(1),
            Is(State::HalfOpen),
            Cause(TransitionCause::OpenElapsed),
            Call(2, S, 1),
            Is(State::Closed),
            Cause(TransitionCause::ProbesSucceeded),
        ],
    );
    run(
        "a success ends the run",
        default.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, S, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
        ],
    );
    run(
        "ignored outcomes neither count nor break the run",
        default.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, I, 1),
            Call(1, F, 1),
            Call(1, I, 1),
            Call(1, F, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Open),
        ],
    );
    run(
        "threshold 1",
        PolicySpec {
            consecutive_failures: Some(1),
            ..Default::default()
        },
        &[
            Call(1, S, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Open),
        ],
    );
}

#[test]
fn completion_order_scenarios() {
    let default = PolicySpec::default();
    run(
        "a success that completed before the run began does not end it",
        default.clone(),
        &[
            Wait(100),
            Call(1, F, 1),
            Call(2, F, 1),
            Call(3, F, 1),
            Call(4, F, 1),
            // Sat 10 ms in node 5's batch, completed before every failure.
            Done(5, S, -10),
            Consecutive(4),
            Is(State::Closed),
            Call(6, F, 1),
            Is(State::Open),
            Cause(TransitionCause::ConsecutiveFailures),
        ],
    );
    run(
        "a success that completed inside the run ends it",
        default.clone(),
        &[
            Wait(100),
            Done(1, F, -20),
            Done(2, F, -5),
            Done(3, S, -10),
            Consecutive(0),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Open),
        ],
    );
    run(
        "a success completing at the run's first failure ends it",
        default.clone(),
        &[Wait(100), Done(1, F, -10), Done(2, S, -10), Consecutive(0)],
    );
    run(
        "a late failure that completed earlier moves the run's start back",
        default.clone(),
        &[
            Wait(100),
            Call(1, F, 1),
            Done(2, F, -40),
            // Before the moved start: the run goes on.
            Done(3, S, -50),
            Consecutive(2),
            // After it: the run ends.
            Done(4, S, -30),
            Consecutive(0),
        ],
    );
    run(
        "a late failure that completed before a counted success is not in the run",
        default.clone(),
        &[
            Wait(100),
            Done(1, S, -95),
            Done(2, F, -90),
            // Completed before node 1's success: in completion order the
            // run is the one failure after that success.
            Done(3, F, -97),
            Consecutive(1),
            // Between the success and the run's first failure: it joins.
            Done(4, F, -93),
            Consecutive(2),
        ],
    );
    run(
        "without completion times outcomes count in arrival order",
        default.clone(),
        &[
            Wait(100),
            Done(1, F, -10),
            Done(1, F, -10),
            Call(2, S, 1),
            Consecutive(0),
        ],
    );
    run(
        "a completion time in the future counts as now",
        default.clone(),
        &[
            Wait(100),
            Done(1, F, 60_000),
            Done(2, S, 0),
            Consecutive(0),
            Done(1, F, 0),
            Done(2, S, 60_000),
            Consecutive(0),
        ],
    );
    run(
        "the first failure after a late success starts a fresh run at its own time",
        default.clone(),
        &[
            Wait(100),
            Call(1, F, 1),
            Call(1, S, 1),
            Done(1, F, 0),
            Done(2, S, -50),
            Consecutive(1),
        ],
    );
    let rate = PolicySpec {
        consecutive_failures: Some(0),
        failure_rate_threshold: Some(0.5),
        window_kind: Some(WindowKind::Count),
        window_size: Some(4),
        minimum_calls: Some(4),
        ..Default::default()
    };
    run(
        "rate windows count late successes as they arrive",
        rate,
        &[
            Wait(100),
            Call(1, F, 1),
            Done(2, S, -50),
            Done(2, S, -50),
            Done(2, S, -50),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Is(State::Open),
            Cause(TransitionCause::FailureRate),
        ],
    );
}

#[test]
fn a_success_that_does_not_end_the_run_still_counts() {
    let t0 = Instant::now();
    let mut b = Breaker::new(policy(PolicySpec::default()), 1, 0, t0);
    let now = t0 + Duration::from_millis(100);
    let report = |outcome, completed_at| Report {
        generation: 1,
        lease: None,
        outcome,
        latency: Duration::from_millis(1),
        node: NodeId(1),
        completed_at: Some(completed_at),
    };
    assert_eq!(b.record(&report(F, now), now), Recorded::Applied);
    assert_eq!(b.record(&report(S, t0), now), Recorded::Applied);
    let c = b.counters();
    assert_eq!(
        (c.consecutive_failures, c.total_successes, c.total_failures),
        (1, 1, 1)
    );
}

#[test]
fn failure_rate_scenarios() {
    let count = PolicySpec {
        consecutive_failures: Some(0),
        failure_rate_threshold: Some(0.5),
        window_kind: Some(WindowKind::Count),
        window_size: Some(10),
        minimum_calls: Some(10),
        ..Default::default()
    };
    run(
        "count window waits for minimum calls, then trips at the rate",
        count.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Is(State::Closed),
            Call(1, S, 1),
            Is(State::Open),
            Cause(TransitionCause::FailureRate),
        ],
    );
    run(
        "count window below the rate stays closed as old failures slide out",
        count.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, F, 1),
            Call(1, S, 1),
            Is(State::Closed),
        ],
    );
    let time = PolicySpec {
        consecutive_failures: Some(0),
        failure_rate_threshold: Some(0.5),
        window_kind: Some(WindowKind::Time),
        window_size: Some(1000),
        window_buckets: Some(10),
        minimum_calls: Some(4),
        ..Default::default()
    };
    run(
        "time window forgets failures older than the window",
        time.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Wait(1_100),
            Call(1, S, 1),
            Call(1, S, 1),
            Call(1, F, 1),
            Call(1, S, 1),
            Is(State::Closed),
        ],
    );
    run(
        "time window trips within the window",
        time,
        &[
            Call(1, F, 1),
            Wait(300),
            Call(1, S, 1),
            Wait(300),
            Call(1, F, 1),
            Is(State::Closed),
            Call(1, S, 1),
            Is(State::Open),
            Cause(TransitionCause::FailureRate),
        ],
    );
}

#[test]
fn slow_call_rate_scenarios() {
    let spec = PolicySpec {
        consecutive_failures: Some(0),
        slow_call_rate_threshold: Some(0.5),
        slow_call_duration_ms: Some(100),
        window_size: Some(4),
        minimum_calls: Some(4),
        ..Default::default()
    };
    run(
        "slow successes trip the slow-call rule",
        spec.clone(),
        &[
            Call(1, S, 250),
            Call(1, S, 5),
            Call(1, S, 100),
            Is(State::Closed),
            Call(1, S, 5),
            Is(State::Open),
            Cause(TransitionCause::SlowCallRate),
        ],
    );
    run(
        "fast calls keep it closed",
        spec,
        &[
            Call(1, S, 250),
            Call(1, S, 5),
            Call(1, S, 99),
            Call(1, S, 5),
            Call(1, S, 5),
            Is(State::Closed),
        ],
    );
}

#[test]
fn quorum_scenarios() {
    let spec = PolicySpec {
        consecutive_failures: Some(3),
        quorum_nodes: Some(2),
        ..Default::default()
    };
    run(
        "one sick node cannot trip the fleet",
        spec.clone(),
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
            Call(2, F, 1),
            Is(State::Open),
        ],
    );
    run(
        "nodes from a broken run do not count",
        spec,
        &[
            Call(2, F, 1),
            Call(1, S, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
        ],
    );
    let rate = PolicySpec {
        consecutive_failures: Some(0),
        failure_rate_threshold: Some(0.5),
        window_size: Some(4),
        minimum_calls: Some(4),
        quorum_nodes: Some(2),
        ..Default::default()
    };
    run(
        "rate rule needs the quorum too",
        rate,
        &[
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Call(1, F, 1),
            Is(State::Closed),
            Call(2, F, 1),
            Is(State::Open),
        ],
    );
}

#[test]
fn open_backoff_scenarios() {
    let spec = PolicySpec {
        consecutive_failures: Some(1),
        open_base_ms: Some(1000),
        open_backoff_multiplier: Some(2.0),
        open_max_ms: Some(3000),
        ..Default::default()
    };
    run(
        "each failed probe doubles the open time up to the cap; recovery forgets",
        spec,
        &[
            Call(1, F, 1),
            Is(State::Open),
            Wait(999),
            Is(State::Open),
            Wait(1),
            Is(State::HalfOpen),
            Call(1, F, 1),
            Is(State::Open),
            Cause(TransitionCause::ProbeFailed),
            Wait(1999),
            Is(State::Open),
            Wait(1),
            Is(State::HalfOpen),
            Call(1, F, 1),
            Wait(2999),
            Is(State::Open),
            Wait(1),
            Is(State::HalfOpen),
            Call(1, F, 1),
            Wait(2999),
            Is(State::Open),
            Wait(1),
            Call(1, S, 1),
            Is(State::Closed),
            Call(1, F, 1),
            Wait(999),
            Is(State::Open),
            Wait(1),
            Is(State::HalfOpen),
        ],
    );
}

#[test]
fn half_open_scenarios() {
    let spec = PolicySpec {
        consecutive_failures: Some(1),
        open_base_ms: Some(1000),
        half_open_max_probes: Some(2),
        successes_to_close: Some(2),
        probe_lease_ms: Some(500),
        ..Default::default()
    };
    run(
        "probe budget is exact and successes close",
        spec.clone(),
        &[
            Call(1, F, 1),
            Wait(1000),
            Hold,
            Hold,
            Rejected(RejectReason::ProbesExhausted),
            Wait(499),
            Rejected(RejectReason::ProbesExhausted),
            // Both held leases lapse; two fresh probes succeed.
            Wait(1),
            Call(2, S, 1),
            Is(State::HalfOpen),
            Call(3, S, 1),
            Is(State::Closed),
        ],
    );
    run(
        "any failed probe reopens",
        spec,
        &[
            Call(1, F, 1),
            Wait(1000),
            Call(2, S, 1),
            Call(3, F, 1),
            Is(State::Open),
        ],
    );
}

#[test]
fn unreported_lease_is_reclaimed() {
    let t0 = Instant::now();
    let p = policy(PolicySpec {
        consecutive_failures: Some(1),
        open_base_ms: Some(10),
        probe_lease_ms: Some(100),
        ..Default::default()
    });
    let mut b = Breaker::new(p, 1, 0, t0);
    let g = b.acquire(NodeId(1), t0).generation();
    b.record(
        &Report {
            generation: g,
            lease: None,
            outcome: F,
            latency: Duration::ZERO,
            node: NodeId(1),
            completed_at: None,
        },
        t0,
    );
    let t1 = t0 + Duration::from_millis(10);
    let Decision::Allow {
        lease: Some(first), ..
    } = b.acquire(NodeId(1), t1)
    else {
        panic!("no probe")
    };
    assert!(!b.acquire(NodeId(2), t1).is_allowed());
    assert_eq!(b.next_deadline(), Some(t1 + first.ttl));
    let t2 = t1 + first.ttl;
    let Decision::Allow {
        lease: Some(second),
        generation,
        ..
    } = b.acquire(NodeId(2), t2)
    else {
        panic!("lease not reclaimed")
    };
    assert_ne!(first.id, second.id);
    assert_eq!(b.counters().total_leases_expired, 1);
    // The late report of the reclaimed lease is stale and moves nothing.
    let late = Report {
        generation,
        lease: Some(first.id),
        outcome: F,
        latency: Duration::ZERO,
        node: NodeId(1),
        completed_at: None,
    };
    assert_eq!(b.record(&late, t2), Recorded::Stale);
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn stale_outcomes_move_nothing() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        policy(PolicySpec {
            consecutive_failures: Some(1),
            ..Default::default()
        }),
        1,
        0,
        t0,
    );
    let old = b.acquire(NodeId(1), t0).generation();
    b.reset(t0);
    let before = (b.state(), b.generation(), b.counters());
    let r = Report {
        generation: old,
        lease: None,
        outcome: F,
        latency: Duration::ZERO,
        node: NodeId(1),
        completed_at: None,
    };
    assert_eq!(b.record(&r, t0), Recorded::Stale);
    assert_eq!((b.state(), b.generation()), (before.0, before.1));
    assert_eq!(b.counters().total_stale, before.2.total_stale + 1);
}

#[test]
fn override_scenarios() {
    let t0 = Instant::now();
    let ov = |kind, expires_at| Override {
        kind,
        reason: "test".into(),
        actor: "op".into(),
        expires_at,
    };
    let fail = |b: &mut Breaker, at| {
        let Decision::Allow {
            generation, lease, ..
        } = b.acquire(NodeId(1), at)
        else {
            panic!("rejected")
        };
        b.record(
            &Report {
                generation,
                lease: lease.map(|l| l.id),
                outcome: F,
                latency: Duration::ZERO,
                node: NodeId(1),
                completed_at: None,
            },
            at,
        )
    };
    let p = policy(PolicySpec {
        consecutive_failures: Some(1),
        ..Default::default()
    });

    // Forced open rejects with its reason, and clearing it probes first.
    let mut b = Breaker::new(p.clone(), 1, 0, t0);
    b.set_override(ov(OverrideKind::ForcedOpen, None), t0);
    assert_eq!(b.state(), State::Open);
    assert!(matches!(
        b.acquire(NodeId(1), t0),
        Decision::Reject {
            reason: RejectReason::ForcedOpen,
            ..
        }
    ));
    assert_eq!(b.next_deadline(), None, "held open has no deadline");
    let g = b.generation();
    assert!(b.clear_override(t0));
    assert_eq!((b.state(), b.generation()), (State::HalfOpen, g + 1));
    assert!(!b.clear_override(t0));

    // Forced closed never trips.
    let mut b = Breaker::new(p.clone(), 1, 0, t0);
    b.set_override(ov(OverrideKind::ForcedClosed, None), t0);
    for _ in 0..10 {
        assert_eq!(fail(&mut b, t0), Recorded::Applied);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.counters().total_failures, 10);

    // Disabled: shadow mode trips but still allows.
    let mut b = Breaker::new(p.clone(), 1, 0, t0);
    b.set_override(ov(OverrideKind::Disabled, None), t0);
    fail(&mut b, t0);
    assert_eq!(b.state(), State::Open);
    assert!(b.acquire(NodeId(1), t0).is_allowed());

    // An override with an expiry lapses by itself.
    let mut b = Breaker::new(p, 1, 0, t0);
    let until = t0 + Duration::from_secs(5);
    b.set_override(ov(OverrideKind::ForcedOpen, Some(until)), t0);
    assert_eq!(b.next_deadline(), Some(until));
    match b.acquire(NodeId(1), t0) {
        Decision::Reject { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(5)),
        d => panic!("allowed: {d:?}"),
    }
    b.advance(until);
    assert!(b.override_().is_none());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(
        b.history().next().map(|t| t.cause),
        Some(TransitionCause::OverrideExpired)
    );
}

#[test]
fn jitter_spreads_reopen_times_within_bounds() {
    let t0 = Instant::now();
    let p = Policy::try_from(&PolicySpec {
        consecutive_failures: Some(1),
        open_jitter: Some(0.5),
        ..Default::default()
    })
    .unwrap();
    let mut deadlines = Vec::new();
    for seed in 0..50 {
        let mut b = Breaker::new(p.clone(), 1, seed, t0);
        let g = b.acquire(NodeId(1), t0).generation();
        b.record(
            &Report {
                generation: g,
                lease: None,
                outcome: F,
                latency: Duration::ZERO,
                node: NodeId(1),
                completed_at: None,
            },
            t0,
        );
        let open = b.open_remaining(t0);
        assert!(
            open >= Duration::from_secs(60) && open <= Duration::from_secs(90),
            "{open:?}"
        );
        deadlines.push(open);
    }
    deadlines.sort();
    deadlines.dedup();
    assert!(
        deadlines.len() > 40,
        "jitter should spread circuits: {} distinct",
        deadlines.len()
    );
}

#[test]
fn history_is_bounded_and_newest_first() {
    let t0 = Instant::now();
    let mut b = Breaker::new(Policy::default(), 1, 0, t0);
    for _ in 0..(HISTORY_LEN + 5) {
        b.reset(t0);
    }
    assert_eq!(b.history().count(), HISTORY_LEN);
    assert_eq!(
        b.history().next().map(|t| t.generation),
        Some(b.generation())
    );
}

// ---- property tests ----

#[derive(Debug, Clone)]
enum Op {
    Acquire(u64),
    Report {
        node: u64,
        outcome: Outcome,
        latency_ms: u64,
        current_generation: bool,
        held_lease: bool,
        /// Completed this long before it is recorded, when known.
        age_ms: Option<u64>,
    },
    Wait(u64),
    Override(Option<OverrideKind>),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![Just(S), Just(F), Just(I)];
    prop_oneof![
        4 => (0u64..4).prop_map(Op::Acquire),
        4 => (0u64..4, outcome, 0u64..300, any::<bool>(), any::<bool>(), prop::option::of(0u64..3_000)).prop_map(
            |(node, outcome, latency_ms, current_generation, held_lease, age_ms)| Op::Report { node, outcome, latency_ms, current_generation, held_lease, age_ms }),
        2 => (0u64..2_000).prop_map(Op::Wait),
        1 => prop_oneof![Just(None), Just(Some(OverrideKind::ForcedOpen)), Just(Some(OverrideKind::ForcedClosed)), Just(Some(OverrideKind::Disabled))].prop_map(Op::Override),
        1 => Just(Op::Reset),
    ]
}

fn spec() -> impl Strategy<Value = PolicySpec> {
    (
        1u32..6,
        1u32..4,
        1u32..3,
        0u32..3,
        prop::bool::ANY,
        0.0f64..1.0,
    )
        .prop_map(
            |(failures, probes, successes, quorum, rate, jitter)| PolicySpec {
                consecutive_failures: Some(failures),
                half_open_max_probes: Some(probes),
                successes_to_close: Some(successes),
                quorum_nodes: Some(quorum),
                failure_rate_threshold: Some(if rate { 0.5 } else { 0.0 }),
                slow_call_rate_threshold: Some(if rate { 0.5 } else { 0.0 }),
                slow_call_duration_ms: Some(200),
                window_size: Some(8),
                minimum_calls: Some(4),
                open_base_ms: Some(1_000),
                open_max_ms: Some(4_000),
                probe_lease_ms: Some(700),
                open_jitter: Some(jitter),
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Never more probes in flight than permitted; generations never go back
    /// and grow on every state change; an open circuit never allows before
    /// its deadline; stale outcomes change nothing but the stale counter.
    #[test]
    fn invariants_hold(spec in spec(), ops in prop::collection::vec(op(), 1..200)) {
        let p = Policy::try_from(&spec).unwrap();
        let max_probes = p.half_open_max_probes();
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = Breaker::new(p, 1, 99, t0);
        let mut leases: Vec<(Generation, LeaseId)> = Vec::new();
        for op in ops {
            let (state, generation) = (b.state(), b.generation());
            match op {
                Op::Acquire(node) => {
                    b.advance(now);
                    let open_with_deadline = b.override_().is_none() && b.open_deadline().is_some_and(|d| now < d);
                    let d = b.acquire(NodeId(node), now);
                    if open_with_deadline {
                        prop_assert!(!d.is_allowed(), "open circuit allowed before its deadline");
                    }
                    if let Decision::Allow { generation, lease: Some(l), .. } = d {
                        leases.push((generation, l.id));
                    }
                }
                Op::Report { node, outcome, latency_ms, current_generation, held_lease, age_ms } => {
                    let completed_at = age_ms.and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
                    b.advance(now);
                    let lease = if held_lease { leases.pop() } else { None };
                    let gen_ = match (current_generation, lease) {
                        (_, Some((g, _))) => g,
                        (true, None) => b.generation(),
                        (false, None) => b.generation().wrapping_sub(1),
                    };
                    let before = (b.state(), b.generation(), b.policy_version(), b.counters());
                    let r = Report { generation: gen_, lease: lease.map(|l| l.1), outcome, latency: Duration::from_millis(latency_ms), node: NodeId(node), completed_at };
                    if b.record(&r, now) == Recorded::Stale {
                        let after = b.counters();
                        prop_assert_eq!((b.state(), b.generation(), b.policy_version()), (before.0, before.1, before.2));
                        prop_assert_eq!(after, Counters { total_stale: before.3.total_stale + 1, ..before.3 });
                    }
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    b.advance(now);
                }
                Op::Override(Some(kind)) => b.set_override(Override { kind, reason: "p".into(), actor: "p".into(), expires_at: Some(now + Duration::from_millis(1500)) }, now),
                Op::Override(None) => { b.clear_override(now); }
                Op::Reset => b.reset(now),
            }
            prop_assert!(b.counters().probes_in_flight <= max_probes);
            prop_assert!(b.generation() >= generation, "generation went back");
            if b.state() != state {
                prop_assert!(b.generation() > generation, "state changed without a new generation");
            }
            if b.state() != State::Open {
                prop_assert_eq!(b.open_deadline(), None);
            }
        }
    }
}

#[test]
fn restore_keeps_what_must_survive_a_restart() {
    let t0 = Instant::now();
    let p = policy(PolicySpec {
        consecutive_failures: Some(1),
        ..Default::default()
    });
    let mut b = Breaker::new(p.clone(), 1, 3, t0);
    let g = b.acquire(NodeId(1), t0).generation();
    b.record(
        &Report {
            generation: g,
            lease: None,
            outcome: F,
            latency: Duration::ZERO,
            node: NodeId(1),
            completed_at: None,
        },
        t0,
    );
    let saved = b.persisted();
    assert_eq!(saved.state, State::Open);

    // Restarted 10 s later: still open until the original deadline.
    let later = t0 + Duration::from_secs(10);
    let r = Breaker::restore(p.clone(), 3, saved.clone(), later);
    assert_eq!((r.state(), r.generation()), (State::Open, saved.generation));
    assert_eq!(r.open_deadline(), saved.open_until);
    assert_eq!(r.consecutive_trips(), 1);

    // Restarted after the deadline: half-open, probing first.
    let r = Breaker::restore(p.clone(), 3, saved.clone(), t0 + Duration::from_secs(61));
    assert_eq!(r.state(), State::HalfOpen);
    assert!(r.generation() > saved.generation);

    // Open without deadline or forced-open override: probe first.
    let odd = Persisted {
        open_until: None,
        ..saved
    };
    assert_eq!(
        Breaker::restore(p.clone(), 3, odd, later).state(),
        State::HalfOpen
    );

    // Forced open survives as held open.
    let mut b = Breaker::new(p.clone(), 5, 3, t0);
    b.set_override(
        Override {
            kind: OverrideKind::ForcedOpen,
            reason: "r".into(),
            actor: "a".into(),
            expires_at: None,
        },
        t0,
    );
    let r = Breaker::restore(p, 3, b.persisted(), later);
    assert_eq!(r.state(), State::Open);
    assert!(!r.clone().acquire(NodeId(1), later).is_allowed());
    assert_eq!(
        r.override_().map(|o| o.kind),
        Some(OverrideKind::ForcedOpen)
    );
}

#[test]
fn outcomes_under_an_open_generation_count_only_in_shadow_mode() {
    let t0 = Instant::now();
    let p = policy(PolicySpec {
        consecutive_failures: Some(1),
        ..Default::default()
    });
    let mut b = Breaker::new(p, 1, 0, t0);
    let g = b.acquire(NodeId(1), t0).generation();
    b.record(
        &Report {
            generation: g,
            lease: None,
            outcome: F,
            latency: Duration::ZERO,
            node: NodeId(1),
            completed_at: None,
        },
        t0,
    );
    let forged = Report {
        generation: b.generation(),
        lease: None,
        outcome: S,
        latency: Duration::ZERO,
        node: NodeId(1),
        completed_at: None,
    };
    assert_eq!(
        b.record(&forged, t0),
        Recorded::Stale,
        "nobody was allowed under an open generation"
    );
    b.set_override(
        Override {
            kind: OverrideKind::Disabled,
            reason: "r".into(),
            actor: "a".into(),
            expires_at: None,
        },
        t0,
    );
    let Decision::Allow { generation, .. } = b.acquire(NodeId(1), t0) else {
        panic!("shadow mode allows")
    };
    let shadow = Report {
        generation,
        ..forged
    };
    assert_eq!(b.record(&shadow, t0), Recorded::Applied);
    assert_eq!(b.state(), State::Open);
}

/// Feeds `reports` (outcome, completion time in µs after the start, if
/// known) to a breaker with the consecutive rule at `threshold`, delivering
/// one per µs after every completion; the index of the report that tripped
/// it, if one did.
fn trip_index(threshold: u32, reports: &[(Outcome, Option<u64>)]) -> Option<usize> {
    let t0 = Instant::now();
    let p = policy(PolicySpec {
        consecutive_failures: Some(threshold),
        ..Default::default()
    });
    let mut b = Breaker::new(p, 1, 0, t0);
    let delivered_from = t0 + Duration::from_secs(10);
    for (i, &(outcome, at_us)) in reports.iter().enumerate() {
        let r = Report {
            generation: b.generation(),
            lease: None,
            outcome,
            latency: Duration::from_millis(1),
            node: NodeId(i as u64 % 50),
            completed_at: at_us.map(|us| t0 + Duration::from_micros(us)),
        };
        b.record(&r, delivered_from + Duration::from_micros(i as u64));
        if b.state() == State::Open {
            return Some(i);
        }
    }
    None
}

/// The number of failures among the first `n + 1` reports.
fn failures_through(reports: &[(Outcome, Option<u64>)], n: usize) -> usize {
    reports[..=n].iter().filter(|r| r.0 == F).count()
}

/// A dependency that starts failing at 1 s: successes completed before,
/// failures after, in any delivery order (with the threshold).
fn step_failure() -> impl Strategy<Value = (u32, usize, Vec<(Outcome, Option<u64>)>)> {
    (
        1u32..7,
        prop::collection::vec(0u64..1_000_000, 0..30),
        prop::collection::vec(1_000_000u64..2_000_000, 0..12),
    )
        .prop_flat_map(|(threshold, successes, failures)| {
            let m = failures.len();
            let all: Vec<_> = successes
                .into_iter()
                .map(|t| (S, Some(t)))
                .chain(failures.into_iter().map(|t| (F, Some(t))))
                .collect();
            (Just(threshold), Just(m), Just(all).prop_shuffle())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The consecutive rule counts in completion order: when a dependency
    /// starts failing, successes from before, however late they arrive and
    /// in whatever order, neither delay nor prevent the trip. It comes with
    /// the threshold-th failure delivered, as in completion order.
    #[test]
    fn late_successes_do_not_delay_the_trip((threshold, m, delivered) in step_failure()) {
        let mut in_order = delivered.clone();
        in_order.sort_by_key(|r| r.1);
        let want = (m >= threshold as usize).then_some(threshold as usize);
        let got = trip_index(threshold, &delivered).map(|i| failures_through(&delivered, i));
        let ordered = trip_index(threshold, &in_order).map(|i| failures_through(&in_order, i));
        prop_assert_eq!(ordered, want);
        prop_assert_eq!(got, want);
    }

    /// Whatever the delivery order, the consecutive rule never trips before
    /// completion order holds `threshold` failures in a row: a late outcome
    /// can delay a trip, never bring one forward.
    #[test]
    fn no_trip_before_a_run_in_completion_order(
        threshold in 1u32..7,
        delivered in prop::collection::vec(prop_oneof![Just(S), Just(F)], 0..40)
            .prop_map(|outcomes| {
                outcomes.into_iter().enumerate()
                    .map(|(i, o)| (o, Some(i as u64 * 10)))
                    .collect::<Vec<_>>()
            })
            .prop_shuffle(),
    ) {
        if let Some(i) = trip_index(threshold, &delivered) {
            let mut seen = delivered[..=i].to_vec();
            seen.sort_by_key(|r| r.1);
            let longest = seen
                .iter()
                .scan(0usize, |run, r| {
                    *run = if r.0 == F { *run + 1 } else { 0 };
                    Some(*run)
                })
                .max()
                .unwrap_or(0);
            prop_assert!(
                longest >= threshold as usize,
                "tripped at report {} with a longest run of {} < {}",
                i, longest, threshold
            );
        }
    }

    /// Delivered in completion order, completion times change nothing: the
    /// trip comes with the same report as when they are unknown.
    #[test]
    fn in_order_delivery_is_unchanged(
        threshold in 1u32..7,
        steps in prop::collection::vec((prop_oneof![Just(S), Just(F), Just(I)], 0u64..5_000), 0..60),
    ) {
        let mut at = 0;
        let timed: Vec<_> = steps.iter().map(|&(o, gap)| { at += gap; (o, Some(at)) }).collect();
        let unknown: Vec<_> = steps.iter().map(|&(o, _)| (o, None)).collect();
        prop_assert_eq!(trip_index(threshold, &timed), trip_index(threshold, &unknown));
    }
}

/// A coordinator keeps one breaker per circuit (bench W6): a closed,
/// healthy circuit must stay small inline and allocate nothing else, and
/// breakers made from one `Arc<Policy>` share it.
#[test]
fn a_healthy_closed_breaker_stays_small() {
    assert!(
        std::mem::size_of::<Breaker>() <= 128,
        "Breaker grew to {} bytes inline; move what closed, healthy circuits do not need into `Cold`",
        std::mem::size_of::<Breaker>()
    );
    let t0 = Instant::now();
    let shared = Arc::new(Policy::default());
    let mut b = Breaker::new(Arc::clone(&shared), 1, 7, t0);
    for (i, outcome) in [S, F, S, I, F, F, S].into_iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        let generation = b.acquire(NodeId(1), now).generation();
        let r = Report {
            generation,
            lease: None,
            outcome,
            latency: Duration::ZERO,
            node: NodeId(1),
            completed_at: None,
        };
        assert_eq!(b.record(&r, now), Recorded::Applied);
    }
    // A stale report (after a coordinator restart, say) is counted inline.
    let stale = Report {
        generation: b.generation() + 1,
        lease: None,
        outcome: S,
        latency: Duration::ZERO,
        node: NodeId(2),
        completed_at: None,
    };
    assert_eq!(b.record(&stale, t0), Recorded::Stale);
    let totals = b.counters();
    assert_eq!((totals.total_ignored, totals.total_stale), (1, 1));
    assert_eq!(b.state(), State::Closed);
    assert!(Arc::ptr_eq(b.shared_policy(), &shared));
    assert!(
        b.cold.is_none() && b.window.is_none() && b.quorum.is_none(),
        "a healthy closed circuit allocated {b:?}"
    );
    // The first transition allocates the rest, and history works as before.
    b.reset(t0);
    assert!(b.cold.is_some());
    assert_eq!(b.history().count(), 1);
}
