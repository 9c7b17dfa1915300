//! The pass criteria of issue #5 item 5, evaluated from the figures of a
//! run, and the summary the suite prints. Pure: no I/O but the returned
//! text.
//!
//! 1. No application call waits longer than the client deadline (plus a
//!    stated slack for scheduling) for its breaker decision, and p99 of all
//!    decision waits stays within that bound.
//! 2. No acknowledged override or open state is lost (see
//!    [`crate::durability`] for "acknowledged"), deadlines keep counting
//!    down across the restart, and generations never go back.
//! 3. Memory stays within 110 % of its plateau at the circuit cap (see
//!    [`crate::flood`]).
//! 4. Legitimate clients keep being served: they reconnect and follow state
//!    after a kill or a stop, and keep getting answers (and coordinated
//!    decisions) during the flood and the malformed input.
//! 5. Every malformed or oversized request is refused, none hangs, and the
//!    coordinator never dies.
//!
//! The quick run is a CI gate on shared machines, where the suite, the
//! coordinator and whatever else runs there share a few cores. There a
//! decision over the bound, a failed legitimate probe or a call allowed by
//! degraded mode is left out when the measured noise explains it (see
//! [`crate::noise`]): the box kept the fleet's threads from a core, or
//! stood still, at least as long as the decision overran; or took at least
//! half a probe's deadline from the fleet or the coordinator; or did so
//! when the node lost its link. The p99 bound counts every decision
//! whatever the noise, so a client that got slower for everyone still
//! fails; the full run counts everything, and both print what noise
//! explained.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::durability::DurabilityFigures;
use crate::flood::{FloodFigures, MemoryFigures};
use crate::malformed::CaseFigures;
use crate::malformed::MAX_MESSAGE;
use crate::noise::{Group, Noise};
use crate::stats::{Decisions, LagEvent, Probes, ratio};

/// Largest drift of a deadline across a restart: the coordinator keeps
/// deadlines as Unix milliseconds on disk and reports remaining times in
/// whole milliseconds, so a few milliseconds are rounding; more means the
/// downtime was not counted (or counted twice).
pub const DRIFT_TOLERANCE: Duration = Duration::from_millis(25);

/// What a phase was, for the criteria that only apply to some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    /// Normal load.
    Steady,
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP / SIGCONT.
    Stop,
    /// Unique-name flood.
    Flood,
    /// Oversized and malformed input.
    Malformed,
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct PhaseFigures {
    /// Label.
    pub name: String,
    /// What it was.
    pub kind: PhaseKind,
    /// How long it lasted.
    pub duration: Duration,
    /// The load's decisions.
    pub decisions: Decisions,
    /// The legitimate probe.
    pub probes: Probes,
    /// Worst scheduling lag of the fleet's runtime (a 1 ms sleep woken this
    /// much late, beyond the timer's 1 ms resolution).
    pub lag: Duration,
    /// When it began.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
}

/// One kill -9 and restart.
#[derive(Debug, Clone, Default)]
pub struct KillFigures {
    /// From the kill to the restarted coordinator answering SERVING.
    pub downtime: Duration,
    /// `store_load_ms` of the restart.
    pub store_load_ms: Option<u64>,
    /// From SERVING until every node's Watch was up again.
    pub reconnect: Option<Duration>,
    /// From an acknowledged force-open until every node saw it.
    pub follow: Option<Duration>,
    /// From its clearing until every node saw that.
    pub follow_clear: Option<Duration>,
    /// Node circuits whose generation went back across the restart.
    pub node_generations_back: usize,
}

