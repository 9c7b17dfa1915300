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
