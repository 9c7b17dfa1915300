//! The three ways a fleet of web nodes can protect a dependency, behind one
//! trait so that every workload drives them identically:
//!
//! * (a) [`BreakerdFleet`]: one `breakerd_client::Coordinator` per node,
//!   talking to a `breakerd` process.
//! * (b) [`RedisFleet`]: the Redis trick of issue #4, verbatim: `GET
//!   circuit_state` before each call, `INCR fail_count` on failure, `SETEX
//!   circuit_state <ttl> OPEN` once the count reaches the threshold. One
//!   multiplexed connection per node to a real `redis-server`.
//! * (c) [`LocalFleet`]: a local in-process breaker per node and circuit
//!   (`breakerd_policy::Breaker`, the client's own policy engine) behind a
//!   mutex; the nodes share nothing.
//!
//! The simulated dependency is a [`Dep`]: healthy (succeeds at once) or
//! failing (fails after a configurable latency), and it logs when calls
//! reach it so that W3 and W4 can count them.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use breakerd_client::{Circuit, Coordinator, State};
use breakerd_policy::{Breaker, Decision, NodeId, Outcome as PolicyOutcome, Policy, Report};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;

use crate::driver::{CallFuture, Outcome};

/// The protected dependency, simulated.
#[derive(Debug)]
pub struct Dep {
    epoch: Instant,
    failing: Cell<bool>,
    fail_latency: Duration,
    t0_ns: Cell<u64>,
    log: RefCell<Vec<u64>>,
}

impl Dep {
    /// A healthy dependency that, once failing, fails after `fail_latency`
    /// (zero: at once, like a refused connection; otherwise like a timeout).
    pub fn new(epoch: Instant, fail_latency: Duration) -> Self {
        Self {
            epoch,
            failing: Cell::new(false),
            fail_latency,
            t0_ns: Cell::new(0),
            log: RefCell::new(Vec::new()),
        }
    }

    /// From now on every call fails; remembers this moment as t0.
    pub fn start_failing(&self) {
        self.t0_ns.set(self.now_ns());
        self.failing.set(true);
    }

    /// When the dependency started failing (ns since the epoch), if it has.
    pub fn t0_ns(&self) -> Option<u64> {
        self.failing.get().then(|| self.t0_ns.get())
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Times (ns since the epoch) at which calls reached the dependency
    /// while it was failing.
    pub fn failing_calls(&self) -> Vec<u64> {
        self.log.borrow().clone()
    }

    /// One call to the dependency: true when it succeeded.
    pub async fn call(&self) -> bool {
        if !self.failing.get() {
            return true;
        }
        self.log.borrow_mut().push(self.now_ns());
        if !self.fail_latency.is_zero() {
            tokio::time::sleep(self.fail_latency).await;
        }
        false
    }
}

/// When each node started rejecting (ns since the run's epoch, the same
/// as its [`Dep`]'s; 0: not yet).
#[derive(Debug)]
pub struct TripLog {
    epoch: Instant,
    at: Vec<AtomicU64>,
}

impl TripLog {
    /// For `nodes` nodes, timed from `epoch`.
    pub fn new(nodes: usize, epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            at: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Node `n` rejects from `ns` on (the first report wins).
    pub fn set(&self, n: usize, ns: u64) {
        let _ = self.at[n].compare_exchange(0, ns.max(1), Ordering::AcqRel, Ordering::Acquire);
    }

    /// Every node rejects from `ns` on (a shared state, as in Redis).
    pub fn set_all(&self, ns: u64) {
        for n in 0..self.at.len() {
            self.set(n, ns);
        }
    }

    /// Per node: when it started rejecting, if it did.
    pub fn times(&self) -> Vec<Option<u64>> {
        self.at
            .iter()
            .map(|a| match a.load(Ordering::Acquire) {
                0 => None,
                v => Some(v),
            })
            .collect()
    }
}

/// A fleet of nodes protecting calls with one of the three designs.
pub trait Fleet {
    /// "breakerd", "redis" or "local".
    fn name(&self) -> &'static str;
    /// Number of nodes.
    fn nodes(&self) -> usize;
    /// One protected call from `node` on circuit `key`: ask, call the
    /// dependency if allowed, report.
    fn call<'a>(&'a self, node: usize, key: usize, dep: &'a Dep) -> CallFuture<'a>;
}

// ---- (a) breakerd -----------------------------------------------------------

/// (a): one `Coordinator` per node.
pub struct BreakerdFleet {
    /// One coordinator connection per node.
    pub coordinators: Vec<Coordinator>,
    /// `circuits[node][key]`.
    pub circuits: Vec<Vec<Circuit>>,
}

impl BreakerdFleet {
    /// `nodes` coordinators ("node-00"...) connected to `url`.
    pub fn connect(url: &str, nodes: usize) -> Result<Self, String> {
        Self::connect_with(url, nodes, None)
    }

