//! The workloads of issue #4, W1 to W7. Each returns plain numbers; `main`
//! puts them into the results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use breakerd_client::Circuit;
use breakerd_policy::{Breaker, Decision, NodeId, Outcome as PolicyOutcome, Report};
use breakerd_proto::v1 as pb;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::driver::{self, Outcome, Plan, RunResult};
use crate::fleet::{BreakerdFleet, Dep, Fleet, LocalFleet, RedisFleet, TripLog};
use crate::keys::{Keys, Rng};
use crate::procs::{Launcher, Proc};
use crate::stats::{Hist, median, percentile};

/// Simulated web nodes in the fleet workloads.
pub const NODES: usize = 50;
/// Circuits in W2 and W7.
pub const CIRCUITS: usize = 1000;
/// The latency bound of W2 and W7: the highest rate whose p99 stays within
/// it is the throughput.
pub const P99_LIMIT: Duration = Duration::from_millis(1);
/// Half-open probe budget of the W3/W4 circuits (`probes_configured`).
pub const PROBES: u32 = 3;
/// Consecutive failures that trip, in all three designs (the seed's 5).
pub const THRESHOLD: u32 = 5;
/// Open time of the W3/W4 circuits: 1 s, the shortest `SETEX` can say.
pub const OPEN_MS: u64 = 1000;
/// Fleet-wide offered rate of W3 and W4 (100 calls/s per node).
pub const TRIP_RATE: f64 = 5_000.0;
/// Fleet-wide offered rate of W5.
pub const KILL_RATE: f64 = 10_000.0;
/// The client's RPC deadline (its default): W5 measures after it.
pub const FIRST_DEADLINE: Duration = Duration::from_millis(30);

/// How long and how often: `--quick` or the full run.
#[derive(Debug, Clone)]
pub struct Scale {
    /// True for `--quick`.
    pub quick: bool,
    /// Repeats of each measurement (the median is reported).
    pub repeats: usize,
    /// Timed calls per W1 repeat for (a) and (c).
    pub w1_local_calls: u64,
    /// Timed calls per W1 repeat for (b).
    pub w1_redis_calls: u64,
    /// Duration of one W1s run.
    pub w1s_duration: Duration,
    /// Duration of one W2/W7 rate step.
    pub step: Duration,
    /// Repeats of W3/W4.
    pub trip_repeats: usize,
    /// Duration of one W5 run.
    pub kill_run: Duration,
    /// Circuit counts of W6 (cumulative stages).
    pub w6_stages: Vec<u64>,
}

impl Scale {
    /// The settings of a full or a `--quick` run.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                repeats: 1,
                w1_local_calls: 200_000,
                w1_redis_calls: 4_000,
                w1s_duration: Duration::from_millis(1000),
                step: Duration::from_millis(400),
                trip_repeats: 2,
                kill_run: Duration::from_millis(1500),
                w6_stages: vec![10_000, 100_000],
            }
        } else {
            Self {
                quick,
                repeats: 3,
                w1_local_calls: 1_000_000,
                w1_redis_calls: 20_000,
                w1s_duration: Duration::from_secs(3),
                step: Duration::from_secs(2),
                trip_repeats: 5,
                kill_run: Duration::from_secs(3),
                w6_stages: vec![10_000, 100_000, 1_000_000],
            }
        }
    }
}

/// The W3/W4 policy, for the coordinator config and the local breakers.
pub fn trip_policy_spec() -> breakerd_policy::PolicySpec {
    breakerd_policy::PolicySpec {
        consecutive_failures: Some(THRESHOLD),
        open_base_ms: Some(OPEN_MS),
        open_jitter: Some(0.0),
        half_open_max_probes: Some(PROBES),
        successes_to_close: Some(1),
        ..Default::default()
    }
}

/// The coordinator config of every run: room for every circuit, no
/// eviction during the run, no per-client rate limits (one load generator
/// plays 50 nodes, and W6 creates a million circuits from one peer), and
/// the W3/W4 policy on `trip-*`. Everything else is the default.
pub fn main_config(max_circuits: u64) -> String {
    format!(
        "[limits]\nmax_circuits = {max_circuits}\nidle_evict_after_ms = 2592000000\n\
         client_requests_per_second = 0\nclient_new_circuits_per_minute = 0\n\n\
         [[circuits]]\npattern = \"trip-*\"\n\
         policy = {{ consecutive_failures = {THRESHOLD}, open_base_ms = {OPEN_MS}, open_jitter = 0.0, \
         half_open_max_probes = {PROBES}, successes_to_close = 1 }}\n"
    )
}