/// One SIGSTOP / SIGCONT.
#[derive(Debug, Clone, Default)]
pub struct StopFigures {
    /// How long it was stopped.
    pub stopped: Duration,
    /// Nodes that had noticed (degraded mode) when it was resumed.
    pub nodes_down_at_resume: usize,
    /// From SIGCONT until every node's Watch was up.
    pub reconnect: Option<Duration>,
    /// From SIGCONT until the legitimate probe was answered.
    pub probe_answered: Option<Duration>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// `quick` or `full`.
    pub mode: String,
    /// Simulated nodes.
    pub nodes: usize,
    /// The client's RPC deadline.
    pub rpc_timeout: Duration,
    /// Scheduling slack allowed on top of it.
    pub slack: Duration,
    /// `--max-circuits`.
    pub max_circuits: u64,
    /// Whether the rate limits were raised in the config.
    pub rate_limits_raised: bool,
    /// Per phase.
    pub phases: Vec<PhaseFigures>,
    /// Per kill.
    pub kills: Vec<KillFigures>,
    /// Durability checks over all kills.
    pub durability: DurabilityFigures,
    /// Per stop.
    pub stops: Vec<StopFigures>,
    /// The flood.
    pub flood: Option<FloodFigures>,
    /// Memory around the flood.
    pub memory: Option<MemoryFigures>,
    /// Malformed cases.
    pub malformed: Vec<CaseFigures>,
    /// Times the coordinator exited without being killed by the suite.
    pub unexpected_exits: usize,
    /// Wall-clock time of the whole run.
    pub total: Duration,
    /// What the noise sampler saw: run-queue time of the load and
    /// coordinator threads, late wake-ups of its own timer.
    pub noise: Noise,
    /// Late 1 ms ticks of the load runtime.
    pub ticks: Vec<LagEvent>,
    /// Every connectivity change of every node.
    pub links: Vec<crate::load::LinkChange>,
    /// Concurrent clients of the malformed phase.
    pub malformed_workers: usize,
}

/// The bounds the criteria use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a decision may wait: deadline + slack.
    pub decision: Duration,
    /// Longest the nodes may take to reconnect after the coordinator is
    /// back (their reconnect backoff is capped at 500 ms).
    pub reconnect: Duration,
    /// Longest a new override may take to reach every node.
    pub follow: Duration,
    /// Largest deadline drift across a restart.
    pub drift: Duration,
    /// Memory may grow to this factor of the plateau.
    pub memory_factor: f64,
    /// Least share of legitimate probes answered in the flood and malformed
    /// phases.
    pub probe_rate: f64,
    /// Least share of allowed decisions made from coordinator state in the
    /// flood and malformed phases.
    pub coordinated_share: f64,
    /// Whether decisions over the bound, failed probes and degraded calls
    /// that the measured scheduling noise explains are left out (the quick
    /// run, a CI gate on shared machines); the full run counts them all.
    pub noise_tolerant: bool,
}

impl Limits {
    /// The bounds for a client deadline and slack.
    pub fn new(rpc_timeout: Duration, slack: Duration) -> Self {
        Self {
            decision: rpc_timeout + slack,
            reconnect: Duration::from_secs(3),
            follow: Duration::from_secs(1),
            drift: DRIFT_TOLERANCE,
            memory_factor: 1.10,
            probe_rate: 0.95,
            coordinated_share: 0.95,
            noise_tolerant: true,
        }
    }

    /// The same bounds, counting every overrun, failed probe and degraded
    /// call whatever the noise (the full run).
    pub fn strict(mut self) -> Self {
        self.noise_tolerant = false;
        self
    }
}

/// One criterion's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The measured figure.
    pub figure: String,
    /// The bound.
    pub bound: String,
    /// Whether it holds.
    pub pass: bool,
}

