//! End-to-end tests of the Rust client (`breakerd-client`) against a real
//! coordinator on loopback: a fleet of 20 `Coordinator`s (one per simulated
//! web node) trips together, probes within the half-open budget, survives
//! the coordinator going away and follows it again when it comes back.
//!
//! Nothing here sleeps to wait for a state: every wait is on an event (a
//! pushed circuit view, connectivity, a flush acknowledgement) under a
//! deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use breakerd_client::{
    Circuit, CircuitView, Coordinator, Error, OverrideKind, Permit, RejectReason, State,
};
use breakerd_e2e::{TestServer, config, within};
use breakerd_proto::v1 as pb;
use breakerd_proto::v1::admin_client::AdminClient;
use tokio::net::TcpListener;
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Deadline of every coordinator RPC in these tests: the client's default.
const RPC_TIMEOUT: Duration = Duration::from_millis(30);
/// Scheduling slack allowed on top of [`RPC_TIMEOUT`] for one call: the
/// measurement includes the time the load task waits for a worker thread.
const SLACK: Duration = Duration::from_millis(50);
const NODES: usize = 20;

/// The tests of this file run one at a time: each runs 20 nodes and a
/// coordinator, and timing assertions are about the client, not about how
/// four such fleets share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deadline used where a test checks what the coordinator decided (probe
/// budgets, leases) rather than deadlines: on a loaded machine a 30 ms
/// hiccup makes a probe request miss its deadline (that call gets no
/// probe), and several in a row rightly send a node into degraded mode.
const ROOMY_RPC_TIMEOUT: Duration = Duration::from_millis(500);

fn node(addr: SocketAddr, i: usize) -> Coordinator {
    node_with(addr, i, RPC_TIMEOUT)
}

fn node_with(addr: SocketAddr, i: usize, rpc_timeout: Duration) -> Coordinator {
    Coordinator::builder()
        .endpoint(format!("http://{addr}"))
        .node_id(format!("web-{i}"))
        .rpc_timeout(rpc_timeout)
        .connect_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(250))
        .build()
        .expect("client config")
}

fn fleet(addr: SocketAddr, name: &str, rpc_timeout: Duration) -> (Vec<Coordinator>, Vec<Circuit>) {
    let nodes: Vec<Coordinator> = (0..NODES)
        .map(|i| node_with(addr, i, rpc_timeout))
        .collect();
    let circuits = nodes
        .iter()
        .map(|n| n.circuit(name).expect("valid name"))
        .collect();
    (nodes, circuits)
}

async fn set_policy(admin: &mut AdminClient<Channel>, name: &str, policy: pb::Policy) {
    admin
        .set_policy(pb::SetPolicyRequest {
            name: name.into(),
            policy: Some(policy),
            actor: "client_e2e".into(),
            reason: "test policy".into(),
        })
        .await
        .expect("set policy");
}

/// A quick-cycling policy: trips after 5 consecutive failures, opens for
/// `open_ms` without jitter.
fn fast_policy(open_ms: u64, probes: u32, successes: u32) -> pb::Policy {
    pb::Policy {
        consecutive_failures: Some(5),
        open_base_ms: Some(open_ms),
        open_max_ms: Some(open_ms.max(60_000)),
        open_jitter: Some(0.0),
        half_open_max_probes: Some(probes),
        successes_to_close: Some(successes),
        probe_lease_ms: Some(30_000),
        ..Default::default()
    }
}

/// Waits until the circuit's pushed view satisfies `pred`.
async fn view_until(
    c: &Circuit,
    what: &str,
    pred: impl FnMut(&CircuitView) -> bool,
) -> CircuitView {
    let mut rx = c.subscribe();
    let what = format!("{} on {what}", c.name());
    within(&what, rx.wait_for(pred))
        .await
        .expect("circuit alive")
        .clone()
}

async fn all_until(circuits: &[Circuit], what: &str, pred: impl Fn(&CircuitView) -> bool + Clone) {
    for c in circuits {
        view_until(c, what, pred.clone()).await;
    }
}