/// Circuit names of W2/W7.
pub fn w2_names() -> Vec<String> {
    (0..CIRCUITS).map(|k| format!("w2-{k:04}")).collect()
}

// ---- W1 ---------------------------------------------------------------------

/// Per-call decision overhead on a healthy circuit, ask + report.
#[derive(Debug, Clone, Default)]
pub struct W1 {
    /// Median over repeats of each repeat's p50 / p99, ns, timer cost
    /// subtracted: (a), (b), (c).
    pub p50_ns: [f64; 3],
    /// Same, p99.
    pub p99_ns: [f64; 3],
    /// Cost of reading the clock twice (subtracted above), ns.
    pub timer_ns: f64,
    /// Outcomes the client dropped during the (a) loops (must be 0).
    pub a_dropped: u64,
}

fn timer_cost(n: u64) -> f64 {
    let mut h = Hist::new();
    for _ in 0..n {
        let t = Instant::now();
        h.record(t.elapsed().as_nanos() as u64);
    }
    h.p(50.0) as f64
}

fn local_call(m: &Mutex<Breaker>, node: NodeId) -> bool {
    let asked = Instant::now();
    let d = m.lock().acquire(node, asked);
    match d {
        Decision::Allow {
            generation, lease, ..
        } => {
            let now = Instant::now();
            let _ = m.lock().record(
                &Report {
                    generation,
                    lease: lease.map(|l| l.id),
                    outcome: PolicyOutcome::Success,
                    latency: now - asked,
                    node,
                    completed_at: None,
                },
                now,
            );
            true
        }
        Decision::Reject { .. } => false,
    }
}

async fn w1_breakerd_once(c: &Circuit, n: u64) -> Hist {
    let mut h = Hist::new();
    for i in 0..n {
        if i % 256 == 0 {
            // Let the report task drain the queue, outside the timed part.
            tokio::task::yield_now().await;
        }
        let t = Instant::now();
        match c.acquire().await {
            Ok(p) => p.success(),
            Err(e) => panic!("W1: healthy circuit rejected a call: {e}"),
        }
        h.record(t.elapsed().as_nanos() as u64);
    }
    h
}

/// W1: (a) a `CLOSED` circuit through the client, (b) one GET (the Redis
/// trick does nothing on success), (c) a local breaker behind a mutex.
pub async fn w1(scale: &Scale, a: &BreakerdFleet, b: &RedisFleet, c: &LocalFleet) -> W1 {
    let timer = timer_cost(200_000);
    let dep = Dep::new(Instant::now(), Duration::ZERO);
    let mut per: [Vec<(f64, f64)>; 3] = Default::default();
    let dropped_before = a.dropped_reports();
    for _ in 0..scale.repeats.max(3) {
        let h = w1_breakerd_once(&a.circuits[0][0], scale.w1_local_calls).await;
        per[0].push((h.p(50.0) as f64, h.p(99.0) as f64));

        let mut h = Hist::new();
        for _ in 0..scale.w1_redis_calls {
            let t = Instant::now();
            let o = b.call(0, 0, &dep).await;
            h.record(t.elapsed().as_nanos() as u64);
            assert_eq!(o, Outcome::Allowed, "W1: Redis rejected a healthy call");
        }
        per[1].push((h.p(50.0) as f64, h.p(99.0) as f64));

        let mut h = Hist::new();
        let m = c.breaker(0, 0);
        for _ in 0..scale.w1_local_calls {
            let t = Instant::now();
            let ok = local_call(m, NodeId(0));
            h.record(t.elapsed().as_nanos() as u64);
            assert!(ok, "W1: local breaker rejected a healthy call");
        }
        per[2].push((h.p(50.0) as f64, h.p(99.0) as f64));
    }
    let mut out = W1 {
        timer_ns: timer,
        a_dropped: a.dropped_reports() - dropped_before,
        ..Default::default()
    };
    for (s, runs) in per.iter().enumerate() {
        let p50: Vec<f64> = runs.iter().map(|x| (x.0 - timer).max(0.0)).collect();
        let p99: Vec<f64> = runs.iter().map(|x| (x.1 - timer).max(0.0)).collect();
        out.p50_ns[s] = median(&p50);
        out.p99_ns[s] = median(&p99);
    }
    out
}

// ---- W1s --------------------------------------------------------------------

/// W1s: one strict unary Acquire RPC against one Redis GET.
#[derive(Debug, Clone, Default)]
pub struct W1s {
    /// Offered rate, per second.
    pub rate: f64,
    /// (a) Acquire p50 / p99, µs.
    pub a_us: (f64, f64),
    /// Redis GET p50 / p99, µs.
    pub get_us: (f64, f64),
    /// Coordinator CPU per Acquire, µs.
    pub a_server_cpu_us: f64,
    /// Redis CPU per GET, µs.
    pub get_server_cpu_us: f64,
}