fn check(name: impl Into<String>, figure: String, bound: String, pass: bool) -> Check {
    Check {
        name: name.into(),
        figure,
        bound,
        pass,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), ms)
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Evaluate every criterion.
pub fn evaluate(f: &Figures, l: &Limits) -> Vec<Check> {
    let mut out = Vec::new();
    let mut all = Decisions::default();
    for p in &f.phases {
        all.merge(&p.decisions);
    }
    let max_wait = Duration::from_micros(all.max_wait_us);
    let p99 = Duration::from_micros(all.quantile_us(0.99));
    let unexplained: Vec<Duration> = all
        .overruns
        .iter()
        .filter(|o| !f.noise.explains_overrun(o.start, o.wait, l.decision))
        .map(|o| o.wait)
        .collect();
    // Overruns beyond those kept are unexplained by definition.
    let untracked = all.over_limit.saturating_sub(all.overruns.len() as u64);
    let unexplained_n = unexplained.len() as u64 + untracked;
    let worst_unexplained = unexplained.iter().copied().max().unwrap_or_default();
    if l.noise_tolerant {
        out.push(check(
            "1 decision wait over deadline+slack, not the box's noise",
            format!(
                "{} of {} (max wait {}; {} over, {} explained by noise)",
                unexplained_n,
                all.total(),
                ms(max_wait),
                all.over_limit,
                all.over_limit - unexplained_n,
            ),
            format!("0 over {}", ms(l.decision)),
            all.total() > 0 && unexplained_n == 0,
        ));
        if unexplained_n > 0 {
            out.push(check(
                "1 worst unexplained decision wait",
                if untracked > 0 {
                    format!("{} (+{untracked} not kept)", ms(worst_unexplained))
                } else {
                    ms(worst_unexplained)
                },
                format!("<= {}", ms(l.decision)),
                false,
            ));
        }
    } else {
        out.push(check(
            "1 decision wait over deadline+slack",
            format!(
                "{} of {} (max wait {}; {} of them explained by noise)",
                all.over_limit,
                all.total(),
                ms(max_wait),
                all.over_limit - unexplained_n,
            ),
            format!("0 over {}", ms(l.decision)),
            all.total() > 0 && all.over_limit == 0,
        ));
    }
    out.push(check(
        "1 p99 decision wait, all phases",
        ms(p99),
        format!("<= {}", ms(l.decision)),
        all.total() > 0 && p99 <= l.decision,
    ));

    let d = &f.durability;
    out.push(check(
        "2 acknowledged overrides lost",
        format!(
            "{} lost of {} checks ({} acknowledged)",
            d.overrides_lost, d.overrides_checked, d.overrides_acked
        ),
        "0 lost, > 0 checked".into(),
        d.overrides_lost == 0 && d.overrides_checked > 0,
    ));
    out.push(check(
        "2 acknowledged open states lost",
        format!(
            "{} lost of {} checks ({} acknowledged)",
            d.opens_lost, d.opens_checked, d.opens_acked
        ),
        "0 lost, > 0 checked".into(),
        d.opens_lost == 0 && d.opens_checked > 0,
    ));
    out.push(check(
        "2 deadline drift across restarts",
        ms(d.max_drift),
        format!("<= {}", ms(l.drift)),
        d.max_drift <= l.drift,
    ));
    let node_back: usize = f.kills.iter().map(|k| k.node_generations_back).sum();
    out.push(check(
        "2 generations gone back",
        format!("{} durable, {} node views", d.generations_back, node_back),
        "0".into(),
        d.generations_back == 0 && node_back == 0,
    ));

    match &f.memory {
        Some(m) => {
            let limit = (m.plateau as f64 * l.memory_factor) as u64;
            out.push(check(
                "3 RSS while the flood goes on past the cap",
                format!("max {}, plateau {}", mib(m.max_flood), mib(m.plateau)),
                format!("<= {} (plateau x {:.2})", mib(limit), l.memory_factor),
                m.max_flood <= limit && m.samples_after > 1,
            ));
            // Each request in flight may hold up to max_message_bytes.
            let budget = (f.malformed_workers * MAX_MESSAGE) as u64;
            out.push(check(
                "3 RSS under malformed / oversized input",
                mib(m.max_later),
                format!(
                    "<= {} (cap limit + {} clients x {})",
                    mib(limit + budget),
                    f.malformed_workers,
                    mib(MAX_MESSAGE as u64)
                ),
                m.max_later <= limit + budget,
            ));
        }
        None => out.push(check(
            "3 RSS while the flood goes on past the cap",
            "cap never reached".into(),
            "cap reached".into(),
            false,
        )),
    }

    for (i, k) in f.kills.iter().enumerate() {
        out.push(check(
            format!("4 kill #{}: nodes reconnected after restart", i + 1),
            opt_ms(k.reconnect),
            format!("<= {}", ms(l.reconnect)),
            k.reconnect.is_some_and(|r| r <= l.reconnect),
        ));
        let follow = k.follow.max(k.follow_clear);
        out.push(check(
            format!("4 kill #{}: new override / clear seen by all nodes", i + 1),
            format!("{} / {}", opt_ms(k.follow), opt_ms(k.follow_clear)),
            format!("<= {}", ms(l.follow)),
            k.follow.is_some() && k.follow_clear.is_some() && follow.is_some_and(|x| x <= l.follow),
        ));
    }
    for (i, s) in f.stops.iter().enumerate() {
        out.push(check(
            format!(
                "4 stop #{}: served again after SIGCONT (nodes / probe)",
                i + 1
            ),
            format!("{} / {}", opt_ms(s.reconnect), opt_ms(s.probe_answered)),
            format!("<= {}", ms(l.reconnect)),
            s.reconnect.is_some_and(|r| r <= l.reconnect)
                && s.probe_answered.is_some_and(|r| r <= l.reconnect),
        ));
    }
    for p in f
        .phases
        .iter()
        .filter(|p| matches!(p.kind, PhaseKind::Flood | PhaseKind::Malformed))
    {
        out.push(probes_check(f, l, p));
        out.push(share_check(f, l, p));
    }
    if let Some(fl) = &f.flood {
        out.push(check(
            "3 flood met the circuit cap",
            format!(
                "{} created, {} RESOURCE_EXHAUSTED",
                fl.created, fl.exhausted
            ),
            "RESOURCE_EXHAUSTED seen".into(),
            fl.exhausted > 0,
        ));
    }

    let runs: u64 = f.malformed.iter().map(|c| c.runs).sum();
    let accepted: u64 = f.malformed.iter().map(|c| c.accepted).sum();
    let hung: u64 = f.malformed.iter().map(|c| c.hung).sum();
    out.push(check(
        "5 malformed / oversized requests refused",
        format!("{accepted} accepted, {hung} hung, of {runs}"),
        "0 accepted, 0 hung".into(),
        runs > 0 && accepted == 0 && hung == 0,
    ));
    out.push(check(
        "5 coordinator exits not caused by the suite",
        f.unexpected_exits.to_string(),
        "0".into(),
        f.unexpected_exits == 0,
    ));
    out
}

