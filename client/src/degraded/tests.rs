//! Degraded-mode decisions through a real client whose coordinator is
//! unreachable (a port nobody listens on), with snapshots applied by hand.

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
        }) => {
            assert!(retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60))
        }
        other => panic!("expected a local rejection, got {other:?}"),
    }
    // Unreachable too: the announced deadline still holds.
    circuit.shared.common.mark_down_quiet();
    assert!(circuit.acquire().await.is_err_and(|e| e.is_open()));
    assert_eq!(c.stats().acquire_rpcs, 0, "decided from the pushed state");
}

/// A "coordinator" that takes connections (the kernel's backlog) and never
/// answers: every RPC to it misses its deadline. Keep the listener alive.
fn black_hole() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, format!("http://{addr}"))
}

/// A client with no background tasks: snapshots and the link are set by
/// hand, so nothing but the test moves the state.
fn detached(endpoint: &str) -> Coordinator {
    Coordinator::builder()
        .endpoint(endpoint)
        .node_id("unit-2")
        .rpc_timeout(Duration::from_millis(30))
        .build_detached()
        .expect("config")
}

fn push(circuit: &crate::Circuit, state: pb::CircuitState, mode: pb::DegradedMode, open_ms: u64) {
    let s = snapshot(circuit.name(), state, mode, open_ms);
    crate::watch::apply_snapshot(&circuit.shared, &s, true);
}

/// The rejection of a half-open call that got no probe, with its
/// `retry_after`.
async fn no_probe(circuit: &crate::Circuit) -> Duration {
    match circuit.acquire().await {
        Err(Error::Open {
            state: State::HalfOpen,
            reason: RejectReason::ProbesExhausted,
            retry_after,
            ..
        }) => retry_after,
        other => panic!("expected no probe, got {other:?}"),
    }
}

fn is_down(c: &Coordinator) -> bool {
    c.common().link() == crate::shared::Link::Down
}

/// Default `probe_lease_ms` of the policy the snapshots carry.
const LEASE: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn missed_deadlines_degrade_only_when_several_in_a_row() {
    let (_hole, endpoint) = black_hole();
    let c = detached(&endpoint);
    let circuit = c.circuit("recs").expect("name");
    push(
        &circuit,
        pb::CircuitState::HalfOpen,
        pb::DegradedMode::Local,
        0,
    );
    // Two misses: each call is decided from the pushed state (no probe,
    // ask again after one deadline), and the node stays coordinated.
    for i in 1..=2 {
        assert_eq!(no_probe(&circuit).await, Duration::from_millis(30));
        assert!(!is_down(&c), "after {i} missed deadline(s)");
        assert_eq!(c.stats().acquire_rpcs, i);
    }
    // The third in a row is evidence: degraded mode, fail-static, so still
    // no probe, now for a probe lease.
    let hold = no_probe(&circuit).await;
    assert!(is_down(&c));
    assert!(
        hold > LEASE - Duration::from_secs(1) && hold <= LEASE,
        "{hold:?}"
    );
    // From now on decided locally, without asking.
    no_probe(&circuit).await;
    assert_eq!(c.stats().acquire_rpcs, 3);
}

#[tokio::test(start_paused = true)]
async fn an_answer_ends_a_run_of_missed_deadlines() {
    let (_hole, endpoint) = black_hole();
    let c = detached(&endpoint);
    let circuit = c.circuit("recs").expect("name");
    push(
        &circuit,
        pb::CircuitState::HalfOpen,
        pb::DegradedMode::Local,
        0,
    );
    no_probe(&circuit).await;
    no_probe(&circuit).await;
    c.common().rpc_answered();
    no_probe(&circuit).await;
    no_probe(&circuit).await;
    assert!(!is_down(&c), "two misses since the answer");
    no_probe(&circuit).await;
    assert!(is_down(&c), "three misses since the answer");
}

#[tokio::test(start_paused = true)]
async fn overlapping_misses_of_one_stall_count_once() {
    let (_hole, endpoint) = black_hole();
    let c = detached(&endpoint);
    let circuit = c.circuit("recs").expect("name");
    push(
        &circuit,
        pb::CircuitState::HalfOpen,
        pb::DegradedMode::Local,
        0,
    );
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let circuit = circuit.clone();
            tokio::spawn(async move { no_probe(&circuit).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("call"), Duration::from_millis(30));
    }
    assert_eq!(c.stats().acquire_rpcs, 10);
    assert!(!is_down(&c), "ten RPCs in flight together are one miss");
}