    /// [`connect`](Self::connect) with a report flush interval other than
    /// the client's default.
    pub fn connect_with(url: &str, nodes: usize, flush: Option<Duration>) -> Result<Self, String> {
        let coordinators = (0..nodes)
            .map(|n| {
                let mut b = Coordinator::builder()
                    .endpoint(url)
                    .node_id(format!("node-{n:02}"));
                if let Some(f) = flush {
                    b = b.flush_interval(f);
                }
                b.build().map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            coordinators,
            circuits: Vec::new(),
        })
    }

    /// Use the circuits `names` from now on, and wait (at most `timeout`)
    /// until every node knows their state from its Watch stream, so that
    /// measured calls never pay for first contact.
    pub async fn use_circuits(
        &mut self,
        names: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        self.circuits = self
            .coordinators
            .iter()
            .map(|c| {
                names
                    .iter()
                    .map(|n| c.circuit(n).map_err(|e| e.to_string()))
                    .collect()
            })
            .collect::<Result<Vec<Vec<_>>, _>>()?;
        let deadline = Instant::now() + timeout;
        loop {
            let unknown = self
                .circuits
                .iter()
                .flatten()
                .filter(|c| c.view().state.is_none())
                .count();
            if unknown == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{unknown} circuit handles still without state after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Outcomes dropped by the clients (report queue full), fleet-wide.
    pub fn dropped_reports(&self) -> u64 {
        self.coordinators
            .iter()
            .map(|c| c.stats().dropped_reports)
            .sum()
    }

    /// Unary Acquire RPCs made by the clients, fleet-wide.
    pub fn acquire_rpcs(&self) -> u64 {
        self.coordinators
            .iter()
            .map(|c| c.stats().acquire_rpcs)
            .sum()
    }

    /// Wait until every node has sent what it recorded (bounded).
    pub async fn flush(&self, timeout: Duration) {
        for c in &self.coordinators {
            let _ = tokio::time::timeout(timeout, c.flush()).await;
        }
    }

    /// Spawn one watcher per node that logs in `log` when the node's view of
    /// circuit `key` turns OPEN (the moment it rejects locally).
    pub fn watch_trips(&self, key: usize, log: &Arc<TripLog>, timeout: Duration) {
        for (n, circuits) in self.circuits.iter().enumerate() {
            let mut rx = circuits[key].subscribe();
            let log = Arc::clone(log);
            tokio::spawn(async move {
                let opened =
                    tokio::time::timeout(timeout, rx.wait_for(|v| v.state == Some(State::Open)))
                        .await;
                if matches!(opened, Ok(Ok(_))) {
                    log.set(n, log.now_ns());
                }
            });
        }
    }
}

impl Fleet for BreakerdFleet {
    fn name(&self) -> &'static str {
        "breakerd"
    }

    fn nodes(&self) -> usize {
        self.coordinators.len()
    }

    fn call<'a>(&'a self, node: usize, key: usize, dep: &'a Dep) -> CallFuture<'a> {
        let c = &self.circuits[node][key];
        Box::pin(async move {
            match c.acquire().await {
                Ok(permit) => {
                    if permit.is_degraded() {
                        DEGRADED_DECISIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if dep.call().await {
                        permit.success();
                    } else {
                        permit.failure();
                    }
                    Outcome::Allowed
                }
                Err(e) if e.is_open() => Outcome::Rejected,
                Err(_) => Outcome::Error,
            }
        })
    }
}

/// Calls (a) allowed without the coordinator (degraded mode, or a first
/// use whose Acquire missed its deadline), over all breakerd fleets.
pub static DEGRADED_DECISIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// ---- (b) the Redis trick ----------------------------------------------------

/// (b): the shared-Redis counter, one multiplexed connection per node.
pub struct RedisFleet {
    conns: Vec<MultiplexedConnection>,
    /// Per circuit: (`circuit_state` key, `fail_count` key).
    keys: Vec<(String, String)>,
    /// Failures that open the circuit.
    pub threshold: i64,
    /// `SETEX` time, in seconds.
    pub open_secs: u64,
    /// Where SETEX times are logged (W3), if anywhere.
    pub trips: Option<Arc<TripLog>>,
}

impl RedisFleet {
    /// `nodes` connections to `url`.
    pub async fn connect(url: &str, nodes: usize) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conns = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            conns.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis connect: {e}"))?,
            );
        }
        Ok(Self {
            conns,
            keys: Vec::new(),
            threshold: 5,
            open_secs: 60,
            trips: None,
        })
    }