/// Failed probes of `p` that had at least half their deadline taken by the
/// box (see [`Noise::explains_failure`]).
pub fn explained_probe_failures(f: &Figures, p: &PhaseFigures) -> u64 {
    p.probes
        .failures
        .iter()
        .filter(|(at, _, _)| f.noise.explains_failure(*at, f.rpc_timeout))
        .count() as u64
}

/// Calls of `p` allowed by degraded mode whose node went degraded when the
/// box had taken at least half of an RPC deadline from the fleet or the
/// coordinator (see [`Noise::explains_failure`]): the last time the node
/// lost its link before the call, within the decision bound before it.
pub fn explained_degraded_calls(f: &Figures, l: &Limits, p: &PhaseFigures) -> u64 {
    p.decisions
        .degraded_calls
        .iter()
        .filter(|(node, at)| {
            f.links
                .iter()
                .filter(|(n, t, up)| n == node && !up && t <= at)
                .map(|(_, t, _)| *t)
                .max()
                .is_some_and(|down| {
                    f.noise.explains_failure(
                        down.checked_sub(l.decision).unwrap_or(down),
                        f.rpc_timeout,
                    )
                })
        })
        .count() as u64
}

fn probes_check(f: &Figures, l: &Limits, p: &PhaseFigures) -> Check {
    let name = format!("4 {}: legitimate probes answered", p.name);
    let (ok, failed) = (p.probes.ok, p.probes.failed);
    if !l.noise_tolerant {
        return check(
            name,
            format!(
                "{} ({} of {})",
                pct(p.probes.success_rate()),
                ok,
                ok + failed
            ),
            format!(">= {}", pct(l.probe_rate)),
            ok + failed > 0 && p.probes.success_rate() >= l.probe_rate,
        );
    }
    let explained = explained_probe_failures(f, p);
    let rate = ratio(ok, ok + failed - explained);
    check(
        name,
        format!(
            "{} ({} of {}; {} more failed with half the deadline lost to noise)",
            pct(rate),
            ok,
            ok + failed - explained,
            explained
        ),
        format!(">= {}", pct(l.probe_rate)),
        ok + failed > 0 && rate >= l.probe_rate,
    )
}

fn share_check(f: &Figures, l: &Limits, p: &PhaseFigures) -> Check {
    let name = format!("4 {}: allowed calls decided with the coordinator", p.name);
    let d = &p.decisions;
    if !l.noise_tolerant {
        return check(
            name,
            pct(d.coordinated_share()),
            format!(">= {}", pct(l.coordinated_share)),
            d.total() > 0 && d.coordinated_share() >= l.coordinated_share,
        );
    }
    let explained = explained_degraded_calls(f, l, p);
    let share = ratio(d.coordinated, d.coordinated + d.degraded - explained);
    check(
        name,
        format!(
            "{} ({} degraded, {} of them after noise took the coordinator away)",
            pct(share),
            d.degraded,
            explained
        ),
        format!(">= {}", pct(l.coordinated_share)),
        d.total() > 0 && share >= l.coordinated_share,
    )
}