#[tokio::test(start_paused = true)]
async fn first_use_that_missed_its_deadline_follows_the_degraded_rule() {
    let (_hole, endpoint) = black_hole();
    let c = detached(&endpoint);
    let circuit = c.circuit("fresh").expect("name");
    let p = circuit.acquire().await.expect("LOCAL allows");
    assert!(p.is_degraded(), "not decided by the coordinator");
    p.failure();
    assert!(!is_down(&c));
    assert!(
        circuit.shared.slow.lock().local.is_none(),
        "no local breaker while coordinated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_following_open_stays_open_then_holds_its_probe() {
    let c = unreachable().await;
    let circuit = c.circuit("payments").expect("name");
    push(
        &circuit,
        pb::CircuitState::Open,
        pb::DegradedMode::Local,
        1_000,
    );
    c.common().mark_down_quiet();
    assert!(circuit.acquire().await.is_err_and(|e| e.is_open()));
    // Past the open deadline the coordinator is half-open and grants its
    // probes to nodes that reach it: none from here for one probe lease.
    tokio::time::advance(Duration::from_millis(1_001)).await;
    let hold = no_probe(&circuit).await;
    assert!(
        hold > LEASE - Duration::from_millis(5) && hold <= LEASE,
        "{hold:?}"
    );
    tokio::time::advance(LEASE - Duration::from_millis(10)).await;
    no_probe(&circuit).await;
    // Then the local breaker takes over, half-open, not closed: exactly
    // one probe (the policy's budget), and its success closes it.
    tokio::time::advance(Duration::from_millis(20)).await;
    let probe = circuit.acquire().await.expect("one local probe");
    assert!(probe.is_degraded() && probe.is_probe());
    no_probe(&circuit).await;
    probe.success();
    let p = circuit.acquire().await.expect("closed locally");
    assert!(!p.is_probe());
    p.success();
    assert_eq!(c.stats().acquire_rpcs, 0, "decided from the pushed state");
}

#[tokio::test(start_paused = true)]
async fn half_open_without_the_coordinator_gives_no_probe_for_a_lease() {
    let c = unreachable().await;
    let local = c.circuit("recs").expect("name");
    let open = c.circuit("ads").expect("name");
    push(
        &local,
        pb::CircuitState::HalfOpen,
        pb::DegradedMode::Local,
        0,
    );
    push(
        &open,
        pb::CircuitState::HalfOpen,
        pb::DegradedMode::FailOpen,
        0,
    );
    c.common().mark_down_quiet();
    for circuit in [&local, &open] {
        no_probe(circuit).await;
    }
    tokio::time::advance(LEASE - Duration::from_millis(1)).await;
    for circuit in [&local, &open] {
        no_probe(circuit).await;
    }
    tokio::time::advance(Duration::from_millis(2)).await;
    // FAIL_OPEN allows once the hold is over; LOCAL probes within budget.
    let p = open.acquire().await.expect("fail open");
    assert!(p.is_degraded() && !p.is_probe());
    p.success();
    let probe = local.acquire().await.expect("one local probe");
    assert!(probe.is_probe());
    no_probe(&local).await;
    probe.failure();
    // A failed probe reopens the local breaker.
    match local.acquire().await {
        Err(Error::Open {
            state: State::Open, ..
        }) => {}
        other => panic!("expected the local breaker open, got {other:?}"),
    }
    assert_eq!(c.stats().acquire_rpcs, 0);
}

/// No decision path waits on anything but the RPC deadline: no connect
/// timeout, no lock, no other timer. On the paused clock a wait is exact,
/// so any such wait would show as virtual time past the deadline (the
/// connect timeout here is seconds). Through the full client, background
/// tasks included; 20 first uses and 20 half-open probe requests at once.
#[tokio::test(start_paused = true)]
async fn no_decision_waits_past_the_deadline_on_the_paused_clock() {
    let (_hole, endpoint) = black_hole();
    let deadline = Duration::from_millis(30);
    let c = Coordinator::builder()
        .endpoint(endpoint)
        .node_id("unit-3")
        .rpc_timeout(deadline)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let mut circuits = Vec::new();
    for i in 0..40 {
        let circuit = c.circuit(&format!("c-{i}")).expect("name");
        if i % 2 == 1 {
            push(
                &circuit,
                pb::CircuitState::HalfOpen,
                pb::DegradedMode::Local,
                0,
            );
        }
        circuits.push(circuit);
    }
    let t = Instant::now();
    let calls: Vec<_> = circuits
        .iter()
        .cloned()
        .map(|circuit| {
            tokio::spawn(async move {
                let r = circuit.acquire().await.map(|p| p.is_degraded());
                (Instant::now(), r)
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (done, r) = call.await.expect("call");
        let waited = done - t;
        assert!(
            waited >= deadline && waited <= deadline + Duration::from_millis(1),
            "call {i} waited {waited:?}"
        );
        if i % 2 == 1 {
            assert!(r.is_err_and(|e| e.is_open()), "half-open: no probe");
        } else {
            assert_eq!(r.ok(), Some(true), "first use: the degraded rule");
        }
    }
    assert_eq!(c.stats().acquire_rpcs, 40);
}
