//! End-to-end tests of the client's retry and fallback helpers against a
//! real coordinator on loopback: circuit state pushed by the coordinator
//! (tripped by another node, or forced open by an operator) stops retries
//! and sends calls straight to the fallback tiers.
//!
//! No test sleeps to wait for a state: waits are on pushed views, under a
//! deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use breakerd_client::fallback::{Fallback, Source};
use breakerd_client::retry::{Jitter, RetryPolicy, Stop};
use breakerd_client::{
    CallError, Circuit, CircuitView, Coordinator, Error, OverrideKind, RejectReason, State,
};
use breakerd_e2e::{TestServer, within};
use breakerd_proto::v1 as pb;
use tokio::time::Instant;

fn node(addr: SocketAddr, id: &str) -> Coordinator {
    Coordinator::builder()
        .endpoint(format!("http://{addr}"))
        .node_id(id)
        .build()
        .expect("client config")
}

async fn view_until(c: &Circuit, what: &str, pred: impl FnMut(&CircuitView) -> bool) {
    let mut rx = c.subscribe();
    within(what, rx.wait_for(pred))
        .await
        .expect("circuit alive");
}

/// Waits until `c` has its first snapshot (so decisions are local).
async fn known(c: &Circuit) {
    view_until(c, "first snapshot", |v| v.state.is_some()).await;
}

/// A retry policy whose delays are long and exact: a test that finishes
/// well before the first delay proves no retry was slept for.
fn slow_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_secs(5))
        .max_delay(Duration::from_secs(5))
        .jitter(Jitter::None)
        .without_budget()
        .build()
        .expect("valid policy")
}

#[derive(Debug)]
struct Down;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_is_scheduled_into_a_circuit_another_node_opened() {
    let server = TestServer::start().await;
    let (a, b) = (node(server.addr, "web-a"), node(server.addr, "web-b"));
    let (ca, cb) = (
        a.circuit("quotes").expect("name"),
        b.circuit("quotes").expect("name"),
    );
    known(&ca).await;
    known(&cb).await;

    let calls = AtomicU32::new(0);
    let started = Instant::now();
    let err = slow_retry()
        .run(&ca, Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            // While node A's first attempt is in flight, node B trips the
            // circuit (5 consecutive failures) and the coordinator pushes
            // OPEN to A.
            for _ in 0..5 {
                cb.acquire().await.expect("closed").failure();
            }
            view_until(&ca, "OPEN pushed to node A", |v| {
                v.state == Some(State::Open)
            })
            .await;
            Err::<(), _>(Down)
        })
        .await
        .expect_err("the upstream is down");

    assert_eq!(calls.load(Ordering::SeqCst), 1, "no second call");
    assert_eq!(err.attempts, 1);
    assert_eq!(err.stop, Stop::CircuitOpen);
    assert!(matches!(err.error, CallError::Inner(Down)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned without sleeping the 5 s backoff: {:?}",
        started.elapsed()
    );

    // And the next call is rejected locally, without calling anything.
    let err = slow_retry()
        .run(&ca, Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Down>(())
        })
        .await
        .expect_err("open");
    assert_eq!((err.attempts, err.stop), (0, Stop::Rejected));
    assert!(matches!(
        err.rejection(),
        Some(Error::Open {
            reason: RejectReason::Open,
            ..
        })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_open_circuit_goes_straight_to_the_fallback_tiers() {
    let server = TestServer::start().await;
    let web = node(server.addr, "web-1");
    let circuit = web.circuit("recs:v2").expect("name");
    known(&circuit).await;

    let fallback = Fallback::new()
        .last_known_good(Duration::from_secs(60))
        .static_value(vec!["bestsellers".to_owned()]);
    let retry = slow_retry();
    let timeout = Duration::from_millis(500);
    let calls = AtomicU32::new(0);
    let recs = |user: &'static str| {
        let calls = &calls;
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Down>(vec![format!("for-{user}")])
        }
    };

    let (v, src) = fallback
        .run("alice", retry.run(&circuit, timeout, recs("alice")))
        .await
        .expect("primary");
    assert_eq!((v, src), (vec!["for-alice".to_owned()], Source::Primary));

    server
        .admin()
        .set_override(pb::SetOverrideRequest {
            name: "recs:v2".into(),
            kind: pb::OverrideKind::ForcedOpen as i32,
            actor: "client_resilience".into(),
            reason: "recs backend maintenance".into(),
            expires_in_ms: 0,
        })
        .await
        .expect("force open");
    view_until(&circuit, "forced open push", |v| {
        v.override_kind == Some(OverrideKind::ForcedOpen)
    })
    .await;

    let started = Instant::now();
    let (v, src) = fallback
        .run("alice", retry.run(&circuit, timeout, recs("alice")))
        .await
        .expect("cached");
    assert_eq!(v, vec!["for-alice".to_owned()]);
    assert!(matches!(src, Source::LastKnownGood { .. }), "{src:?}");
    let (v, src) = fallback
        .run("bob", retry.run(&circuit, timeout, recs("bob")))
        .await
        .expect("static");
    assert_eq!((v, src), (vec!["bestsellers".to_owned()], Source::Static));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the primary ran only before the override"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "rejections answer at once"
    );

    // Fallback::call gives the same through the circuit alone.
    let (_, src) = fallback
        .call(&circuit, "bob", timeout, recs("bob"))
        .await
        .expect("static");
    assert_eq!(src, Source::Static);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_guards_a_generated_grpc_client() {
    use breakerd_client::layer::{CircuitBreaker, CircuitBreakerError};
    use breakerd_proto::v1::admin_client::AdminClient;

    // The coordinator guards calls to another gRPC service (here a second
    // breakerd, standing in for any dependency).
    let coordinator = TestServer::start().await;
    let dependency = TestServer::start().await;
    let web = node(coordinator.addr, "web-1");
    let circuit = web.circuit("dependency-admin").expect("name");
    known(&circuit).await;
    let mut client = AdminClient::new(CircuitBreaker::new(
        dependency.channel.clone(),
        circuit.clone(),
    ));
    let get = |name: &str| pb::GetCircuitRequest { name: name.into() };

    // NOT_FOUND, sent as a trailers-only response (grpc-status header), is
    // the caller's problem: ten of them do not trip the circuit.
    for _ in 0..10 {
        let status = client
            .get_circuit(get("nope"))
            .await
            .expect_err("no such circuit");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    assert!(client.get_circuit(get("nope")).await.is_err());
    assert_eq!(circuit.view().state, Some(State::Closed));

    // The dependency goes away: UNAVAILABLE counts, and after five of them
    // the coordinator opens the circuit for the fleet.
    dependency.stop().await.expect("clean stop");
    for _ in 0..5 {
        let status = client.get_circuit(get("nope")).await.expect_err("down");
        assert!(
            CircuitBreakerError::rejection_in(&status).is_none(),
            "a real call: {status:?}"
        );
    }
    view_until(&circuit, "OPEN pushed", |v| v.state == Some(State::Open)).await;
    let status = client.get_circuit(get("nope")).await.expect_err("open");
    let rejection = CircuitBreakerError::rejection_in(&status).expect("rejected by the circuit");
    assert!(rejection.is_open());
    coordinator.stop().await.expect("clean stop");
}
