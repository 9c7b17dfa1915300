//! The client's deadline against coordinators that never answer: no
//! decision may wait on a path the RPC timeout does not bound (a TCP
//! connect, an HTTP/2 handshake, a fresh channel, the first use of a name).
//!
//! The RPC timeout here is 100 ms and the connect timeout and keep-alive
//! are seconds, so a decision that waited for anything but the RPC timeout
//! would take seconds, far beyond the bound; the bound itself leaves room
//! for a loaded test machine.

use std::time::Duration;

use breakerd_client::Coordinator;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

const RPC_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest a decision may take here: the deadline plus room for a busy
/// machine, still well below the connect timeout and keep-alive.
const BOUND: Duration = Duration::from_millis(900);

/// A "coordinator" that accepts TCP connections and reads everything, but
/// never writes a byte: no HTTP/2 SETTINGS, no answer.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_against_a_silent_coordinator_is_decided_within_the_deadline() {
    let c = Coordinator::builder()
        .endpoint(black_hole().await)
        .node_id("deadline-1")
        .rpc_timeout(RPC_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let circuit = c.circuit("never-answered").expect("name");

    let t = Instant::now();
    let first = circuit.acquire().await;
    let waited = t.elapsed();
    assert!(
        waited >= RPC_TIMEOUT && waited < BOUND,
        "first use waited {waited:?}"
    );
    let permit = first.expect("LOCAL degraded mode allows");
    assert!(permit.is_degraded(), "decided without the coordinator");
    permit.success();

    // One missed deadline is not evidence that the coordinator is gone:
    // the next calls ask again, each bounded by the deadline. The third
    // miss in a row (the default) switches to degraded mode.
    let other = c.circuit("never-answered-either").expect("name");
    for circuit in [&circuit, &other] {
        let t = Instant::now();
        let p = circuit.acquire().await.expect("LOCAL degraded mode allows");
        assert!(p.is_degraded());
        p.success();
        assert!(t.elapsed() < BOUND, "waited {:?}", t.elapsed());
    }
    assert_eq!(c.stats().acquire_rpcs, 3);
    // Degraded now: decided at once, without asking.
    for circuit in [&circuit, &other] {
        let p = circuit.acquire().await.expect("local decision");
        assert!(p.is_degraded());
        p.success();
    }
    assert_eq!(c.stats().acquire_rpcs, 3, "no RPC once degraded");
    assert!(!c.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_first_uses_on_a_fresh_channel_share_no_wait() {
    // Twenty names used at once on a channel that has never connected: each
    // is bounded by its own deadline, none queues behind another.
    let c = Coordinator::builder()
        .endpoint(black_hole().await)
        .node_id("deadline-2")
        .rpc_timeout(RPC_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let circuits: Vec<_> = (0..20)
        .map(|i| c.circuit(&format!("fresh-{i}")).expect("name"))
        .collect();
    let t = Instant::now();
    let calls: Vec<_> = circuits
        .into_iter()
        .map(|circuit| {
            tokio::spawn(async move {
                let t = Instant::now();
                let r = circuit.acquire().await;
                (t.elapsed(), r.map(|p| p.is_degraded()))
            })
        })
        .collect();
    for call in calls {
        let (waited, r) = call.await.expect("task");
        assert!(waited < BOUND, "one first use waited {waited:?}");
        assert!(matches!(r, Ok(true)), "{r:?}");
    }
    assert!(t.elapsed() < BOUND, "all took {:?}", t.elapsed());
}
