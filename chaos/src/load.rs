//! The legitimate load: simulated web nodes, each a real
//! [`breakerd_client::Coordinator`] making protected calls in a bounded
//! loop, and one legitimate probe making unary Acquires on a connection of
//! its own.
//!
//! Every application call is timed from before `acquire` to after its
//! outcome is queued (the whole cost the breaker adds to a call), and
//! counted in the phase that is current when it ends.
//!
//! Circuits each node uses (patterns configured in [`crate::config`]):
//! - `chaos-steady-N`: a healthy dependency; always succeeds.
//! - `chaos-flaky-N`: fails 20 % of the time, trips after 3 consecutive
//!   failures and stays open 300 ms, so circuits keep going through
//!   `OPEN` → `HALF_OPEN` and nodes keep asking the coordinator for probe
//!   leases: unary RPCs, the only place a call can wait on the network.
//! - `chaos-follow`: used by the "new override reaches every node" check.
//! - `chaos-fresh-<node>-N`: while enabled, a new name every 250 ms (at most
//!   100 per node); its first use is a unary Acquire too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breakerd_client::{Circuit, Coordinator, Error, OverrideKind};
use breakerd_proto::v1 as pb;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::noise::{Noise, Sampler};
use crate::stats::{Decided, Decisions, LagEvent, Probes};

/// Healthy circuits per node.
pub const STEADY: usize = 8;
/// Flaky circuits per node.
pub const FLAKY: usize = 4;
/// The circuit of the follow check.
pub const FOLLOW: &str = "chaos-follow";
/// The circuit the legitimate probe asks about.
pub const PROBE_CIRCUIT: &str = "chaos-steady-0";
/// Pause between two calls of one node.
const PACE: Duration = Duration::from_millis(5);
/// Pause between two probes.
const PROBE_PACE: Duration = Duration::from_millis(20);
/// Fresh names per node, at most.
const FRESH_MAX: usize = 100;

/// What the orchestrator tells the load while it runs.
#[derive(Debug)]
pub struct Control {
    /// Index of the current phase.
    pub phase: AtomicUsize,
    /// Set to end every loop.
    pub stop: AtomicBool,
    /// Whether nodes keep using fresh circuit names.
    pub fresh: AtomicBool,
    /// No loop runs past this, whatever happens.
    pub hard_deadline: Instant,
    /// Most calls one node makes.
    pub max_calls_per_node: u64,
}

impl Control {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.hard_deadline
    }

    fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed)
    }
}

/// One simulated web node.
#[derive(Clone)]
pub struct Node {
    /// Its connection to the coordinator.
    pub coordinator: Coordinator,
    /// Its handle on [`FOLLOW`].
    pub follow: Circuit,
    /// Its steady and flaky circuits.
    pub circuits: Vec<(Circuit, bool)>,
}

/// The running fleet.
pub struct Fleet {
    /// The nodes (for connectivity and view checks).
    pub nodes: Vec<Node>,
    /// Shared control.
    pub control: Arc<Control>,
    tasks: Vec<JoinHandle<Vec<Decisions>>>,
    probe: JoinHandle<Vec<Probes>>,
    ticker: JoinHandle<Vec<LagEvent>>,
    links: Vec<JoinHandle<Vec<LinkChange>>>,
    noise: std::thread::JoinHandle<(Noise, Vec<Duration>)>,
}

/// A node's link to the coordinator changed: (node, when, connected).
pub type LinkChange = (usize, Instant, bool);

/// Every connectivity change of node `n` until the fleet stops.
async fn watch_link(n: usize, node: Node, control: Arc<Control>) -> Vec<LinkChange> {
    let mut rx = node.coordinator.connectivity();
    let mut out = Vec::new();
    while control.running() && out.len() < 100_000 {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await {
            if r.is_err() {
                break;
            }
            out.push((n, Instant::now(), *rx.borrow_and_update()));
        }
    }
    out
}

/// Settings of the fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Coordinator URL.
    pub url: String,
    /// Nodes.
    pub nodes: usize,
    /// The client's RPC deadline.
    pub rpc_timeout: Duration,
    /// The most one decision may wait (deadline + slack).
    pub decision_limit: Duration,
}

