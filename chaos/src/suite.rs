//! The run itself: start the coordinator, start the fleet, go through the
//! phases, collect the figures.
//!
//! Phases, each with the legitimate load running throughout:
//! 1. warm-up;
//! 2. (i) per kill: overrides and trips written up to the moment of
//!    `kill -9`, restart on the same store and port, every acknowledged
//!    override and open state read back, nodes reconnect, a new force-open
//!    must reach every node;
//! 3. (ii) per stop: `SIGSTOP` for a few seconds, `SIGCONT`, nodes and the
//!    probe must be served again;
//! 4. (iii) flood of unique circuit names past the cap, memory sampled;
//! 5. (iv) oversized and malformed requests;
//! 6. a short steady phase after it all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breakerd_client::OverrideKind;
use breakerd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};

use crate::criteria::{Figures, KillFigures, PhaseFigures, PhaseKind, StopFigures};
use crate::durability::{
    AckedOverride, Deadline, Observed, TrippedOpen, barrier, check_open, check_override,
    split_by_barrier,
};
use crate::flood::{self, RssSample};
use crate::load::{self, Control, Fleet, FleetConfig};
use crate::malformed;
use crate::server::{Launch, Server};

/// Durations and sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Simulated nodes.
    pub nodes: usize,
    /// Client RPC deadline.
    pub rpc_timeout: Duration,
    /// Slack on top of it.
    pub slack: Duration,
    /// `--max-circuits`.
    pub max_circuits: u64,
    /// Warm-up.
    pub warmup: Duration,
    /// Kills.
    pub kills: usize,
    /// Load and writes before each kill.
    pub before_kill: Duration,
    /// Stops.
    pub stops: usize,
    /// How long each stop lasts.
    pub stop_for: Duration,
    /// Steady load after each stop.
    pub after_stop: Duration,
    /// Flood, at least.
    pub flood: Duration,
    /// Flood at most, when the cap takes longer than `flood` to reach (see
    /// [`flood::flood`]).
    pub flood_longest: Duration,
    /// Malformed input.
    pub malformed: Duration,
    /// Malformed workers.
    pub malformed_workers: usize,
    /// Steady phase at the end.
    pub tail: Duration,
    /// Niceness of the coordinator and the flood worker.
    pub nice: i32,
}

impl Plan {
    /// The `--quick` plan: about 30 s of run time.
    pub fn quick() -> Self {
        Self {
            mode: "quick",
            nodes: 20,
            rpc_timeout: Duration::from_millis(30),
            slack: Duration::from_millis(5),
            max_circuits: 20_000,
            warmup: Duration::from_secs(2),
            kills: 1,
            before_kill: Duration::from_secs(2),
            stops: 1,
            stop_for: Duration::from_secs(2),
            after_stop: Duration::from_secs(1),
            flood: Duration::from_secs(5),
            flood_longest: Duration::from_secs(20),
            malformed: Duration::from_secs(4),
            malformed_workers: 2,
            tail: Duration::from_secs(1),
            nice: 10,
        }
    }

    /// The full plan: a couple of minutes.
    pub fn full() -> Self {
        Self {
            mode: "full",
            nodes: 40,
            max_circuits: 100_000,
            warmup: Duration::from_secs(3),
            kills: 3,
            before_kill: Duration::from_secs(4),
            stops: 2,
            stop_for: Duration::from_secs(3),
            after_stop: Duration::from_secs(2),
            flood: Duration::from_secs(20),
            flood_longest: Duration::from_secs(60),
            malformed: Duration::from_secs(15),
            malformed_workers: 4,
            tail: Duration::from_secs(2),
            ..Self::quick()
        }
    }
}

/// Where and what to run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `breakerd` binary.
    pub bin: PathBuf,
    /// Config file for it.
    pub config: PathBuf,
    /// Whether the config raises rate limits.
    pub rate_limits_raised: bool,
    /// Scratch directory: store and logs.
    pub dir: PathBuf,
}

struct PhaseLog {
    name: String,
    kind: PhaseKind,
    start: Instant,
    end: Option<Instant>,
}