async fn connected(nodes: &[Coordinator], want: bool) {
    for n in nodes {
        let mut rx = n.connectivity();
        within(
            &format!("{} connected={want}", n.node_id()),
            rx.wait_for(|c| *c == want),
        )
        .await
        .expect("coordinator alive");
    }
}

/// Records `n` failures from one node.
async fn fail(c: &Circuit, n: usize) {
    for _ in 0..n {
        c.acquire()
            .await
            .expect("allowed before the trip")
            .failure();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_trips_together_and_probes_within_the_budget() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut admin = server.admin();
    set_policy(&mut admin, "payments", fast_policy(300, 2, 2)).await;
    let (nodes, circuits) = fleet(server.addr, "payments", ROOMY_RPC_TIMEOUT);
    all_until(&circuits, "closed snapshot", |v| {
        v.state == Some(State::Closed)
    })
    .await;
    connected(&nodes, true).await;

    // Every node watches for the moment its own cell turns OPEN.
    let mut watchers = Vec::new();
    for c in &circuits {
        let c = c.clone();
        watchers.push(tokio::spawn(async move {
            view_until(&c, "open push", |v| v.state == Some(State::Open)).await;
            Instant::now()
        }));
    }
    let rpcs_before: Vec<u64> = nodes.iter().map(|n| n.stats().acquire_rpcs).collect();

    // Node 0 sees the dependency fail 5 times; the 5th report trips it.
    fail(&circuits[0], 4).await;
    let permit = circuits[0].acquire().await.expect("still closed");
    let tripped_at = Instant::now();
    permit.failure();
    let mut last = tripped_at;
    for w in watchers {
        last = last.max(w.await.expect("watcher"));
    }
    let propagation = last - tripped_at;
    println!(
        "propagation: threshold-th failure report -> last of {NODES} nodes rejecting locally: {propagation:?}"
    );
    assert!(
        propagation < Duration::from_secs(1),
        "propagation took {propagation:?}"
    );

    // Every node now rejects locally: an Open error, and no RPC made.
    for (i, c) in circuits.iter().enumerate() {
        match c.acquire().await {
            Err(Error::Open {
                state: State::Open,
                retry_after,
                ..
            }) => {
                assert!(retry_after <= Duration::from_millis(300), "{retry_after:?}");
            }
            other => panic!("node {i}: expected a local open rejection, got {other:?}"),
        }
        assert_eq!(
            nodes[i].stats().acquire_rpcs,
            rpcs_before[i],
            "node {i} asked the coordinator"
        );
    }

    // Half-open: all 20 nodes try at once; exactly the 2 permitted probes
    // reach the upstream.
    all_until(&circuits, "half-open push", |v| {
        v.state == Some(State::HalfOpen)
    })
    .await;
    let upstream = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(NODES));
    let mut tries: Vec<JoinHandle<Option<Permit>>> = Vec::new();
    for c in &circuits {
        let (c, upstream, barrier) = (c.clone(), Arc::clone(&upstream), Arc::clone(&barrier));
        tries.push(tokio::spawn(async move {
            barrier.wait().await;
            match c.acquire().await {
                Ok(p) => {
                    assert!(!p.is_degraded(), "decided by the coordinator");
                    assert!(p.is_probe(), "a half-open permit carries a lease");
                    upstream.fetch_add(1, Ordering::SeqCst);
                    Some(p)
                }
                Err(Error::Open { state, reason, .. }) => {
                    assert_eq!(
                        (state, reason),
                        (State::HalfOpen, RejectReason::ProbesExhausted)
                    );
                    None
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }));
    }
    let mut probes = Vec::new();
    for t in tries {
        probes.extend(t.await.expect("probe task"));
    }
    println!(
        "half-open: {NODES} nodes asked at once, {} probes reached the upstream",
        upstream.load(Ordering::SeqCst)
    );
    assert_eq!(
        upstream.load(Ordering::SeqCst),
        2,
        "exactly half_open_max_probes probes"
    );

    // Both probes succeed: the fleet closes together.
    for p in probes {
        p.success();
    }
    all_until(&circuits, "closed again", |v| {
        v.state == Some(State::Closed)
    })
    .await;
    for c in &circuits {
        c.acquire().await.expect("closed again").success();
    }
    for n in &nodes {
        assert!(within("flush", n.flush()).await, "reports acknowledged");
        assert_eq!(n.dropped_reports(), 0);
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_permit_returns_its_probe_lease() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut admin = server.admin();
    set_policy(&mut admin, "inventory", fast_policy(200, 1, 1)).await;
    let a = node_with(server.addr, 1, ROOMY_RPC_TIMEOUT);
    let b = node_with(server.addr, 2, ROOMY_RPC_TIMEOUT);
    let (ca, cb) = (
        a.circuit("inventory").expect("name"),
        b.circuit("inventory").expect("name"),
    );
    for c in [&ca, &cb] {
        view_until(c, "closed snapshot", |v| v.state == Some(State::Closed)).await;
    }
    fail(&ca, 5).await;
    for c in [&ca, &cb] {
        view_until(c, "half-open push", |v| v.state == Some(State::HalfOpen)).await;
    }

    let probe = ca.acquire().await.expect("first probe");
    assert!(probe.is_probe());
    match cb.acquire().await {
        Err(Error::Open {
            reason: RejectReason::ProbesExhausted,
            ..
        }) => {}
        other => panic!("expected probes exhausted, got {other:?}"),
    }
    // Dropped without a report: IGNORED goes out at once and frees the lease
    // long before its 30 s expiry.
    let dropped_at = Instant::now();
    drop(probe);
    assert!(within("flush", a.flush()).await, "IGNORED acknowledged");
    let again = cb.acquire().await.expect("the lease came back");
    println!(
        "probe lease returned by a dropped permit after {:?}",
        dropped_at.elapsed()
    );
    assert!(again.is_probe());
    assert!(dropped_at.elapsed() < Duration::from_secs(5));
    again.success();
    view_until(&ca, "closed after the probe", |v| {
        v.state == Some(State::Closed)
    })
    .await;
    server.stop().await.expect("clean stop");
}

/// A coordinator that can be stopped and started again on the same port.
struct Restartable {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), breakerd::app::ServeError>>>,
}

const QUICK_STOP: &str = "[server]\nshutdown_drain_ms = 100\n";

impl Restartable {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener)
    }

    fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(breakerd::app::serve(config(QUICK_STOP), listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            within("server stop", t)
                .await
                .expect("server task")
                .expect("serve");
        }
    }

    /// Start again on the same address (the old listener is closed; the
    /// port may take a moment to be free again).
    async fn restart(&mut self) {
        let addr = self.addr;
        let listener = within("rebinding the same port", async move {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        *self = Self::serve(listener);
    }

    async fn admin(&self) -> AdminClient<Channel> {
        let ch = within(
            "admin connect",
            Channel::from_shared(format!("http://{}", self.addr))
                .expect("uri")
                .connect(),
        )
        .await
        .expect("admin channel");
        AdminClient::new(ch)
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_outage_degrades_without_waiting_and_recovers() {
    let _serial = SERIAL.lock().await;
    let mut server = Restartable::start().await;
    let mut admin = server.admin().await;
    set_policy(&mut admin, "search", fast_policy(60_000, 1, 1)).await;
    // Held half-open, so that every node's calls go to the coordinator when
    // it disappears: the worst case for the "never wait longer than the
    // deadline" rule.
    set_policy(&mut admin, "recs", fast_policy(200, 1, 1)).await;
    let fail_closed = pb::Policy {
        degraded_mode: Some(pb::DegradedMode::FailClosed as i32),
        ..Default::default()
    };
    set_policy(&mut admin, "ledger", fail_closed).await;
    let fail_open = pb::Policy {
        degraded_mode: Some(pb::DegradedMode::FailOpen as i32),
        ..Default::default()
    };
    set_policy(&mut admin, "ads", fail_open).await;

    let (nodes, search) = fleet(server.addr, "search", RPC_TIMEOUT);
    let recs: Vec<Circuit> = nodes
        .iter()
        .map(|n| n.circuit("recs").expect("name"))
        .collect();
    let ledger: Vec<Circuit> = nodes
        .iter()
        .map(|n| n.circuit("ledger").expect("name"))
        .collect();
    let ads: Vec<Circuit> = nodes
        .iter()
        .map(|n| n.circuit("ads").expect("name"))
        .collect();
    for set in [&search, &recs, &ledger, &ads] {
        all_until(set, "closed snapshot", |v| v.state == Some(State::Closed)).await;
    }
    connected(&nodes, true).await;
    // The probe is taken by a node outside the fleet with a roomy deadline:
    // the test is about the fleet's waits, not about whether a 30 ms probe
    // request makes it on a loaded machine (one that missed would leave
    // the probe to the load, which would close the circuit).
    let holder = node_with(server.addr, NODES, ROOMY_RPC_TIMEOUT);
    let holder_recs = holder.circuit("recs").expect("name");
    view_until(&holder_recs, "closed snapshot", |v| {
        v.state == Some(State::Closed)
    })
    .await;
    fail(&recs[0], 5).await;
    all_until(&recs, "recs half-open", |v| {
        v.state == Some(State::HalfOpen)
    })
    .await;
    view_until(&holder_recs, "recs half-open", |v| {
        v.state == Some(State::HalfOpen)
    })
    .await;
    let held_probe = holder_recs.acquire().await.expect("the one probe");
    assert!(held_probe.is_probe() && !held_probe.is_degraded());

    // Application traffic on every node, measuring how long each decision
    // takes, while the coordinator goes away.
    let running = Arc::new(AtomicBool::new(true));
    let max_wait_us = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..NODES {
        let (s, r) = (search[i].clone(), recs[i].clone());
        let (running, max_wait_us, calls) = (
            Arc::clone(&running),
            Arc::clone(&max_wait_us),
            Arc::clone(&calls),
        );
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                for c in [&s, &r] {
                    let t = Instant::now();
                    let d = c.acquire().await;
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    max_wait_us.fetch_max(us, Ordering::Relaxed);
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Ok(p) = d {
                        p.success();
                    }
                }
                // Pace the load (this does not wait for any state).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // How late this runtime wakes a 1 ms timer while the load runs: the
    // part of a measured wait that is the machine's, not the client's.
    let lag_us = Arc::new(AtomicU64::new(0));
    let lag_probe = {
        let (running, lag_us) = (Arc::clone(&running), Arc::clone(&lag_us));
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let late = t.elapsed().saturating_sub(Duration::from_millis(1));
                lag_us.fetch_max(
                    u64::try_from(late.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
        })
    };

    let stopped_at = Instant::now();
    server.stop().await;
    connected(&nodes, false).await;
    println!(
        "outage: all {NODES} nodes in degraded mode {:?} after the stop began",
        stopped_at.elapsed()
    );
    // Keep the load on a little longer in degraded mode: every node now
    // decides locally. (Waiting on the flush of node 0 paces this; it fails
    // at once since the report stream is gone.)
    let settle = calls.load(Ordering::Relaxed) + 10 * NODES as u64;
    within("degraded traffic", async {
        while calls.load(Ordering::Relaxed) < settle {
            tokio::task::yield_now().await;
        }
    })
    .await;
    running.store(false, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    lag_probe.await.expect("lag probe");
    let lag = Duration::from_micros(lag_us.load(Ordering::Relaxed));
    drop(held_probe);
    let max_wait = Duration::from_micros(max_wait_us.load(Ordering::Relaxed));
    println!(
        "outage: {} application decisions, longest wait {max_wait:?} (rpc deadline {RPC_TIMEOUT:?}, worst timer wake-up lag of the runtime meanwhile {lag:?})",
        calls.load(Ordering::Relaxed)
    );
    // The client's share of a wait is bounded by the RPC deadline; what a
    // loaded machine adds shows up as timer lag too and is allowed for, so
    // the bound stays tight on an idle machine (deadline + 50 ms) and does
    // not flake on a busy one.
    let bound = RPC_TIMEOUT + SLACK.max(lag + Duration::from_millis(20));
    assert!(
        max_wait <= bound,
        "a call waited {max_wait:?} (bound {bound:?})"
    );

    // Degraded decisions, each without waiting.
    let t = Instant::now();
    match ledger[3].acquire().await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("FAIL_CLOSED must refuse while unreachable, got {other:?}"),
    }
    let p = ads[3]
        .acquire()
        .await
        .expect("FAIL_OPEN allows while unreachable");
    assert!(p.is_degraded());
    p.success();
    // LOCAL: node 0's own breaker trips after its own 5 failures; node 1's
    // does not.
    fail(&search[0], 5).await;
    match search[0].acquire().await {
        Err(Error::Open {
            state: State::Open, ..
        }) => {}
        other => panic!("the local breaker must have tripped, got {other:?}"),
    }
    search[1]
        .acquire()
        .await
        .expect("node 1's local breaker is closed")
        .success();
    assert!(
        t.elapsed() < RPC_TIMEOUT + SLACK,
        "degraded decisions took {:?}",
        t.elapsed()
    );

    // The coordinator comes back on the same port: the nodes reconnect,
    // the fresh snapshot replaces local state, and admin changes reach them.
    server.restart().await;
    let restarted_at = Instant::now();
    connected(&nodes, true).await;
    println!(
        "recovery: all {NODES} nodes reconnected {:?} after the restart",
        restarted_at.elapsed()
    );
    search[0]
        .acquire()
        .await
        .expect("coordinated again: CLOSED on the new coordinator")
        .success();

    let mut admin = server.admin().await;
    admin
        .set_override(pb::SetOverrideRequest {
            name: "search".into(),
            kind: pb::OverrideKind::ForcedOpen as i32,
            actor: "client_e2e".into(),
            reason: "maintenance".into(),
            expires_in_ms: 0,
        })
        .await
        .expect("force open");
    all_until(&search, "forced open push", |v| {
        v.override_kind == Some(OverrideKind::ForcedOpen)
    })
    .await;
    for c in &search {
        match c.acquire().await {
            Err(Error::Open {
                reason: RejectReason::ForcedOpen,
                ..
            }) => {}
            other => panic!("expected forced open, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_seeds_the_cell_with_one_round_trip() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let n = node(server.addr, 7);
    let c = n.circuit("catalog").expect("name");
    // Straight away, before any snapshot: at most one round trip.
    c.acquire().await.expect("closed").success();
    view_until(&c, "snapshot", |v| v.state == Some(State::Closed)).await;
    let before = n.stats().acquire_rpcs;
    assert!(before <= 1, "{before} RPCs for the first call");
    for _ in 0..100 {
        c.acquire().await.expect("closed").success();
    }
    assert_eq!(
        n.stats().acquire_rpcs,
        before,
        "later calls are served from the pushed state"
    );
    assert!(matches!(
        n.circuit("bad name"),
        Err(Error::InvalidName { .. })
    ));
    // Trace ids travel as metadata on the RPC (the coordinator logs them).
    let d = n.circuit("catalog-2").expect("name");
    d.acquire_traced("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .await
        .expect("closed")
        .success();
    assert!(within("flush", n.flush()).await);
    server.stop().await.expect("clean stop");
}

/// `flush()` sends an open batch at once instead of leaving it to its tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_an_open_batch_at_once() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let n = Coordinator::builder()
        .endpoint(format!("http://{}", server.addr))
        .node_id("web-flush")
        // Not a test of deadlines: a first use that missed a 30 ms deadline
        // on a loaded machine is decided without the coordinator, and its
        // outcome is not reported.
        .rpc_timeout(ROOMY_RPC_TIMEOUT)
        // Far past the test's deadline: only flush() can send the batch.
        .flush_interval(Duration::from_secs(3600))
        .build()
        .expect("client config");
    let c = n.circuit("ledger").expect("name");
    c.acquire().await.expect("closed").success();
    // A first call on another name is an Acquire round trip, ample time
    // for the report task to open its stream and take the success into a
    // batch, which then waits for its tick.
    let d = n.circuit("ledger-2").expect("name");
    d.acquire().await.expect("closed").success();
    assert!(within("flush of an open batch", n.flush()).await);
    assert_eq!(n.stats().sent_reports, 2);
    server.stop().await.expect("clean stop");
}