/// W1s at a fixed offered rate, open loop, one connection each.
pub async fn w1s(
    scale: &Scale,
    server: &Proc,
    redis: &Proc,
    b: &RedisFleet,
) -> Result<W1s, String> {
    let rate = 2_000.0;
    let plan = Plan {
        rate,
        duration: scale.w1s_duration,
        grace: Duration::from_secs(1),
        max_in_flight: 1_000,
    };
    let channel = tonic::transport::Endpoint::from_shared(server.http_url())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let client = pb::breaker_client::BreakerClient::new(channel);
    let conn = b.connection(0);
    let key = b.state_key(0).to_owned();
    // Warm both connections up.
    for _ in 0..100 {
        let _ = client
            .clone()
            .acquire(pb::AcquireRequest {
                circuit: "w1s".into(),
                node_id: "bench".into(),
            })
            .await;
        let _ = redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<Vec<u8>>>(&mut conn.clone())
            .await;
    }
    let mut a = Vec::new();
    let mut g = Vec::new();
    let mut cpu = (Vec::new(), Vec::new());
    for _ in 0..scale.repeats {
        let cpu0 = server.cpu_seconds();
        let r = driver::run(&plan, false, |_| {
            let mut client = client.clone();
            Box::pin(async move {
                let req = pb::AcquireRequest {
                    circuit: "w1s".into(),
                    node_id: "bench".into(),
                };
                match client.acquire(req).await {
                    Ok(r) if r.get_ref().allowed => Outcome::Allowed,
                    Ok(_) => Outcome::Rejected,
                    Err(_) => Outcome::Error,
                }
            })
        })
        .await;
        if r.errors > 0 || r.overloaded {
            return Err(format!(
                "W1s Acquire: {} errors, overloaded={}",
                r.errors, r.overloaded
            ));
        }
        a.push((r.hist.p(50.0) as f64 / 1e3, r.hist.p(99.0) as f64 / 1e3));
        cpu.0
            .push((server.cpu_seconds() - cpu0) * 1e6 / r.completed.max(1) as f64);
        let cpu0 = redis.cpu_seconds();
        let r = driver::run(&plan, false, |_| {
            let mut conn = conn.clone();
            let key = key.as_str();
            Box::pin(async move {
                match redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                {
                    Ok(_) => Outcome::Allowed,
                    Err(_) => Outcome::Error,
                }
            })
        })
        .await;
        if r.errors > 0 || r.overloaded {
            return Err(format!(
                "W1s GET: {} errors, overloaded={}",
                r.errors, r.overloaded
            ));
        }
        g.push((r.hist.p(50.0) as f64 / 1e3, r.hist.p(99.0) as f64 / 1e3));
        cpu.1
            .push((redis.cpu_seconds() - cpu0) * 1e6 / r.completed.max(1) as f64);
    }
    let m = |v: &[(f64, f64)]| {
        (
            median(&v.iter().map(|x| x.0).collect::<Vec<_>>()),
            median(&v.iter().map(|x| x.1).collect::<Vec<_>>()),
        )
    };
    Ok(W1s {
        rate,
        a_us: m(&a),
        get_us: m(&g),
        a_server_cpu_us: median(&cpu.0),
        get_server_cpu_us: median(&cpu.1),
    })
}

// ---- W2 / W7: throughput ------------------------------------------------------

/// One rate step of a ramp.
#[derive(Debug, Clone)]
pub struct Step {
    /// Offered calls per second.
    pub offered: f64,
    /// Achieved calls per second.
    pub achieved: f64,
    /// p50 / p99 / max latency, µs.
    pub p50_us: f64,
    /// p99, µs.
    pub p99_us: f64,
    /// Max, µs.
    pub max_us: f64,
    /// Coordinator CPU seconds per million calls.
    pub server_cpu_s_per_m: f64,
    /// Outcomes the clients dropped (breakerd only).
    pub dropped: u64,
    /// Unary Acquire RPCs the clients had to make (breakerd only; 0 when
    /// every decision was local).
    pub rpcs: u64,
    /// Whether the step held the rate within the p99 bound.
    pub ok: bool,
}

impl Step {
    fn json(&self) -> Value {
        json!({
            "offered": self.offered.round(), "achieved": self.achieved.round(),
            "p50_us": round2(self.p50_us), "p99_us": round2(self.p99_us), "max_us": round2(self.max_us),
            "server_cpu_s_per_m": round3(self.server_cpu_s_per_m),
            "dropped_reports": self.dropped, "acquire_rpcs": self.rpcs, "ok": self.ok,
        })
    }
}