/// What the noise sampler saw, and how much of what went wrong it explains
/// (printed in both modes; only the quick run leaves the explained out).
fn noise_summary(f: &Figures, l: &Limits) -> String {
    let n = &f.noise;
    let lag_max = n.timer_lag.iter().map(|e| e.1).max().unwrap_or_default();
    let vm_total: Duration = n.vm_stall.iter().map(|e| e.1).sum();
    let vm_max = n.vm_stall.iter().map(|e| e.1).max().unwrap_or_default();
    let tick_max = f.ticks.iter().map(|e| e.1).max().unwrap_or_default();
    let mut all = Decisions::default();
    for p in &f.phases {
        all.merge(&p.decisions);
    }
    let over_explained = all
        .overruns
        .iter()
        .filter(|o| n.explains_overrun(o.start, o.wait, l.decision))
        .count();
    let (mut pf, mut pe, mut dg, mut de) = (0, 0, 0, 0);
    for p in f
        .phases
        .iter()
        .filter(|p| matches!(p.kind, PhaseKind::Flood | PhaseKind::Malformed))
    {
        pf += p.probes.failed;
        pe += explained_probe_failures(f, p);
        dg += p.decisions.degraded;
        de += explained_degraded_calls(f, l, p);
    }
    format!(
        "noise ({}): fleet threads waited for a core {} in all, coordinator threads {}; the machine stood still {} (longest {}); the sampler's 1 ms sleep woke up to {} late, the fleet runtime's up to {}\n\
         explained by noise: {} of {} decisions over {}, {} of {} failed probes and {} of {} degraded calls in the flood and malformed phases{}",
        if n.available {
            "kernel schedstat, sampled every 1 ms"
        } else {
            "no schedstat on this kernel: timer lag only"
        },
        ms(n.total(Group::Load)),
        ms(n.total(Group::Coordinator)),
        ms(vm_total),
        ms(vm_max),
        ms(lag_max),
        ms(tick_max),
        over_explained,
        all.over_limit,
        ms(l.decision),
        pe,
        pf,
        de,
        dg,
        if l.noise_tolerant {
            " (left out of the criteria)"
        } else {
            " (counted anyway: full run)"
        }
    )
}