    /// Use the circuits `names`: keys `cb:{name}:state` and `cb:{name}:fails`,
    /// deleted first so every run starts healthy.
    pub async fn use_circuits(&mut self, names: &[String]) -> Result<(), String> {
        self.keys = names
            .iter()
            .map(|n| (format!("cb:{n}:state"), format!("cb:{n}:fails")))
            .collect();
        let mut conn = self.conns[0].clone();
        for chunk in self.keys.chunks(500) {
            let mut del = redis::cmd("DEL");
            for (s, f) in chunk {
                del.arg(s).arg(f);
            }
            del.query_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A plain connection (for W1s's GET).
    pub fn connection(&self, node: usize) -> MultiplexedConnection {
        self.conns[node].clone()
    }

    /// The `circuit_state` key of circuit `key`.
    pub fn state_key(&self, key: usize) -> &str {
        &self.keys[key].0
    }
}

impl Fleet for RedisFleet {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn nodes(&self) -> usize {
        self.conns.len()
    }

    fn call<'a>(&'a self, node: usize, key: usize, dep: &'a Dep) -> CallFuture<'a> {
        let mut conn = self.conns[node].clone();
        let (state_key, fail_key) = &self.keys[key];
        Box::pin(async move {
            // GET circuit_state before each call.
            let state: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
                .arg(state_key)
                .query_async(&mut conn)
                .await;
            match state {
                Err(_) => return Outcome::Error,
                Ok(Some(v)) if v == b"OPEN" => return Outcome::Rejected,
                Ok(_) => {}
            }
            if !dep.call().await {
                // INCR fail_count on failure; SETEX circuit_state at the
                // threshold. The count is never reset: that is the trick.
                let n: redis::RedisResult<i64> = redis::cmd("INCR")
                    .arg(fail_key)
                    .query_async(&mut conn)
                    .await;
                match n {
                    Err(_) => return Outcome::Error,
                    Ok(n) if n >= self.threshold => {
                        let set: redis::RedisResult<()> = redis::cmd("SETEX")
                            .arg(state_key)
                            .arg(self.open_secs)
                            .arg("OPEN")
                            .query_async(&mut conn)
                            .await;
                        if set.is_err() {
                            return Outcome::Error;
                        }
                        if let Some(t) = &self.trips {
                            // From here on every node's next GET sees OPEN.
                            t.set_all(t.now_ns());
                        }
                    }
                    Ok(_) => {}
                }
            }
            Outcome::Allowed
        })
    }
}

// ---- (c) local breakers -----------------------------------------------------

/// (c): a `breakerd_policy::Breaker` per node and circuit, behind a mutex.
pub struct LocalFleet {
    nodes: usize,
    policy: Policy,
    /// `breakers[node][key]`.
    breakers: Vec<Vec<Mutex<Breaker>>>,
    /// Where trips are logged (W3), if anywhere.
    pub trips: Option<Arc<TripLog>>,
}

impl LocalFleet {
    /// `nodes` nodes running `policy` locally.
    pub fn new(nodes: usize, policy: Policy) -> Self {
        Self {
            nodes,
            policy,
            breakers: Vec::new(),
            trips: None,
        }
    }

    /// Fresh breakers for `circuits` circuits on every node.
    pub fn use_circuits(&mut self, circuits: usize) {
        let now = Instant::now();
        self.breakers = (0..self.nodes)
            .map(|n| {
                (0..circuits)
                    .map(|k| {
                        Mutex::new(Breaker::new(
                            self.policy.clone(),
                            1,
                            (n * 1_000_003 + k) as u64,
                            now,
                        ))
                    })
                    .collect()
            })
            .collect();
    }

    /// The breaker of `node` and circuit `key`.
    pub fn breaker(&self, node: usize, key: usize) -> &Mutex<Breaker> {
        &self.breakers[node][key]
    }
}

impl Fleet for LocalFleet {
    fn name(&self) -> &'static str {
        "local"
    }

    fn nodes(&self) -> usize {
        self.nodes
    }

    fn call<'a>(&'a self, node: usize, key: usize, dep: &'a Dep) -> CallFuture<'a> {
        let m = &self.breakers[node][key];
        Box::pin(async move {
            let id = NodeId(node as u64);
            let asked = Instant::now();
            let decision = m.lock().acquire(id, asked);
            match decision {
                Decision::Allow {
                    generation, lease, ..
                } => {
                    let ok = dep.call().await;
                    let now = Instant::now();
                    let mut b = m.lock();
                    let _ = b.record(
                        &Report {
                            generation,
                            lease: lease.map(|l| l.id),
                            outcome: if ok {
                                PolicyOutcome::Success
                            } else {
                                PolicyOutcome::Failure
                            },
                            latency: now - asked,
                            node: id,
                            completed_at: None,
                        },
                        now,
                    );
                    if let Some(t) = &self.trips
                        && b.state() == State::Open
                    {
                        t.set(node, t.now_ns());
                    }
                    Outcome::Allowed
                }
                Decision::Reject { .. } => Outcome::Rejected,
            }
        })
    }
}