/// The throughput of one design under one key distribution.
#[derive(Debug, Clone, Default)]
pub struct Ramp {
    /// Median over repeats of the highest sustained rate, calls/s.
    pub calls_per_s: f64,
    /// At that rate (median repeat): coordinator CPU s per million calls.
    pub server_cpu_s_per_m: f64,
    /// At that rate: p99, µs.
    pub p99_us: f64,
    /// Every step of every repeat.
    pub steps: Vec<Step>,
}

impl Ramp {
    /// The ramp as JSON.
    pub fn json(&self) -> Value {
        json!({
            "calls_per_s": self.calls_per_s.round(),
            "server_cpu_s_per_million": round3(self.server_cpu_s_per_m),
            "p99_us_at_max": round2(self.p99_us),
            "steps": self.steps.iter().map(Step::json).collect::<Vec<_>>(),
        })
    }
}

/// What a ramp drives.
pub enum Target<'f> {
    /// (a), with its coordinator process.
    Breakerd(&'f BreakerdFleet, &'f Proc),
    /// (b), with its Redis process.
    Redis(&'f RedisFleet, &'f Proc),
    /// (c): no coordinator.
    Local(&'f LocalFleet),
}

impl Target<'_> {
    fn fleet(&self) -> &dyn Fleet {
        match self {
            Target::Breakerd(f, _) => *f,
            Target::Redis(f, _) => *f,
            Target::Local(f) => *f,
        }
    }

    fn server(&self) -> Option<&Proc> {
        match self {
            Target::Breakerd(_, p) | Target::Redis(_, p) => Some(p),
            Target::Local(_) => None,
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Target::Breakerd(f, _) => f.dropped_reports(),
            _ => 0,
        }
    }

    fn rpcs(&self) -> u64 {
        match self {
            Target::Breakerd(f, _) => f.acquire_rpcs(),
            _ => 0,
        }
    }

    async fn settle(&self) {
        if let Target::Breakerd(f, _) = self {
            f.flush(Duration::from_secs(5)).await;
        }
    }
}

async fn step(scale: &Scale, target: &Target<'_>, keys: &Keys, rate: f64, seed: u64) -> Step {
    let fleet = target.fleet();
    let dep = Dep::new(Instant::now(), Duration::ZERO);
    let plan = Plan {
        rate,
        duration: scale.step,
        grace: Duration::from_millis(500),
        max_in_flight: 20_000,
    };
    let nodes = fleet.nodes() as u64;
    let mut rng = Rng::new(seed);
    let server_cpu0 = target.server().map_or(0.0, Proc::cpu_seconds);
    let dropped0 = target.dropped();
    let rpcs0 = target.rpcs();
    let r: RunResult = driver::run(&plan, false, |i| {
        let key = keys.sample(&mut rng);
        fleet.call((i % nodes) as usize, key, &dep)
    })
    .await;
    // Reports still queued are part of the work: wait for the coordinator
    // to acknowledge them before reading its CPU time.
    target.settle().await;
    let server_cpu = target
        .server()
        .map_or(0.0, |p| p.cpu_seconds() - server_cpu0);
    let dropped = target.dropped() - dropped0;
    let per_m = |cpu: f64| cpu / (r.completed.max(1) as f64 / 1e6);
    Step {
        offered: rate,
        achieved: r.achieved,
        p50_us: r.hist.p(50.0) as f64 / 1e3,
        p99_us: r.hist.p(99.0) as f64 / 1e3,
        max_us: r.hist.max() as f64 / 1e3,
        server_cpu_s_per_m: per_m(server_cpu),
        dropped,
        rpcs: target.rpcs() - rpcs0,
        ok: r.sustained(P99_LIMIT) && dropped == 0 && r.errors == 0 && r.rejected == 0,
    }
}

/// One step at `rate`, run a second time if it fails: a rate holds when
/// either run holds. A single stall of the shared machine (another process,
/// the hypervisor) long enough to push 1 % of a step's calls past 1 ms
/// would otherwise end a ramp far below the limit; a real limit fails both
/// runs. Both runs are recorded; the one that decides is returned.
async fn held_step(
    scale: &Scale,
    target: &Target<'_>,
    keys: &Keys,
    rate: f64,
    seed: u64,
    out: &mut Ramp,
) -> Step {
    let first = step(scale, target, keys, rate, seed).await;
    out.steps.push(first.clone());
    if first.ok {
        return first;
    }
    // Seeds of first runs stay far below 2^32.
    let second = step(scale, target, keys, rate, seed + (1 << 32)).await;
    out.steps.push(second.clone());
    second
}