/// The summary: settings, a table per phase, the figures, the verdicts.
pub fn render(f: &Figures, l: &Limits, checks: &[Check]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n=== breakerd chaos suite ({}) — {} nodes, client RPC deadline {}, slack {}, cap {} circuits, rate limits {} ===",
        f.mode,
        f.nodes,
        ms(f.rpc_timeout),
        ms(f.slack),
        f.max_circuits,
        if f.rate_limits_raised {
            "raised in config"
        } else {
            "not configurable (none)"
        }
    );
    let _ = writeln!(
        s,
        "{:<22} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>6} {:>6} {:>10} {:>9} {:>10} {:>10}",
        "phase",
        "secs",
        "decisions",
        "max wait",
        "p99 wait",
        "p50 wait",
        "over",
        "coord %",
        "degr.",
        "open",
        "probe ok %",
        "sched lag",
        "fleet runq",
        "coord runq"
    );
    for p in &f.phases {
        let d = &p.decisions;
        let _ = writeln!(
            s,
            "{:<22} {:>6.1} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8.2} {:>6} {:>6} {:>10.2} {:>9} {:>10} {:>10}",
            p.name,
            p.duration.as_secs_f64(),
            d.total(),
            ms(Duration::from_micros(d.max_wait_us)),
            ms(Duration::from_micros(d.quantile_us(0.99))),
            ms(Duration::from_micros(d.quantile_us(0.50))),
            d.over_limit,
            d.coordinated_share() * 100.0,
            d.degraded,
            d.open,
            p.probes.success_rate() * 100.0,
            ms(p.lag),
            ms(f.noise.stall_sum(Group::Load, p.start, p.end)),
            ms(f.noise.stall_sum(Group::Coordinator, p.start, p.end)),
        );
    }
    let _ = writeln!(s, "{}", noise_summary(f, l));
    for (i, k) in f.kills.iter().enumerate() {
        let _ = writeln!(
            s,
            "kill -9 #{}: downtime {} (store_load_ms {}), nodes reconnected {} after SERVING, force-open seen by all {} / clear {}, node generations back {}",
            i + 1,
            ms(k.downtime),
            k.store_load_ms.map_or("?".into(), |m| m.to_string()),
            opt_ms(k.reconnect),
            opt_ms(k.follow),
            opt_ms(k.follow_clear),
            k.node_generations_back
        );
    }
    let d = &f.durability;
    let _ = writeln!(
        s,
        "durability: overrides acknowledged {} / checked {} / lost {}; opens acknowledged {} / checked {} / lost {}; tail opens (tripped after the last durable ack, not promised) {} / lost {}; max deadline drift {}; generations back {}",
        d.overrides_acked,
        d.overrides_checked,
        d.overrides_lost,
        d.opens_acked,
        d.opens_checked,
        d.opens_lost,
        d.tail_opens,
        d.tail_lost,
        ms(d.max_drift),
        d.generations_back
    );
    for p in &d.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    for (i, st) in f.stops.iter().enumerate() {
        let _ = writeln!(
            s,
            "SIGSTOP #{}: stopped {}, {} of {} nodes in degraded mode at SIGCONT, all connected {} after SIGCONT, probe answered {} after SIGCONT",
            i + 1,
            ms(st.stopped),
            st.nodes_down_at_resume,
            f.nodes,
            opt_ms(st.reconnect),
            opt_ms(st.probe_answered)
        );
    }
    if let Some(fl) = &f.flood {
        let _ = writeln!(
            s,
            "flood: {:.1} s, {:.0} req/s, {} circuits created, {} RESOURCE_EXHAUSTED, other {:?}, cap reached after {}",
            fl.duration.as_secs_f64(),
            fl.rate(),
            fl.created,
            fl.exhausted,
            fl.other,
            opt_ms(fl.cap_after)
        );
    }
    if let Some(m) = &f.memory {
        let _ = writeln!(
            s,
            "memory (VmRSS): before flood {}, plateau at cap {} (~{} B per circuit), max after cap {} ({:.1} % of plateau; flood {}, malformed {}), limit {}",
            mib(m.baseline),
            mib(m.plateau),
            m.per_circuit(),
            mib(m.max_after),
            m.max_after as f64 * 100.0 / m.plateau.max(1) as f64,
            mib(m.max_flood),
            mib(m.max_later),
            mib((m.plateau as f64 * l.memory_factor) as u64)
        );
    }
    if !f.malformed.is_empty() {
        let _ = writeln!(s, "malformed input (case: runs, outcomes, slowest):");
        for c in &f.malformed {
            let outcomes: Vec<String> = c
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let _ = writeln!(
                s,
                "  {:<34} {:>5}  {}  {}",
                c.name,
                c.runs,
                outcomes.join(", "),
                ms(c.slowest)
            );
        }
    }
    let _ = writeln!(s, "\ncriteria:");
    for c in checks {
        let _ = writeln!(
            s,
            "  [{}] {:<58} {:<44} bound {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.figure,
            c.bound
        );
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    let _ = writeln!(
        s,
        "\nchaos suite ({}): {} in {:.1} s ({} of {} criteria failed)",
        f.mode,
        if failed == 0 { "PASS" } else { "FAIL" },
        f.total.as_secs_f64(),
        failed,
        checks.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Decided;
    use std::time::Instant;

    fn passing() -> Figures {
        let limit = Duration::from_millis(35);
        let t = Instant::now();
        let mut d = Decisions::default();
        d.record(Decided::Coordinated, t, Duration::from_micros(50), limit);
        d.record(Decided::Degraded, t, Duration::from_millis(31), limit);
        // Over the limit, while the timer thread was 8 ms late.
        d.record(Decided::Degraded, t, Duration::from_millis(40), limit);
        // Most decisions come from pushed state at once.
        for _ in 0..1000 {
            d.record(Decided::Coordinated, t, Duration::from_micros(20), limit);
        }
        let mut flood_d = Decisions::default();
        for _ in 0..99 {
            flood_d.record(Decided::Coordinated, t, Duration::from_micros(50), limit);
        }
        flood_d.record(Decided::Degraded, t, Duration::from_micros(50), limit);
        let probes = Probes {
            ok: 99,
            failed: 1,
            ..Default::default()
        };
        Figures {
            mode: "quick".into(),
            nodes: 2,
            rpc_timeout: Duration::from_millis(30),
            slack: Duration::from_millis(5),
            max_circuits: 100,
            phases: vec![
                PhaseFigures {
                    name: "i kill".into(),
                    kind: PhaseKind::Kill,
                    duration: Duration::from_secs(1),
                    decisions: d,
                    probes: Probes {
                        ok: 1,
                        failed: 5,
                        ..Default::default()
                    },
                    lag: Duration::ZERO,
                    start: t,
                    end: t,
                },
                PhaseFigures {
                    name: "iii flood".into(),
                    kind: PhaseKind::Flood,
                    duration: Duration::from_secs(1),
                    decisions: flood_d,
                    probes,
                    lag: Duration::ZERO,
                    start: t,
                    end: t,
                },
            ],
            kills: vec![KillFigures {
                reconnect: Some(Duration::from_millis(300)),
                follow: Some(Duration::from_millis(5)),
                follow_clear: Some(Duration::from_millis(5)),
                ..Default::default()
            }],
            durability: DurabilityFigures {
                overrides_acked: 3,
                overrides_checked: 3,
                opens_acked: 2,
                opens_checked: 2,
                ..Default::default()
            },
            stops: vec![StopFigures {
                stopped: Duration::from_secs(2),
                nodes_down_at_resume: 1,
                reconnect: Some(Duration::from_millis(100)),
                probe_answered: Some(Duration::from_millis(10)),
            }],
            flood: Some(FloodFigures {
                created: 98,
                exhausted: 1000,
                ..Default::default()
            }),
            memory: Some(MemoryFigures {
                baseline: 10 << 20,
                plateau: 20 << 20,
                max_after: 21 << 20,
                max_flood: 21 << 20,
                max_later: 20 << 20,
                samples_after: 30,
                created: 98,
            }),
            malformed: vec![CaseFigures {
                name: "tcp-garbage",
                runs: 3,
                ..Default::default()
            }],
            malformed_workers: 2,
            noise: Noise {
                timer_lag: vec![(t + Duration::from_millis(20), Duration::from_millis(8))],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Breaks one promise in a passing run.
    type Mutation = Box<dyn Fn(&mut Figures)>;

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_good_run_passes_every_criterion() {
        let f = passing();
        let l = Limits::new(f.rpc_timeout, f.slack);
        let checks = evaluate(&f, &l);
        assert!(failed(&checks).is_empty(), "{:?}", failed(&checks));
        let text = render(&f, &l, &checks);
        assert!(text.contains("chaos suite (quick): PASS"), "{text}");
    }

    #[test]
    fn the_full_run_counts_what_noise_explains() {
        let f = passing();
        let l = Limits::new(f.rpc_timeout, f.slack).strict();
        let checks = evaluate(&f, &l);
        // The 40 ms decision the timer lag explains.
        assert_eq!(
            failed(&checks),
            vec!["1 decision wait over deadline+slack"],
            "{checks:?}"
        );
    }

    #[test]
    fn noise_explains_probes_and_degraded_calls_only_where_it_took_the_time() {
        let ms = Duration::from_millis;
        let mut f = passing();
        let t = f.phases[1].start;
        f.noise.epoch = t;
        // The coordinator waited for a core from 100 to 130 ms; the fleet
        // from 300 to 320 ms.
        f.noise
            .add_wait(Group::Coordinator, t + ms(100), t + ms(130));
        f.noise.add_wait(Group::Load, t + ms(300), t + ms(320));
        let flood = &mut f.phases[1];
        // 9 more failed probes: 4 sent while the coordinator waited, 1
        // while the fleet did, 4 when nothing did.
        flood.probes.failed += 9;
        for at in [100, 105, 110, 115, 300, 500, 510, 520, 530] {
            flood.probes.failures.push((t + ms(at), None, true));
        }
        // 20 degraded calls of node 1, which lost its link at 125 ms.
        for i in 0..20 {
            flood
                .decisions
                .record(Decided::Degraded, t, Duration::ZERO, ms(35));
            flood.decisions.note_degraded(1, t + ms(130 + i));
        }
        f.links = vec![(1, t + ms(125), false), (1, t + ms(200), true)];
        let l = Limits::new(f.rpc_timeout, f.slack);
        let pass = |f: &Figures, l: &Limits, name: &str| {
            evaluate(f, l)
                .into_iter()
                .find(|c| c.name.starts_with(name))
                .map(|c| c.pass)
        };
        // 99 answered of 99 + 5 unexplained (the fixture's one, which has
        // no time, and 4): 95.2 %. Coordinated: 99 of 99 + 1.
        assert_eq!(pass(&f, &l, "4 iii flood: legitimate probes"), Some(true));
        assert_eq!(pass(&f, &l, "4 iii flood: allowed calls"), Some(true));
        let strict = l.clone().strict();
        assert_eq!(
            pass(&f, &strict, "4 iii flood: legitimate probes"),
            Some(false)
        );
        assert_eq!(pass(&f, &strict, "4 iii flood: allowed calls"), Some(false));
        // A link lost while nothing waited is the client's business.
        f.links = vec![(1, t + ms(600), false)];
        for c in &mut f.phases[1].decisions.degraded_calls {
            c.1 = t + ms(650);
        }
        assert_eq!(pass(&f, &l, "4 iii flood: allowed calls"), Some(false));
        // One more unexplained failed probe: 99 of 105.
        f.phases[1].probes.failed += 1;
        f.phases[1].probes.failures.push((t + ms(700), None, false));
        assert_eq!(pass(&f, &l, "4 iii flood: legitimate probes"), Some(false));
    }

    #[test]
    fn each_broken_promise_fails_its_criterion() {
        let l = Limits::new(Duration::from_millis(30), Duration::from_millis(5));
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "1 decision wait",
                Box::new(|f| {
                    // No lag at that time.
                    let late = Instant::now() + Duration::from_secs(1);
                    f.phases[0].decisions.record(
                        Decided::Coordinated,
                        late,
                        Duration::from_millis(36),
                        Duration::from_millis(35),
                    );
                }),
            ),
            ("1 decision wait", Box::new(|f| f.noise.timer_lag.clear())),
            (
                "1 p99 decision wait",
                Box::new(|f| {
                    // Each explained by the lag, but more than 1 % of all.
                    let t = f.phases[0].start;
                    for _ in 0..20 {
                        f.phases[0].decisions.record(
                            Decided::Coordinated,
                            t,
                            Duration::from_millis(36),
                            Duration::from_millis(35),
                        );
                    }
                }),
            ),
            (
                "2 acknowledged overrides lost",
                Box::new(|f| f.durability.overrides_lost = 1),
            ),
            (
                "2 acknowledged overrides lost",
                Box::new(|f| f.durability.overrides_checked = 0),
            ),
            (
                "2 acknowledged open states lost",
                Box::new(|f| f.durability.opens_lost = 1),
            ),
            (
                "2 deadline drift",
                Box::new(|f| f.durability.max_drift = Duration::from_millis(26)),
            ),
            (
                "2 generations gone back",
                Box::new(|f| f.kills[0].node_generations_back = 1),
            ),
            (
                "3 RSS while the flood",
                Box::new(|f| {
                    if let Some(m) = f.memory.as_mut() {
                        m.max_flood = 23 << 20;
                    }
                }),
            ),
            (
                "3 RSS under malformed",
                Box::new(|f| {
                    if let Some(m) = f.memory.as_mut() {
                        m.max_later = 31 << 20;
                    }
                }),
            ),
            ("3 RSS while the flood", Box::new(|f| f.memory = None)),
            (
                "4 kill #1: nodes reconnected",
                Box::new(|f| f.kills[0].reconnect = None),
            ),
            (
                "4 kill #1: new override",
                Box::new(|f| f.kills[0].follow_clear = Some(Duration::from_secs(2))),
            ),
            ("4 stop #1", Box::new(|f| f.stops[0].probe_answered = None)),
            (
                "4 iii flood: legitimate probes",
                Box::new(|f| f.phases[1].probes.failed = 10),
            ),
            (
                "4 iii flood: allowed calls",
                Box::new(|f| {
                    for _ in 0..10 {
                        f.phases[1].decisions.record(
                            Decided::Degraded,
                            Instant::now(),
                            Duration::ZERO,
                            Duration::from_millis(35),
                        );
                    }
                }),
            ),
            (
                "3 flood met the circuit cap",
                Box::new(|f| {
                    if let Some(fl) = f.flood.as_mut() {
                        fl.exhausted = 0;
                    }
                }),
            ),
            ("5 malformed", Box::new(|f| f.malformed[0].hung = 1)),
            ("5 malformed", Box::new(|f| f.malformed[0].accepted = 1)),
            ("5 coordinator exits", Box::new(|f| f.unexpected_exits = 1)),
        ];
        for (prefix, breakit) in cases {
            let mut f = passing();
            breakit(&mut f);
            let checks = evaluate(&f, &l);
            let bad = failed(&checks);
            // An unexplained overrun also names the worst one.
            let n = if prefix == "1 decision wait" { 2 } else { 1 };
            assert_eq!(bad.len(), n, "{prefix}: {bad:?}");
            assert!(bad[0].starts_with(prefix), "{prefix}: {bad:?}");
            assert!(render(&f, &l, &checks).contains("FAIL"));
        }
    }
}