struct Run {
    plan: Plan,
    launch: Launch,
    server: Server,
    starts: usize,
    pid: Arc<AtomicU32>,
    control: Arc<Control>,
    phases: Vec<PhaseLog>,
    figures: Figures,
    overrides: Vec<AckedOverride>,
    opens: Vec<TrippedOpen>,
    admin: pb::admin_client::AdminClient<Channel>,
}

fn channel(addr: SocketAddr) -> Result<Channel, String> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(250))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Run {
    fn begin(&mut self, name: impl Into<String>, kind: PhaseKind) {
        let now = Instant::now();
        if let Some(last) = self.phases.last_mut() {
            last.end = Some(now);
        }
        self.phases.push(PhaseLog {
            name: name.into(),
            kind,
            start: now,
            end: None,
        });
        self.control
            .phase
            .store(self.phases.len() - 1, Ordering::Relaxed);
    }

    fn check_alive(&mut self) {
        if self.server.exit_status().is_some() {
            self.figures.unexpected_exits += 1;
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.starts += 1;
        self.server = self.launch.start(self.starts).await?;
        self.pid.store(self.server.pid(), Ordering::Relaxed);
        Ok(())
    }
}

/// Run the suite; returns its figures. `load_rt` runs the fleet.
pub async fn run(plan: Plan, setup: Setup, load_rt: Handle) -> Result<Figures, String> {
    let started = Instant::now();
    let addr = breakerd_testkit::net::free_addr()?;
    let launch = Launch {
        bin: setup.bin.clone(),
        addr,
        store: Some(setup.dir.join("store")),
        max_circuits: plan.max_circuits,
        config: Some(setup.config.clone()),
        log_dir: setup.dir.clone(),
        nice: plan.nice,
    };
    let server = launch.start(0).await?;
    let pid = Arc::new(AtomicU32::new(server.pid()));
    let control = Arc::new(Control {
        phase: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        fresh: AtomicBool::new(true),
        hard_deadline: Instant::now() + Duration::from_secs(15 * 60),
        max_calls_per_node: 2_000_000,
    });
    let samples: Arc<Mutex<Vec<RssSample>>> = Arc::default();
    let sampler = {
        let (pid, samples, control) =
            (Arc::clone(&pid), Arc::clone(&samples), Arc::clone(&control));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !control.stop.load(Ordering::Relaxed) && samples.lock().len() < 100_000 {
                tick.tick().await;
                let p = pid.load(Ordering::Relaxed);
                let rss = breakerd_testkit::procfs::rss_bytes(p).unwrap_or(0);
                samples.lock().push(RssSample {
                    at: Instant::now(),
                    pid: p,
                    rss,
                });
            }
        })
    };
    let fleet_cfg = FleetConfig {
        url: launch.url(),
        nodes: plan.nodes,
        rpc_timeout: plan.rpc_timeout,
        decision_limit: plan.rpc_timeout + plan.slack,
    };
    let fleet = Fleet::start(&load_rt, &fleet_cfg, Arc::clone(&control), Arc::clone(&pid))?;
    let admin = pb::admin_client::AdminClient::new(channel(addr)?);
    let mut run = Run {
        figures: Figures {
            mode: plan.mode.into(),
            nodes: plan.nodes,
            rpc_timeout: plan.rpc_timeout,
            slack: plan.slack,
            max_circuits: plan.max_circuits,
            rate_limits_raised: setup.rate_limits_raised,
            ..Default::default()
        },
        plan,
        launch,
        server,
        starts: 0,
        pid,
        control: Arc::clone(&control),
        phases: Vec::new(),
        overrides: Vec::new(),
        opens: Vec::new(),
        admin,
    };

    run.begin("warm-up", PhaseKind::Steady);
    if fleet
        .wait_all_connected(Duration::from_secs(10))
        .await
        .is_none()
    {
        return Err(format!(
            "only {} of {} nodes connected within 10 s",
            fleet.connected(),
            fleet.nodes.len()
        ));
    }
    tokio::time::sleep(run.plan.warmup).await;

    for k in 0..run.plan.kills {
        run.begin(format!("i kill -9 #{}", k + 1), PhaseKind::Kill);
        let figs = kill_cycle(&mut run, &fleet, k).await?;
        run.figures.kills.push(figs);
    }
    for s in 0..run.plan.stops {
        run.begin(format!("ii SIGSTOP #{}", s + 1), PhaseKind::Stop);
        let figs = stop_cycle(&mut run, &fleet).await?;
        run.figures.stops.push(figs);
        run.begin(format!("ii after stop #{}", s + 1), PhaseKind::Steady);
        tokio::time::sleep(run.plan.after_stop).await;
    }

    // Legitimate nodes stop adding names: past the cap a new name is
    // refused (RESOURCE_EXHAUSTED) by design, which says nothing about
    // whether they are served.
    control.fresh.store(false, Ordering::Relaxed);
    run.begin("iii flood", PhaseKind::Flood);
    run.check_alive();
    let baseline = run.server.rss_bytes();
    let flooded_pid = run.server.pid();
    let fl = flood::flood_in_child(
        run.plan.nice,
        &run.launch.url(),
        "1",
        run.plan.flood,
        run.plan.flood_longest,
        50_000_000,
    )
    .await?;
    let malformed_from = Instant::now();

    run.begin("iv malformed", PhaseKind::Malformed);
    run.check_alive();
    run.figures.malformed = malformed::run_in_child(
        run.plan.nice,
        addr,
        run.plan.malformed,
        run.plan.malformed_workers,
        if run.plan.mode == "quick" { 50 } else { 500 },
    )
    .await?;

    run.begin("v after", PhaseKind::Steady);
    tokio::time::sleep(run.plan.tail).await;
    run.check_alive();
    if let Some(last) = run.phases.last_mut() {
        last.end = Some(Instant::now());
    }

    let (decisions, probes, lag, noise, ticks, links) = fleet.finish().await;
    run.figures.links = links;
    run.figures.noise = noise;
    run.figures.ticks = ticks;
    run.figures.malformed_workers = run.plan.malformed_workers;
    let _ = sampler.await;
    run.figures.memory = fl.cap_at.and_then(|cap_at| {
        flood::memory_figures(
            &samples.lock(),
            flooded_pid,
            baseline,
            cap_at,
            malformed_from,
            fl.created,
        )
    });
    run.figures.flood = Some(fl);
    let phases = std::mem::take(&mut run.phases);
    run.figures.phases = phases
        .into_iter()
        .enumerate()
        .map(|(i, p)| PhaseFigures {
            name: p.name,
            kind: p.kind,
            duration: p.end.unwrap_or_else(Instant::now) - p.start,
            decisions: decisions.get(i).cloned().unwrap_or_default(),
            probes: probes.get(i).cloned().unwrap_or_default(),
            lag: lag.get(i).copied().unwrap_or_default(),
            start: p.start,
            end: p.end.unwrap_or_else(Instant::now),
        })
        .collect();
    run.figures.total = started.elapsed();
    Ok(run.figures)
}