/// Double the offered rate from `start` until a step fails (p99 over 1 ms,
/// rate not held, reports dropped or errors; each rate gets two tries, see
/// [`held_step`]), then bisect (geometrically) twice between the last good
/// and the first failing rate, so the result is within 19 % below the true
/// limit; repeat and take the median.
pub async fn ramp(scale: &Scale, target: &Target<'_>, keys: &Keys, start: f64) -> Ramp {
    const MAX_RATE: f64 = 50_000_000.0;
    const MIN_RATE: f64 = 500.0;
    let mut out = Ramp::default();
    let mut bests: Vec<Step> = Vec::new();
    let mut from = start;
    for rep in 0..scale.repeats {
        let mut best: Option<Step> = None;
        let mut rate = from;
        let mut failed_at = None;
        for k in 0..25u64 {
            let s = held_step(scale, target, keys, rate, rep as u64 * 1000 + k, &mut out).await;
            let ok = s.ok;
            if !ok && best.is_none() && rate / 2.0 >= MIN_RATE {
                // Not even the first rate held (a busy machine): come down
                // until one does, rather than report nothing.
                rate /= 2.0;
                continue;
            }
            if ok {
                best = Some(s);
                if rate * 2.0 > MAX_RATE {
                    break;
                }
                rate *= 2.0;
            } else {
                failed_at = Some(rate);
                break;
            }
        }
        for k in 0..2u64 {
            let (Some(lo), Some(hi)) = (best.as_ref().map(|b| b.offered), failed_at) else {
                break;
            };
            let mid = (lo * hi).sqrt();
            let s = held_step(
                scale,
                target,
                keys,
                mid,
                rep as u64 * 1000 + 100 + k,
                &mut out,
            )
            .await;
            if s.ok {
                best = Some(s);
            } else {
                failed_at = Some(mid);
            }
        }
        if let Some(b) = best {
            // The next repeat starts a little below this one's result.
            from = (b.offered * 0.5).max(start);
            bests.push(b);
        } else {
            bests.push(Step {
                offered: 0.0,
                achieved: 0.0,
                p50_us: f64::NAN,
                p99_us: f64::NAN,
                max_us: f64::NAN,
                server_cpu_s_per_m: f64::NAN,
                dropped: 0,
                rpcs: 0,
                ok: false,
            });
        }
    }
    bests.sort_by(|a, b| a.achieved.total_cmp(&b.achieved));
    let mid = &bests[bests.len() / 2];
    out.calls_per_s = median(&bests.iter().map(|s| s.achieved).collect::<Vec<_>>());
    out.server_cpu_s_per_m = mid.server_cpu_s_per_m;
    out.p99_us = mid.p99_us;
    out
}

// ---- W3 / W4: trip and recovery -----------------------------------------------

/// W3 or W4 for one design.
#[derive(Debug, Clone, Default)]
pub struct TripResult {
    /// Per repeat: calls that reached the failing dependency in the counted
    /// window.
    pub counts: Vec<u64>,
    /// Per node and repeat: ms from t0 until the node rejected (W3).
    pub propagation_ms: Vec<f64>,
    /// Node-repeats that had not started rejecting by the end of the run.
    pub never_rejected: u64,
    /// With injected stalls: stalls and their total ms, over all repeats.
    pub stalls: usize,
    pub stalled_ms: usize,
    /// (a) only: per repeat, calls allowed without the coordinator.
    pub degraded: Vec<u64>,
}

impl TripResult {
    /// Median of the per-repeat counts.
    pub fn median_count(&self) -> f64 {
        median(&self.counts.iter().map(|&c| c as f64).collect::<Vec<_>>())
    }

    /// The result as JSON.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "per_repeat": self.counts,
            "median": self.median_count(),
        });
        if !self.degraded.is_empty() {
            v["degraded_decisions_per_repeat"] = json!(self.degraded);
        }
        if self.stalls > 0 {
            v["stalls"] = json!(self.stalls);
            v["stalled_ms"] = json!(self.stalled_ms);
        }
        if !self.propagation_ms.is_empty() || self.never_rejected > 0 {
            v["propagation_ms_p50"] = json!(round3(percentile(&self.propagation_ms, 50.0)));
            v["propagation_ms_p99"] = json!(round3(percentile(&self.propagation_ms, 99.0)));
            v["propagation_ms_max"] = json!(round3(percentile(&self.propagation_ms, 100.0)));
            v["never_rejected"] = json!(self.never_rejected);
        }
        v
    }
}

/// Which of the trip workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripKind {
    /// W3: the dependency fails fast from t0; count calls reaching it after
    /// t0 (run ends 500 ms after t0).
    Trip,
    /// W4: the dependency fails by timing out (20 ms) from t0; count calls
    /// reaching it from t0 + 500 ms to t0 + 1800 ms, which holds the first
    /// half-open period of every design and no second one.
    Recovery,
}