impl Fleet {
    /// Build the nodes on `rt` and start their loops and the probe.
    pub fn start(
        rt: &Handle,
        cfg: &FleetConfig,
        control: Arc<Control>,
        coordinator_pid: Arc<AtomicU32>,
    ) -> Result<Fleet, String> {
        let _enter = rt.enter();
        let ticker = rt.spawn(run_ticker(Arc::clone(&control)));
        let noise = {
            let control = Arc::clone(&control);
            let sampler = Sampler::new(coordinator_pid);
            std::thread::Builder::new()
                .name("chaos-noise".into())
                .spawn(move || sampler.run(|| control.running(), || control.phase()))
                .map_err(|e| format!("noise thread: {e}"))?
        };
        // Its first observation comes before the first call.
        std::thread::sleep(Duration::from_millis(5));
        let mut nodes = Vec::with_capacity(cfg.nodes);
        for n in 0..cfg.nodes {
            let coordinator = Coordinator::builder()
                .endpoint(cfg.url.clone())
                .node_id(format!("chaos-node-{n}"))
                .rpc_timeout(cfg.rpc_timeout)
                .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
                .build()
                .map_err(|e| format!("client: {e}"))?;
            let mut circuits = Vec::new();
            for i in 0..STEADY {
                let c = coordinator
                    .circuit(&format!("chaos-steady-{i}"))
                    .map_err(|e| e.to_string())?;
                circuits.push((c, false));
            }
            for i in 0..FLAKY {
                let c = coordinator
                    .circuit(&format!("chaos-flaky-{i}"))
                    .map_err(|e| e.to_string())?;
                circuits.push((c, true));
            }
            let follow = coordinator.circuit(FOLLOW).map_err(|e| e.to_string())?;
            nodes.push(Node {
                coordinator,
                follow,
                circuits,
            });
        }
        let tasks = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                rt.spawn(run_node(
                    n,
                    node.clone(),
                    Arc::clone(&control),
                    cfg.decision_limit,
                ))
            })
            .collect();
        let links = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| rt.spawn(watch_link(n, node.clone(), Arc::clone(&control))))
            .collect();
        let probe = rt.spawn(run_probe(
            cfg.url.clone(),
            cfg.rpc_timeout,
            Arc::clone(&control),
        ));
        Ok(Fleet {
            nodes,
            control,
            tasks,
            probe,
            ticker,
            links,
            noise,
        })
    }

    /// Nodes whose Watch stream is up.
    pub fn connected(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.coordinator.is_connected())
            .count()
    }

    /// Wait until every node is connected, at most `limit`; returns how
    /// long it took.
    pub async fn wait_all_connected(&self, limit: Duration) -> Option<Duration> {
        wait_until(limit, || self.connected() == self.nodes.len()).await
    }

    /// Wait until every node's view of [`FOLLOW`] shows override `kind`
    /// (`None`: no override), at most `limit`.
    pub async fn wait_follow(
        &self,
        kind: Option<OverrideKind>,
        limit: Duration,
    ) -> Option<Duration> {
        wait_until(limit, || {
            self.nodes
                .iter()
                .all(|n| n.follow.view().override_kind == kind)
        })
        .await
    }

    /// The highest generation any node has seen for each of its circuits
    /// (steady and flaky, in node order).
    pub fn generations(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .flat_map(|n| n.circuits.iter().map(|(c, _)| c.view().generation))
            .collect()
    }

    /// Stop every loop and collect the figures per phase: (decisions,
    /// probes, worst scheduling lag), what the noise sampler saw, and the
    /// late ticks of the load runtime.
    pub async fn finish(
        self,
    ) -> (
        Vec<Decisions>,
        Vec<Probes>,
        Vec<Duration>,
        Noise,
        Vec<LagEvent>,
        Vec<LinkChange>,
    ) {
        self.control.stop.store(true, Ordering::Relaxed);
        let mut decisions: Vec<Decisions> = Vec::new();
        for t in self.tasks {
            if let Ok(per_phase) = t.await {
                for (i, d) in per_phase.iter().enumerate() {
                    if decisions.len() <= i {
                        decisions.resize_with(i + 1, Decisions::default);
                    }
                    decisions[i].merge(d);
                }
            }
        }
        let probes = self.probe.await.unwrap_or_default();
        let ticks = self.ticker.await.unwrap_or_default();
        let mut links = Vec::new();
        for l in self.links {
            links.extend(l.await.unwrap_or_default());
        }
        let noise = self.noise;
        let (noise, lag) = tokio::task::spawn_blocking(move || noise.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        (decisions, probes, lag, noise, ticks, links)
    }
}