const ACTOR: &str = "chaos-suite";

/// Set overrides until `stop`, one every few milliseconds; the
/// acknowledged ones.
async fn set_overrides(
    mut admin: pb::admin_client::AdminClient<Channel>,
    cycle: usize,
    stop: Arc<AtomicBool>,
) -> Vec<AckedOverride> {
    let kinds = [
        pb::OverrideKind::ForcedOpen,
        pb::OverrideKind::ForcedClosed,
        pb::OverrideKind::Disabled,
    ];
    let mut acked = Vec::new();
    for i in 0..5_000usize {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let kind = kinds[i % 3] as i32;
        let expires_in_ms = if i % 2 == 0 { 3_600_000 } else { 0 };
        let name = format!("chaos-ov-{cycle}-{i}");
        let reason = format!("chaos kill {cycle} override {i}");
        let mut req = tonic::Request::new(pb::SetOverrideRequest {
            name: name.clone(),
            kind,
            actor: ACTOR.into(),
            reason: reason.clone(),
            expires_in_ms,
        });
        req.set_timeout(Duration::from_secs(2));
        let sent = Instant::now();
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(3), admin.set_override(req)).await
        {
            let received = Instant::now();
            acked.push(AckedOverride {
                name,
                kind,
                reason,
                actor: ACTOR.into(),
                expires: (expires_in_ms > 0)
                    .then(|| Deadline::from_remaining(sent, received, expires_in_ms)),
                generation: r.get_ref().snapshot.as_ref().map_or(0, |s| s.generation),
                started: sent,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acked
}

/// Trip fresh circuits until `stop`; the trips whose `Report` returned.
async fn trip_circuits(channel: Channel, cycle: usize, stop: Arc<AtomicBool>) -> Vec<TrippedOpen> {
    let mut breaker = pb::breaker_client::BreakerClient::new(channel.clone());
    let mut admin = pb::admin_client::AdminClient::new(channel);
    let mut trips = Vec::new();
    let t = Duration::from_secs(2);
    for j in 0..5_000usize {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("chaos-trip-{cycle}-{j}");
        let tripped = async {
            let mut req = tonic::Request::new(pb::AcquireRequest {
                circuit: name.clone(),
                node_id: "chaos-tripper".into(),
            });
            req.set_timeout(t);
            let a = breaker.acquire(req).await.ok()?.into_inner();
            if !a.allowed {
                return None;
            }
            let mut req = tonic::Request::new(pb::ReportRequest {
                node_id: "chaos-tripper".into(),
                outcomes: vec![pb::OutcomeReport {
                    circuit: name.clone(),
                    generation: a.generation,
                    lease_id: a.lease_id,
                    outcome: pb::Outcome::Failure as i32,
                    latency_us: 1000,
                    age_us: 0,
                }],
            });
            req.set_timeout(t);
            let r = breaker.report(req).await.ok()?.into_inner();
            (r.applied == 1).then(Instant::now)
        };
        let Ok(Some(tripped_at)) = tokio::time::timeout(Duration::from_secs(5), tripped).await
        else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let mut trip = TrippedOpen {
            name: name.clone(),
            tripped_at,
            deadline: None,
            generation: 0,
        };
        let mut req = tonic::Request::new(pb::GetCircuitRequest { name });
        req.set_timeout(t);
        let sent = Instant::now();
        if let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_secs(3), admin.get_circuit(req)).await
            && let Some(o) = Observed::from_detail(d.get_ref(), sent, Instant::now())
        {
            trip.deadline = o.open;
            trip.generation = o.generation;
        }
        trips.push(trip);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    trips
}

async fn observe(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    name: &str,
) -> Result<Option<Observed>, String> {
    let mut req = tonic::Request::new(pb::GetCircuitRequest { name: name.into() });
    req.set_timeout(Duration::from_secs(2));
    let sent = Instant::now();
    match admin.get_circuit(req).await {
        Ok(d) => Ok(Observed::from_detail(d.get_ref(), sent, Instant::now())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(format!("GetCircuit {name}: {s}")),
    }
}

async fn kill_cycle(run: &mut Run, fleet: &Fleet, cycle: usize) -> Result<KillFigures, String> {
    let mut figs = KillFigures::default();
    run.check_alive();
    let addr = run.launch.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let setter = tokio::spawn(set_overrides(
        pb::admin_client::AdminClient::new(channel(addr)?),
        cycle,
        Arc::clone(&stop),
    ));
    let tripper = tokio::spawn(trip_circuits(channel(addr)?, cycle, Arc::clone(&stop)));
    tokio::time::sleep(run.plan.before_kill).await;
    let generations_before = fleet.generations();
    // The writers are mid-flight: whatever they have not heard back about
    // is not acknowledged.
    run.server.kill9();
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let acked = setter.await.map_err(|e| e.to_string())?;
    let trips = tripper.await.map_err(|e| e.to_string())?;
    let (acked_trips, tail) = split_by_barrier(&trips, barrier(&acked));

    run.restart().await?;
    figs.downtime = run.server.serving_at - killed;
    figs.store_load_ms = run.server.facts.lock().store_load_ms;
    let from = Instant::now();
    let reconnect = fleet.wait_all_connected(Duration::from_secs(10)).await;
    figs.reconnect = reconnect.map(|d| (from - run.server.serving_at) + d);

    let d = &mut run.figures.durability;
    d.overrides_acked += acked.len();
    d.opens_acked += acked_trips.len();
    d.tail_opens += tail.len();
    run.overrides.extend(acked);
    run.opens.extend(acked_trips);
    let tolerance = crate::criteria::DRIFT_TOLERANCE;
    for a in run.overrides.clone() {
        let got = observe(&mut run.admin, &a.name).await?;
        let v = check_override(&a, got.as_ref(), tolerance);
        run.figures.durability.absorb(&v, 0);
    }
    for t in run.opens.clone() {
        let got = observe(&mut run.admin, &t.name).await?;
        let v = check_open(&t, got.as_ref(), tolerance);
        run.figures.durability.absorb(&v, 1);
    }
    for t in &tail {
        let got = observe(&mut run.admin, &t.name).await?;
        let v = check_open(t, got.as_ref(), tolerance);
        run.figures.durability.absorb(&v, 2);
    }
    // Tail trips that survived are kept for the later restarts' checks:
    // from now on they are durable and must stay so.
    let survivors: Vec<TrippedOpen> = {
        let mut s = Vec::new();
        for t in tail {
            if let Some(o) = observe(&mut run.admin, &t.name).await?
                && o.state == pb::CircuitState::Open as i32
            {
                s.push(t);
            }
        }
        s
    };
    run.opens.extend(survivors);

    let generations_after = fleet.generations();
    figs.node_generations_back = generations_before
        .iter()
        .zip(&generations_after)
        .filter(|(b, a)| a < b)
        .count();

    // Clients follow state again: a new force-open reaches every node.
    figs.follow = set_follow(run, fleet, true).await;
    figs.follow_clear = set_follow(run, fleet, false).await;
    Ok(figs)
}

/// Force [`load::FOLLOW`] open (or clear it) and time until every node sees
/// it.
async fn set_follow(run: &mut Run, fleet: &Fleet, open: bool) -> Option<Duration> {
    let sent = Instant::now();
    let result = if open {
        run.admin
            .set_override(pb::SetOverrideRequest {
                name: load::FOLLOW.into(),
                kind: pb::OverrideKind::ForcedOpen as i32,
                actor: ACTOR.into(),
                reason: "chaos: do clients follow state after a restart?".into(),
                expires_in_ms: 0,
            })
            .await
            .map(|_| ())
    } else {
        run.admin
            .clear_override(pb::ClearOverrideRequest {
                name: load::FOLLOW.into(),
                actor: ACTOR.into(),
                reason: "chaos: follow check done".into(),
            })
            .await
            .map(|_| ())
    };
    result.ok()?;
    let want = open.then_some(OverrideKind::ForcedOpen);
    // Timed from the request: the admin answer itself waits for the disk.
    fleet
        .wait_follow(want, Duration::from_secs(5))
        .await
        .map(|_| sent.elapsed())
}

async fn stop_cycle(run: &mut Run, fleet: &Fleet) -> Result<StopFigures, String> {
    run.check_alive();
    let stopped = Instant::now();
    run.server.stop()?;
    tokio::time::sleep(run.plan.stop_for).await;
    let nodes_down_at_resume = fleet.nodes.len() - fleet.connected();
    run.server.resume()?;
    let resumed = Instant::now();
    let stopped = resumed - stopped;
    let probe = async {
        let mut client = pb::breaker_client::BreakerClient::new(channel(run.launch.addr).ok()?);
        let deadline = resumed + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut req = tonic::Request::new(pb::AcquireRequest {
                circuit: load::PROBE_CIRCUIT.into(),
                node_id: "chaos-probe-resume".into(),
            });
            req.set_timeout(run.plan.rpc_timeout);
            if let Ok(Ok(_)) = tokio::time::timeout(run.plan.rpc_timeout, client.acquire(req)).await
            {
                return Some(resumed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    };
    let (reconnect, probe_answered) =
        tokio::join!(fleet.wait_all_connected(Duration::from_secs(10)), probe);
    Ok(StopFigures {
        stopped,
        nodes_down_at_resume,
        reconnect,
        probe_answered,
    })
}
