//! Registry tests, one file per concern of the registry (as the crate is
//! split), with the helpers they share here: concurrency (exactly one trip,
//! exactly N probes, exact cap), the background driver on a paused clock,
//! eviction, watch resync, listing, admin changes, durability and
//! admission. No test sleeps for a state change.

use std::sync::Arc;
use std::time::Duration;

use breakerd_policy::{Decision, Outcome, OverrideKind, PolicySpec, RejectReason, State};
use tokio::sync::Barrier;
use tokio::time::timeout;

use super::*;
use crate::circuit::{Circuit, CircuitKey};

mod admin;
mod admission;
mod data_plane;
mod durable;
mod query;
mod table;
mod watch;

const WAIT: Duration = Duration::from_secs(5);

fn registry(spec: PolicySpec, config: RegistryConfig) -> Arc<Registry> {
    Registry::new(config, PolicyResolver::new(spec, Vec::new()).unwrap())
}

/// Trips after `failures` consecutive failures, opens for exactly
/// `open_ms`, leases probes for `lease_ms`.
fn spec(failures: u32, open_ms: u64, lease_ms: u64) -> PolicySpec {
    PolicySpec {
        consecutive_failures: Some(failures),
        open_base_ms: Some(open_ms),
        open_max_ms: Some(open_ms.max(600_000)),
        open_jitter: Some(0.0),
        probe_lease_ms: Some(lease_ms),
        ..Default::default()
    }
}

fn failure(circuit: &str, generation: u64) -> OutcomeIn {
    OutcomeIn {
        circuit: circuit.into(),
        generation,
        lease: None,
        outcome: Outcome::Failure,
        latency: Duration::from_millis(1),
        age: Duration::ZERO,
    }
}

async fn trip(r: &Registry, circuit: &str, failures: u32) {
    let generation = r.acquire(circuit, "tripper").unwrap().decision.generation();
    let batch: Vec<_> = (0..failures)
        .map(|_| failure(circuit, generation))
        .collect();
    let summary = r.report("tripper", &batch).await.unwrap();
    assert_eq!(summary.transitions, 1, "the batch trips the circuit once");
    assert_eq!(r.get(circuit).unwrap().snapshot.state, State::Open);
}

async fn next(sub: &mut Subscription) -> WatchUpdate {
    timeout(WAIT, sub.next())
        .await
        .expect("no watch update in time")
        .expect("watch ended")
}

async fn next_changed(sub: &mut Subscription) -> Vec<Arc<CircuitSnapshot>> {
    match next(sub).await {
        WatchUpdate::Changed(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn initial(sub: &mut Subscription) -> Vec<Arc<CircuitSnapshot>> {
    match next(sub).await {
        WatchUpdate::Resync(c) => c,
        other => panic!("expected the initial snapshots, got {other:?}"),
    }
}