/// Poll `done` every 2 ms for at most `limit`; the time it took.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

fn classify(e: &Error) -> Decided {
    match e {
        Error::Open { .. } => Decided::Open,
        Error::Unavailable { .. } => Decided::Unavailable,
        _ => Decided::Refused,
    }
}

async fn run_node(n: usize, node: Node, control: Arc<Control>, limit: Duration) -> Vec<Decisions> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + n as u64);
    let mut out: Vec<Decisions> = Vec::new();
    let mut calls = 0u64;
    let mut fresh = 0usize;
    let mut last_fresh = Instant::now();
    while control.running() && calls < control.max_calls_per_node {
        calls += 1;
        let (circuit, flaky) = if control.fresh.load(Ordering::Relaxed)
            && fresh < FRESH_MAX
            && last_fresh.elapsed() >= Duration::from_millis(250)
        {
            last_fresh = Instant::now();
            fresh += 1;
            match node
                .coordinator
                .circuit(&format!("chaos-fresh-{n}-{fresh}"))
            {
                Ok(c) => (c, false),
                Err(_) => continue,
            }
        } else if calls.is_multiple_of(16) {
            (node.follow.clone(), false)
        } else {
            let i = rng.random_range(0..node.circuits.len());
            node.circuits[i].clone()
        };
        let fail = flaky && rng.random_bool(0.2);
        let rpcs = node.coordinator.stats().acquire_rpcs;
        let t0 = Instant::now();
        let decided = match circuit.acquire().await {
            Ok(permit) => {
                let d = if permit.is_degraded() {
                    Decided::Degraded
                } else {
                    Decided::Coordinated
                };
                if fail {
                    permit.failure();
                } else {
                    permit.success();
                }
                d
            }
            Err(e) => classify(&e),
        };
        let wait = t0.elapsed();
        let rpc = node.coordinator.stats().acquire_rpcs != rpcs;
        let d = slot(&mut out, control.phase());
        d.record_call(decided, t0, wait, limit, rpc);
        if decided == Decided::Degraded {
            d.note_degraded(n, t0);
        }
        tokio::time::sleep(PACE).await;
    }
    out
}

/// Lag of the load runtime itself: how much later than asked a 1 ms
/// `tokio::time::sleep` on it wakes (timer granularity, task scheduling and
/// the box together). Every wake-up more than 1 ms late, at most 200 000.
async fn run_ticker(control: Arc<Control>) -> Vec<LagEvent> {
    let mut events = Vec::new();
    let tick = Duration::from_millis(1);
    while control.running() {
        let t = Instant::now();
        tokio::time::sleep(tick).await;
        // The timer rounds up to its next 1 ms slot: up to 2 ms is on time.
        let late = t.elapsed().saturating_sub(2 * tick);
        if !late.is_zero() && events.len() < 200_000 {
            events.push((Instant::now(), late));
        }
    }
    events
}

async fn run_probe(url: String, deadline: Duration, control: Arc<Control>) -> Vec<Probes> {
    let mut out: Vec<Probes> = Vec::new();
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url) else {
        return out;
    };
    let channel = endpoint
        .connect_timeout(Duration::from_millis(250))
        .tcp_nodelay(true)
        .connect_lazy();
    let mut client = pb::breaker_client::BreakerClient::new(channel);
    let mut sent = 0u64;
    while control.running() && sent < 1_000_000 {
        sent += 1;
        let mut req = tonic::Request::new(pb::AcquireRequest {
            circuit: PROBE_CIRCUIT.into(),
            node_id: "chaos-probe".into(),
        });
        req.set_timeout(deadline);
        let started = Instant::now();
        let res = tokio::time::timeout(deadline, client.acquire(req)).await;
        let p = slot(&mut out, control.phase());
        let code = match &res {
            Ok(Ok(_)) => None,
            Ok(Err(s)) => Some(s.code()),
            Err(_) => Some(tonic::Code::DeadlineExceeded),
        };
        if code.is_none() {
            p.ok += 1;
            p.slowest = p.slowest.max(started.elapsed());
        } else {
            p.failed += 1;
            if p.failures.len() < 10_000 {
                p.failures.push((started, code, res.is_err()));
            }
        }
        tokio::time::sleep(PROBE_PACE).await;
    }
    out
}
