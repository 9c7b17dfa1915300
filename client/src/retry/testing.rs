//! Test helpers shared by the retry, fallback and layer tests: a real
//! [`Circuit`] with no coordinator behind it.
//!
//! The coordinator endpoint refuses connections, so the first decision
//! marks it unreachable and the circuit runs in `LOCAL` degraded mode: the
//! very same policy engine the coordinator runs (default policy: 5
//! consecutive failures open it for 60 s plus up to 10 % jitter), fed by
//! this node's outcomes. No breaker logic is duplicated for the tests.

use crate::{Circuit, Coordinator};

/// A coordinator that cannot be reached, and one of its circuits, already
/// switched to local decisions.
pub(crate) async fn offline_circuit(name: &str) -> (Coordinator, Circuit) {
    let coordinator = Coordinator::builder()
        .endpoint("http://127.0.0.1:1")
        .node_id("test-node")
        .build()
        .expect("client config");
    let circuit = coordinator.circuit(name).expect("valid name");
    circuit
        .acquire()
        .await
        .expect("degraded LOCAL allows a closed circuit")
        .ignored();
    assert!(!coordinator.is_connected());
    (coordinator, circuit)
}

/// Record `n` failures on `circuit` (5 trip the default policy).
pub(crate) async fn fail(circuit: &Circuit, n: usize) {
    for _ in 0..n {
        circuit.acquire().await.expect("allowed").failure();
    }
}