/// The designs a trip workload runs on.
pub enum TripTarget<'f> {
    /// (a).
    Breakerd(&'f mut BreakerdFleet),
    /// (b).
    Redis(&'f mut RedisFleet),
    /// (c).
    Local(&'f mut LocalFleet),
}

/// Run W3 or W4 on one design, `repeats` times, each on a fresh circuit.
/// With `stalls`, this process (the load generator and every simulated
/// node) is stopped for 20-50 ms at random throughout each run
/// (`stall.rs`).
pub async fn trip(
    kind: TripKind,
    repeats: usize,
    stalls: bool,
    mut target: TripTarget<'_>,
) -> Result<TripResult, String> {
    let pre = Duration::from_millis(200);
    let (post, fail_latency, window) = match kind {
        TripKind::Trip => (Duration::from_millis(500), Duration::ZERO, (0u64, 500u64)),
        TripKind::Recovery => (
            Duration::from_millis(1800),
            Duration::from_millis(20),
            (500, 1800),
        ),
    };
    let tag = match kind {
        TripKind::Trip => "w3",
        TripKind::Recovery => "w4",
    };
    let mut out = TripResult::default();
    for rep in 0..repeats {
        // A circuit never used before, whatever ran earlier.
        static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let names = vec![format!("trip-{tag}-{run}-{rep}")];
        let epoch = Instant::now();
        let log = TripLog::new(NODES, epoch);
        match &mut target {
            TripTarget::Breakerd(f) => {
                f.use_circuits(&names, Duration::from_secs(10)).await?;
                if kind == TripKind::Trip {
                    f.watch_trips(0, &log, pre + post + Duration::from_secs(1));
                }
            }
            TripTarget::Redis(f) => {
                f.use_circuits(&names).await?;
                f.threshold = i64::from(THRESHOLD);
                f.open_secs = OPEN_MS / 1000;
                f.trips = Some(Arc::clone(&log));
            }
            TripTarget::Local(f) => {
                f.use_circuits(1);
                f.trips = Some(Arc::clone(&log));
            }
        }
        let fleet: &dyn Fleet = match &target {
            TripTarget::Breakerd(f) => &**f,
            TripTarget::Redis(f) => &**f,
            TripTarget::Local(f) => &**f,
        };
        let dep = Dep::new(epoch, fail_latency);
        let plan = Plan {
            rate: TRIP_RATE,
            duration: pre + post,
            grace: Duration::from_secs(1),
            max_in_flight: 20_000,
        };
        let t0_index = (TRIP_RATE * pre.as_secs_f64()) as u64;
        let injector = if stalls {
            let s = crate::stall::Stalls::start(pre + post, run.wrapping_mul(7919) ^ rep as u64)?;
            out.stalls += s.planned;
            out.stalled_ms += s.planned_ms;
            Some(s)
        } else {
            None
        };
        let degraded_before =
            crate::fleet::DEGRADED_DECISIONS.load(std::sync::atomic::Ordering::Relaxed);
        let r = driver::run(&plan, false, |i| {
            if i == t0_index {
                dep.start_failing();
            }
            fleet.call((i % NODES as u64) as usize, 0, &dep)
        })
        .await;
        if matches!(target, TripTarget::Breakerd(_)) {
            out.degraded.push(
                crate::fleet::DEGRADED_DECISIONS.load(std::sync::atomic::Ordering::Relaxed)
                    - degraded_before,
            );
        }
        if let Some(s) = injector {
            s.finish();
        }
        if r.errors > 0 {
            return Err(format!(
                "{tag} {}: {} breaker errors",
                fleet.name(),
                r.errors
            ));
        }
        // Let the watchers note the last pushes.
        tokio::task::yield_now().await;
        let t0 = dep.t0_ns().ok_or("the dependency never started failing")?;
        let (lo, hi) = (t0 + window.0 * 1_000_000, t0 + window.1 * 1_000_000);
        let count = dep
            .failing_calls()
            .iter()
            .filter(|&&t| t >= lo && t < hi)
            .count() as u64;
        out.counts.push(count);
        if kind == TripKind::Trip {
            for t in log.times() {
                match t {
                    Some(t) => out.propagation_ms.push(t.saturating_sub(t0) as f64 / 1e6),
                    None => out.never_rejected += 1,
                }
            }
        }
        match &mut target {
            TripTarget::Redis(f) => f.trips = None,
            TripTarget::Local(f) => f.trips = None,
            TripTarget::Breakerd(_) => {}
        }
    }
    Ok(out)
}

// ---- W5: the coordinator dies ---------------------------------------------------

/// W5 for one design.
#[derive(Debug, Clone, Default)]
pub struct KillResult {
    /// p99 before the kill, ms (median over repeats).
    pub before_p99_ms: f64,
    /// p99 of calls due from the first deadline after the kill on, ms.
    pub after_p99_ms: f64,
    /// Added p99 (after - before, at least 0), ms.
    pub added_p99_ms: f64,
    /// Worst latency of calls due within the first deadline after the
    /// kill, ms.
    pub first_deadline_max_ms: f64,
    /// Errors the application saw after the kill (median over repeats).
    pub errors: f64,
    /// Calls made after the kill (median over repeats).
    pub calls_after_kill: f64,
}

impl KillResult {
    /// The result as JSON.
    pub fn json(&self) -> Value {
        json!({
            "before_p99_ms": round3(self.before_p99_ms),
            "after_first_deadline_p99_ms": round3(self.after_p99_ms),
            "added_p99_ms": round3(self.added_p99_ms),
            "first_deadline_window_max_ms": round3(self.first_deadline_max_ms),
            "errors_after_kill": self.errors,
            "calls_after_kill": self.calls_after_kill,
        })
    }
}

/// W5 on (a) or (b): 50 nodes, 100 circuits, uniform keys at a fixed rate;
/// the coordinator (or Redis) is SIGKILLed a third of the way in and not
/// restarted.
pub async fn kill(scale: &Scale, launcher: &Launcher, redis: bool) -> Result<KillResult, String> {
    let names: Vec<String> = (0..100).map(|k| format!("w5-{k:03}")).collect();
    let mut per: Vec<KillResult> = Vec::new();
    for _ in 0..scale.repeats {
        let epoch = Instant::now();
        let mut server = if redis {
            launcher.redis("w5")?
        } else {
            launcher.breakerd("w5", &main_config(10_000))?
        };
        let fleet: Box<dyn Fleet> = if redis {
            let mut f = RedisFleet::connect(&server.redis_url(), NODES).await?;
            f.use_circuits(&names).await?;
            Box::new(f)
        } else {
            let mut f = BreakerdFleet::connect(&server.http_url(), NODES)?;
            f.use_circuits(&names, Duration::from_secs(20)).await?;
            Box::new(f)
        };
        let dep = Dep::new(epoch, Duration::ZERO);
        let plan = Plan {
            rate: KILL_RATE,
            duration: scale.kill_run,
            grace: Duration::from_secs(2),
            max_in_flight: 50_000,
        };
        let total = (KILL_RATE * scale.kill_run.as_secs_f64()) as u64;
        let kill_index = total / 3;
        let deadline_index = kill_index + (KILL_RATE * FIRST_DEADLINE.as_secs_f64()) as u64;
        let mut rng = Rng::new(5);
        let server_cell = std::cell::RefCell::new(&mut server);
        let r = driver::run(&plan, true, |i| {
            if i == kill_index {
                server_cell.borrow_mut().kill();
            }
            fleet.call((i % NODES as u64) as usize, rng.below(names.len()), &dep)
        })
        .await;
        drop(fleet);
        let mut before = Hist::new();
        let mut first = Hist::new();
        let mut after = Hist::new();
        let mut errors = 0u64;
        for s in &r.samples {
            if s.index < kill_index {
                before.record(s.latency_ns);
            } else {
                if s.outcome == Outcome::Error {
                    errors += 1;
                }
                if s.index < deadline_index {
                    first.record(s.latency_ns);
                } else {
                    after.record(s.latency_ns);
                }
            }
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        per.push(KillResult {
            before_p99_ms: ms(before.p(99.0)),
            after_p99_ms: ms(after.p(99.0)),
            added_p99_ms: (ms(after.p(99.0)) - ms(before.p(99.0))).max(0.0),
            first_deadline_max_ms: ms(first.max()),
            errors: errors as f64,
            calls_after_kill: (r.samples.len() as u64).saturating_sub(kill_index) as f64,
        });
    }
    let m = |f: fn(&KillResult) -> f64| median(&per.iter().map(f).collect::<Vec<_>>());
    Ok(KillResult {
        before_p99_ms: m(|k| k.before_p99_ms),
        after_p99_ms: m(|k| k.after_p99_ms),
        added_p99_ms: m(|k| k.added_p99_ms),
        first_deadline_max_ms: m(|k| k.first_deadline_max_ms),
        errors: m(|k| k.errors),
        calls_after_kill: m(|k| k.calls_after_kill),
    })
}

// ---- W6: memory -----------------------------------------------------------------

/// One W6 stage.
#[derive(Debug, Clone)]
pub struct MemStage {
    /// Circuits created so far (beyond the warm-up).
    pub circuits: u64,
    /// Bytes per circuit: breakerd RSS delta.
    pub breakerd_rss: f64,
    /// Bytes per circuit: Redis `used_memory` delta.
    pub redis_used: f64,
    /// Bytes per circuit: Redis `used_memory_rss` delta.
    pub redis_rss: f64,
    /// Seconds it took breakerd to create the stage's circuits.
    pub breakerd_secs: f64,
}

impl MemStage {
    /// The stage as JSON.
    pub fn json(&self) -> Value {
        json!({
            "circuits": self.circuits,
            "breakerd_rss_bytes_per_circuit": self.breakerd_rss.round(),
            "redis_used_memory_bytes_per_circuit": self.redis_used.round(),
            "redis_rss_bytes_per_circuit": self.redis_rss.round(),
            "breakerd_create_seconds": round2(self.breakerd_secs),
        })
    }
}

async fn create_circuits(
    clients: &[pb::breaker_client::BreakerClient<tonic::transport::Channel>],
    from: u64,
    to: u64,
) -> Result<(), String> {
    let results = futures_util::stream::iter(from..to)
        .map(|i| {
            let mut c = clients[(i % clients.len() as u64) as usize].clone();
            async move {
                c.acquire(pb::AcquireRequest {
                    circuit: format!("mem-{i:08}"),
                    node_id: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("W6 Acquire {i}: {e}"))
            }
        })
        .buffer_unordered(256);
    futures_util::pin_mut!(results);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

async fn redis_used_memory(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<(f64, f64), String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        info_field(&info, "used_memory"),
        info_field(&info, "used_memory_rss"),
    ))
}

/// A numeric field of Redis `INFO` output; NaN when missing.
pub fn info_field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// W6: circuits created through Acquire on a fresh breakerd (over four
/// connections), against the Redis trick's two keys per circuit on a fresh
/// redis-server.
pub async fn memory(scale: &Scale, launcher: &Launcher) -> Result<Vec<MemStage>, String> {
    let largest = scale.w6_stages.iter().copied().max().unwrap_or(0);
    let server = launcher.breakerd("w6", &main_config(largest + 100_000))?;
    let redis_proc = launcher.redis("w6")?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let ch = tonic::transport::Endpoint::from_shared(server.http_url())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        clients.push(pb::breaker_client::BreakerClient::new(ch));
    }
    let warm = 1_000u64;
    create_circuits(&clients, 0, warm).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = server.rss_bytes() as f64;

    let client = redis::Client::open(redis_proc.redis_url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let (base_used, base_rrss) = redis_used_memory(&mut conn).await?;

    let mut stages = Vec::new();
    let mut done = 0u64;
    for &n in &scale.w6_stages {
        let t = Instant::now();
        create_circuits(&clients, warm + done, warm + n).await?;
        let secs = t.elapsed().as_secs_f64();
        let mut i = done;
        while i < n {
            let end = (i + 1_000).min(n);
            let mut pipe = redis::pipe();
            for k in i..end {
                let name = format!("mem-{:08}", warm + k);
                pipe.cmd("SETEX")
                    .arg(format!("cb:{name}:state"))
                    .arg(3600)
                    .arg("OPEN")
                    .ignore();
                pipe.cmd("INCR").arg(format!("cb:{name}:fails")).ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            i = end;
        }
        done = n;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = server.rss_bytes() as f64;
        let (used, rrss) = redis_used_memory(&mut conn).await?;
        stages.push(MemStage {
            circuits: n,
            breakerd_rss: (rss - base_rss) / n as f64,
            redis_used: (used - base_used) / n as f64,
            redis_rss: (rrss - base_rrss) / n as f64,
            breakerd_secs: secs,
        });
    }
    Ok(stages)
}

/// `x` rounded to 2 decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `x` rounded to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_info_fields_are_parsed() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:4194304\r\n";
        assert_eq!(info_field(info, "used_memory"), 1_048_576.0);
        assert_eq!(info_field(info, "used_memory_rss"), 4_194_304.0);
        assert!(info_field(info, "maxmemory").is_nan());
    }

    #[test]
    fn the_trip_policy_is_valid_and_matches_the_config() {
        let p = breakerd_policy::Policy::default()
            .apply(&trip_policy_spec())
            .unwrap();
        assert_eq!(p.half_open_max_probes(), PROBES);
        let cfg = main_config(1000);
        assert!(cfg.contains("half_open_max_probes = 3"), "{cfg}");
        assert!(cfg.contains("pattern = \"trip-*\""));
    }
}
