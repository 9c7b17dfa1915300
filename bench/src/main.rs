//! `breakerd-bench`: breakerd side by side with the Redis counter it
//! replaces and with local in-process breakers (issue #4).
//!
//! Run it through `bench/run` (which installs `redis-server` when missing,
//! builds in release mode and pins this load generator to its own core).
//! It starts its own `breakerd` and `redis-server` processes on loopback,
//! pinned to another core, runs W1-W7 and writes `latest.json`, `latest.md`
//! and `latest.svg` into the output folder. See `bench/README.md` for what
//! each workload measures and how.

#![forbid(unsafe_code)]

mod driver;
mod fleet;
mod keys;
mod output;
mod procs;
mod stall;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakerd_policy::Policy;
use clap::Parser;
use serde_json::{Map, Value, json};

use crate::fleet::{BreakerdFleet, LocalFleet, RedisFleet};
use crate::keys::{Keys, Zipf};
use crate::output::{Panel, Row, Verdict, put};
use crate::procs::Launcher;
use crate::workloads::{NODES, PROBES, Ramp, Scale, Target, TripKind, TripResult, TripTarget};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "breakerd vs the Redis trick vs local breakers (issue #4)")]
struct Args {
    /// Smoke run: short steps, one repeat, W6 up to 100k circuits.
    #[arg(long)]
    quick: bool,
    /// Where latest.json / latest.md / latest.svg go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The breakerd binary (default: next to this one).
    #[arg(long)]
    breakerd: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Pin the servers to this CPU with taskset (bench/run passes 0 and
    /// runs this generator on CPU 1).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Only these workloads (comma-separated: w1,w1s,w2,w3,w4,w5,w6,w7).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also run W3 and W4 (breakerd and the Redis trick) while this load
    /// generator is stopped for 20-50 ms at random (SIGSTOP / SIGCONT):
    /// results `w3_*_stalls_*`, `w4_*_stalls_*`.
    #[arg(long)]
    stalls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the generator (and every simulated node's client
    // background tasks) on one core, the coordinator on the other.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("breakerd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn machine(launcher: &Launcher) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(f64::NAN);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let redis = std::process::Command::new(&launcher.redis_server)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    json!({
        "cpu": model,
        // Of the machine, not of this pinned process.
        "cores": cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        "memory_gib": (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "redis": redis.trim(),
        "server_cpu": launcher.server_cpu,
        "sched": sched(),
        "pinned": launcher.server_cpu.is_some(),
    })
}

/// This process's nice value and scheduling policy (bench/run's
/// BENCH_NICE), from `/proc/self/stat`.
fn sched() -> Value {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let policy = match f.get(38).copied() {
        Some("0") => "SCHED_OTHER",
        Some("1") => "SCHED_FIFO",
        Some("2") => "SCHED_RR",
        Some("3") => "SCHED_BATCH",
        Some("5") => "SCHED_IDLE",
        _ => "unknown",
    };
    json!({
        "policy": policy,
        "nice": f.get(16).and_then(|v| v.parse::<i64>().ok()),
        "rt_priority": f.get(37).and_then(|v| v.parse::<i64>().ok()),
    })
}

struct Results {
    flat: Map<String, Value>,
    details: Map<String, Value>,
    errors: Vec<String>,
}

impl Results {
    fn put(&mut self, k: &str, v: f64) {
        put(&mut self.flat, k, v);
    }

    fn get(&self, k: &str) -> f64 {
        self.flat.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        let msg = format!("{what}: {e}");
        log(format!("ERROR {msg}"));
        self.errors.push(msg);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let scale = Scale::new(args.quick);
    let breakerd_bin = match args.breakerd {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("breakerd"),
    };
    let launcher = Launcher {
        breakerd: breakerd_bin,
        redis_server: args.redis_server.clone(),
        server_cpu: args
            .server_cpu
            .filter(|_| breakerd_testkit::process::have_taskset()),
    };
    let want =
        |w: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(w));
    let started = Instant::now();
    let mut res = Results {
        flat: Map::new(),
        details: Map::new(),
        errors: Vec::new(),
    };

    log(format!(
        "mode={} servers pinned to cpu {:?}",
        if scale.quick { "quick" } else { "full" },
        launcher.server_cpu
    ));
    let main_server = launcher.breakerd("main", &workloads::main_config(200_000))?;
    let main_redis = launcher.redis("main")?;
    log(format!(
        "breakerd pid {} on {}, redis pid {} on {}",
        main_server.pid, main_server.addr, main_redis.pid, main_redis.addr
    ));
    let names = workloads::w2_names();
    let mut a = BreakerdFleet::connect(&main_server.http_url(), NODES)?;
    if ["w1", "w2", "w7"].iter().any(|w| want(w)) {
        a.use_circuits(&names, Duration::from_secs(60)).await?;
    }
    let mut b = RedisFleet::connect(&main_redis.redis_url(), NODES).await?;
    b.use_circuits(&names).await?;
    let mut c = LocalFleet::new(NODES, Policy::default());
    c.use_circuits(names.len());
    log(format!(
        "{NODES} nodes x {} circuits ready in {:.1}s",
        names.len(),
        started.elapsed().as_secs_f64()
    ));

    if want("w1") {
        log("W1: decision overhead per protected call (ask + report), healthy circuit");
        let w = workloads::w1(&scale, &a, &b, &c).await;
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            res.put(&format!("w1_{s}_ns_p50"), w.p50_ns[i]);
            res.put(&format!("w1_{s}_ns_p99"), w.p99_ns[i]);
        }
        res.put("w1_timer_ns", w.timer_ns);
        res.details
            .insert("w1_a_dropped_reports".into(), json!(w.a_dropped));
        log(format!(
            "  p50 ns a={:.0} b={:.0} c={:.0}",
            w.p50_ns[0], w.p50_ns[1], w.p50_ns[2]
        ));
    }
    if want("w1s") {
        log("W1s: strict unary Acquire RPC vs one Redis GET");
        match workloads::w1s(&scale, &main_server, &main_redis, &b).await {
            Ok(w) => {
                res.put("w1s_a_us_p50", w.a_us.0);
                res.put("w1s_a_us_p99", w.a_us.1);
                res.put("w1s_redis_get_us_p50", w.get_us.0);
                res.put("w1s_redis_get_us_p99", w.get_us.1);
                res.put("w1s_rate_per_s", w.rate);
                res.put("w1s_a_server_cpu_us_per_call", w.a_server_cpu_us);
                res.put("w1s_redis_cpu_us_per_get", w.get_server_cpu_us);
                log(format!(
                    "  p50 us acquire={:.1} get={:.1}",
                    w.a_us.0, w.get_us.0
                ));
            }
            Err(e) => res.fail("W1s", e),
        }
    }
    let uniform = Keys::Uniform(names.len());
    let zipf = Keys::Zipf(Zipf::new(names.len(), 1.0));
    let mut a_uniform: Option<Ramp> = None;
    if want("w2") || want("w7") {
        let mut w2 = Map::new();
        let runs: Vec<(&str, Target<'_>, &Keys, f64)> = vec![
            ("a", Target::Breakerd(&a, &main_server), &uniform, 25_000.0),
            (
                "a_zipf",
                Target::Breakerd(&a, &main_server),
                &zipf,
                25_000.0,
            ),
            ("b", Target::Redis(&b, &main_redis), &uniform, 5_000.0),
            ("b_zipf", Target::Redis(&b, &main_redis), &zipf, 5_000.0),
            ("c", Target::Local(&c), &uniform, 25_000.0),
            ("c_zipf", Target::Local(&c), &zipf, 25_000.0),
        ];
        for (label, target, keys, start) in runs {
            if !want("w2") && label != "a" {
                continue;
            }
            log(format!("W2: throughput {label} ({} keys)", keys.label()));
            let r = workloads::ramp(&scale, &target, keys, start).await;
            log(format!(
                "  {:.0} calls/s, p99 {:.0} us, coordinator {:.3} CPU-s per million calls",
                r.calls_per_s, r.p99_us, r.server_cpu_s_per_m
            ));
            res.put(&format!("w2_{label}_calls_per_s"), r.calls_per_s);
            if label.starts_with('a') || label.starts_with('b') {
                res.put(
                    &format!("w2_{label}_cpu_s_per_million"),
                    r.server_cpu_s_per_m,
                );
            }
            if label == "a" {
                a_uniform = Some(r.clone());
            }
            w2.insert(label.into(), r.json());
        }
        res.details.insert("w2".into(), Value::Object(w2));
    }
    if want("w7") {
        log("W7: one hot circuit vs uniform keys (breakerd)");
        let hot = workloads::ramp(
            &scale,
            &Target::Breakerd(&a, &main_server),
            &Keys::Hot,
            25_000.0,
        )
        .await;
        let uni = a_uniform.map_or(f64::NAN, |r| r.calls_per_s);
        res.put("w7_a_hot_calls_per_s", hot.calls_per_s);
        res.put("w7_hot_over_uniform", hot.calls_per_s / uni);
        log(format!(
            "  hot {:.0} calls/s, ratio {:.2}",
            hot.calls_per_s,
            hot.calls_per_s / uni
        ));
        res.details.insert("w7_hot".into(), hot.json());
    }
    let mut local_trip = LocalFleet::new(
        NODES,
        Policy::default()
            .apply(&workloads::trip_policy_spec())
            .map_err(|e| e.to_string())?,
    );
    for (kind, w, want_it) in [
        (TripKind::Trip, "w3", want("w3")),
        (TripKind::Recovery, "w4", want("w4")),
    ] {
        if !want_it {
            continue;
        }
        log(format!(
            "{}: {} at {} calls/s over {NODES} nodes",
            w.to_uppercase(),
            if kind == TripKind::Trip {
                "trip"
            } else {
                "recovery probes"
            },
            workloads::TRIP_RATE
        ));
        let mut d = Map::new();
        let reps = scale.trip_repeats;
        let mut runs: Vec<(&str, Result<TripResult, String>)> = vec![
            (
                "a",
                workloads::trip(kind, reps, false, TripTarget::Breakerd(&mut a)).await,
            ),
            (
                "b",
                workloads::trip(kind, reps, false, TripTarget::Redis(&mut b)).await,
            ),
            (
                "c",
                workloads::trip(kind, reps, false, TripTarget::Local(&mut local_trip)).await,
            ),
        ];
        if kind == TripKind::Trip {
            // The same fleet with the client's report flush interval at
            // 1 ms instead of 10: shows how much of (a)'s figure is
            // successes from before t0 still waiting in other nodes'
            // batches (they reset the consecutive-failure run).
            let fast = async {
                let mut f = BreakerdFleet::connect_with(
                    &main_server.http_url(),
                    NODES,
                    Some(Duration::from_millis(1)),
                )?;
                workloads::trip(kind, reps, false, TripTarget::Breakerd(&mut f)).await
            };
            runs.push(("a_flush1ms", fast.await));
        }
        if args.stalls {
            runs.push((
                "a_stalls",
                workloads::trip(kind, reps, true, TripTarget::Breakerd(&mut a)).await,
            ));
            runs.push((
                "b_stalls",
                workloads::trip(kind, reps, true, TripTarget::Redis(&mut b)).await,
            ));
            if kind == TripKind::Trip {
                let fast = async {
                    let mut f = BreakerdFleet::connect_with(
                        &main_server.http_url(),
                        NODES,
                        Some(Duration::from_millis(1)),
                    )?;
                    workloads::trip(kind, reps, true, TripTarget::Breakerd(&mut f)).await
                };
                runs.push(("a_flush1ms_stalls", fast.await));
            }
        }
        for (s, r) in runs {
            match r {
                Ok(t) => {
                    log(format!(
                        "  {s}: per repeat {:?}{}{}",
                        t.counts,
                        if t.degraded.iter().any(|&d| d > 0) {
                            format!(" (degraded decisions {:?})", t.degraded)
                        } else {
                            String::new()
                        },
                        if t.stalls > 0 {
                            format!(" ({} stalls, {} ms stopped)", t.stalls, t.stalled_ms)
                        } else {
                            String::new()
                        }
                    ));
                    if kind == TripKind::Trip {
                        res.put(&format!("w3_{s}_wasted_calls"), t.median_count());
                        res.put(
                            &format!("w3_{s}_propagation_ms_p50"),
                            stats::percentile(&t.propagation_ms, 50.0),
                        );
                        res.put(
                            &format!("w3_{s}_propagation_ms_p99"),
                            stats::percentile(&t.propagation_ms, 99.0),
                        );
                    } else {
                        res.put(&format!("w4_{s}_probes"), t.median_count());
                        if s == "a" || s == "a_stalls" {
                            res.put(
                                &format!("w4_{s}_probes_max"),
                                t.counts.iter().copied().max().unwrap_or(0) as f64,
                            );
                            res.put(
                                &format!("w4_{s}_probes_min"),
                                t.counts.iter().copied().min().unwrap_or(0) as f64,
                            );
                        }
                    }
                    d.insert(s.into(), t.json());
                }
                Err(e) => res.fail(&format!("{w} {s}"), e),
            }
        }
        res.details.insert(w.into(), Value::Object(d));
    }
    // The main fleets are done: stop their background traffic before the
    // workloads that start their own servers.
    drop((a, b, c, local_trip));
    drop((main_server, main_redis));

    if want("w5") {
        log(format!(
            "W5: coordinator killed mid-run, {NODES} nodes x 100 circuits at {} calls/s",
            workloads::KILL_RATE
        ));
        let mut d = Map::new();
        for (s, redis) in [("a", false), ("b", true)] {
            match workloads::kill(&scale, &launcher, redis).await {
                Ok(k) => {
                    log(format!(
                        "  {s}: added p99 {:.3} ms, first-deadline max {:.1} ms, errors {}",
                        k.added_p99_ms, k.first_deadline_max_ms, k.errors
                    ));
                    res.put(&format!("w5_{s}_added_ms_p99"), k.added_p99_ms);
                    res.put(&format!("w5_{s}_errors"), k.errors);
                    d.insert(s.into(), k.json());
                }
                Err(e) => res.fail(&format!("w5 {s}"), e),
            }
        }
        res.details.insert("w5".into(), Value::Object(d));
    }
    if want("w6") {
        log(format!(
            "W6: memory per circuit at {:?} circuits",
            scale.w6_stages
        ));
        match workloads::memory(&scale, &launcher).await {
            Ok(stages) => {
                for s in &stages {
                    log(format!(
                        "  {} circuits: breakerd {:.0} B (RSS), redis {:.0} B (used_memory), {:.0} B (RSS)",
                        s.circuits, s.breakerd_rss, s.redis_used, s.redis_rss
                    ));
                }
                if let Some(last) = stages.last() {
                    res.put("w6_a_bytes_per_circuit", last.breakerd_rss);
                    res.put("w6_redis_bytes_per_circuit", last.redis_used);
                    res.put("w6_redis_rss_bytes_per_circuit", last.redis_rss);
                    res.put("w6_circuits", last.circuits as f64);
                    // What one circuit's breaker alone takes inline, for the
                    // gap analysis of W6 (the coordinator keeps one per circuit).
                    res.put(
                        "w6_policy_breaker_struct_bytes",
                        std::mem::size_of::<breakerd_policy::Breaker>() as f64,
                    );
                }
                res.details.insert(
                    "w6".into(),
                    Value::Array(stages.iter().map(|s| s.json()).collect()),
                );
            }
            Err(e) => res.fail("w6", e),
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (rows, verdicts) = table(&res);
    let mut top = Map::new();
    top.insert("timestamp".into(), json!(output::rfc3339(now)));
    top.insert(
        "mode".into(),
        json!(if scale.quick { "quick" } else { "full" }),
    );
    top.insert("machine".into(), machine(&launcher));
    top.insert("probes_configured".into(), json!(PROBES));
    top.insert("nodes".into(), json!(NODES));
    top.insert("circuits".into(), json!(workloads::CIRCUITS));
    top.insert("repeats".into(), json!(scale.repeats));
    top.insert("w3_w4_rate_per_s".into(), json!(workloads::TRIP_RATE));
    top.insert("w5_rate_per_s".into(), json!(workloads::KILL_RATE));
    top.insert("duration_s".into(), json!(started.elapsed().as_secs()));
    for (k, v) in &res.flat {
        top.insert(k.clone(), v.clone());
    }
    top.insert("targets".into(), Value::Object(verdicts));
    top.insert("details".into(), Value::Object(res.details.clone()));
    top.insert("errors".into(), json!(res.errors));
    let sched = sched();
    let notes = vec![
        format!(
            "{} run, {}, {} s, {} (nice {}); {NODES} simulated nodes in one load generator{}.",
            if scale.quick { "`--quick`" } else { "Full" },
            output::rfc3339(now),
            started.elapsed().as_secs(),
            sched["policy"].as_str().unwrap_or("?"),
            sched["nice"],
            if launcher.server_cpu.is_some() {
                " on CPU 1, breakerd / redis-server pinned to CPU 0"
            } else {
                " (not pinned)"
            }
        ),
        "Latencies are open-loop (measured from each call's intended start), percentiles from HdrHistogram, \
         medians over repeats. W1 subtracts the cost of reading the clock (w1_timer_ns)."
            .into(),
        format!(
            "W3/W4: {} calls/s fleet-wide, trip after {} consecutive failures, open {} ms, {} probes; \
             W4's dependency fails by timing out (20 ms).",
            workloads::TRIP_RATE,
            workloads::THRESHOLD,
            workloads::OPEN_MS,
            PROBES
        ),
    ];
    let md = output::markdown("breakerd benchmark results", &rows, &notes);
    let svg = output::svg(
        "breakerd vs Redis trick vs local breakers: fleet workloads",
        &panels(&res),
    );
    output::write_all(&args.out, &Value::Object(top), &md, &svg).map_err(|e| e.to_string())?;
    println!("{md}");
    log(format!(
        "wrote {}/latest.{{json,md,svg}} in {:.0}s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    ));
    if res.errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} workload(s) failed: {:?}",
            res.errors.len(),
            res.errors
        ))
    }
}

fn verdict(target: &str, met: Option<bool>) -> Option<Verdict> {
    Some(Verdict {
        target: target.into(),
        met,
    })
}

/// Both finite, then the test; otherwise not measured.
fn check(xs: &[f64], test: impl FnOnce() -> bool) -> Option<bool> {
    xs.iter().all(|x| x.is_finite()).then(test)
}

fn table(r: &Results) -> (Vec<Row>, Map<String, Value>) {
    let g = |k: &str| r.get(k);
    let opt = |k: &str| Some(g(k));
    let (a1, b1, c1) = (g("w1_a_ns_p50"), g("w1_b_ns_p50"), g("w1_c_ns_p50"));
    let (as1, gs1) = (g("w1s_a_us_p50"), g("w1s_redis_get_us_p50"));
    let (a2, b2) = (g("w2_a_calls_per_s"), g("w2_b_calls_per_s"));
    let (a3, b3, c3) = (
        g("w3_a_wasted_calls"),
        g("w3_b_wasted_calls"),
        g("w3_c_wasted_calls"),
    );
    let ap3 = g("w3_a_propagation_ms_p99");
    let (a4, a4min, a4max) = (g("w4_a_probes"), g("w4_a_probes_min"), g("w4_a_probes_max"));
    let a5 = g("w5_a_added_ms_p99");
    let a6 = g("w6_a_bytes_per_circuit");
    let r7 = g("w7_hot_over_uniform");
    let p = f64::from(PROBES);
    let checks = [
        ("w1_a_le_2x_c", check(&[a1, c1], || a1 <= 2.0 * c1)),
        (
            "w1_a_100x_faster_than_b",
            check(&[a1, b1], || a1 * 100.0 <= b1),
        ),
        ("w1s_a_le_1_5x_get", check(&[as1, gs1], || as1 <= 1.5 * gs1)),
        (
            "w2_a_ge_10x_b",
            check(&[a2, b2], || a2 >= 10.0 * b2).filter(|_| a2 > 0.0 && b2 > 0.0),
        ),
        ("w3_a_le_b", check(&[a3, b3], || a3 <= b3)),
        ("w3_a_le_c_over_10", check(&[a3, c3], || a3 <= c3 / 10.0)),
        ("w3_propagation_p99_le_5ms", check(&[ap3], || ap3 <= 5.0)),
        (
            "w4_a_eq_probes",
            check(&[a4min, a4max], || a4min == p && a4max == p),
        ),
        ("w5_a_added_p99_le_1ms", check(&[a5], || a5 <= 1.0)),
        ("w6_a_le_300_bytes", check(&[a6], || a6 <= 300.0)),
        ("w7_ge_0_5", check(&[r7], || r7 >= 0.5).filter(|_| r7 > 0.0)),
    ];
    let mut verdicts = Map::new();
    for (k, v) in &checks {
        verdicts.insert((*k).into(), v.map_or(Value::Null, Value::Bool));
    }
    let met = |k: &str| checks.iter().find(|c| c.0 == k).and_then(|c| c.1);
    let both = |x: &str, y: &str| match (met(x), met(y)) {
        (Some(p), Some(q)) => Some(p && q),
        _ => None,
    };
    let rows = vec![
        Row {
            workload: "W1",
            metric: "decision overhead p50, ns (ask + report, healthy)".into(),
            values: [opt("w1_a_ns_p50"), opt("w1_b_ns_p50"), opt("w1_c_ns_p50")],
            verdict: verdict(
                "a ≤ 2× c and ≥ 100× faster than b",
                both("w1_a_le_2x_c", "w1_a_100x_faster_than_b"),
            ),
        },
        Row {
            workload: "W1",
            metric: "decision overhead p99, ns".into(),
            values: [opt("w1_a_ns_p99"), opt("w1_b_ns_p99"), opt("w1_c_ns_p99")],
            verdict: None,
        },
        Row {
            workload: "W1s",
            metric: "unary Acquire RPC vs Redis GET, p50 µs".into(),
            values: [opt("w1s_a_us_p50"), opt("w1s_redis_get_us_p50"), None],
            verdict: verdict("a ≤ 1.5× GET", met("w1s_a_le_1_5x_get")),
        },
        Row {
            workload: "W1s",
            metric: "unary Acquire RPC vs Redis GET, p99 µs".into(),
            values: [opt("w1s_a_us_p99"), opt("w1s_redis_get_us_p99"), None],
            verdict: None,
        },
        Row {
            workload: "W2",
            metric: "calls/s at p99 ≤ 1 ms, 50 nodes × 1,000 circuits, uniform".into(),
            values: [
                opt("w2_a_calls_per_s"),
                opt("w2_b_calls_per_s"),
                opt("w2_c_calls_per_s"),
            ],
            verdict: verdict("a ≥ 10× b", met("w2_a_ge_10x_b")),
        },
        Row {
            workload: "W2",
            metric: "calls/s at p99 ≤ 1 ms, Zipf(1) keys".into(),
            values: [
                opt("w2_a_zipf_calls_per_s"),
                opt("w2_b_zipf_calls_per_s"),
                opt("w2_c_zipf_calls_per_s"),
            ],
            verdict: None,
        },
        Row {
            workload: "W2",
            metric: "coordinator CPU-seconds per million calls (uniform)".into(),
            values: [
                opt("w2_a_cpu_s_per_million"),
                opt("w2_b_cpu_s_per_million"),
                None,
            ],
            verdict: None,
        },
        Row {
            workload: "W3",
            metric: "calls reaching the failing dependency after t0 (fleet)".into(),
            values: [
                opt("w3_a_wasted_calls"),
                opt("w3_b_wasted_calls"),
                opt("w3_c_wasted_calls"),
            ],
            verdict: verdict("a ≤ b and ≤ c / 10", both("w3_a_le_b", "w3_a_le_c_over_10")),
        },
        Row {
            workload: "W3",
            metric: "time until a node rejects, p50 ms".into(),
            values: [
                opt("w3_a_propagation_ms_p50"),
                opt("w3_b_propagation_ms_p50"),
                opt("w3_c_propagation_ms_p50"),
            ],
            verdict: None,
        },
        Row {
            workload: "W3",
            metric: "time until a node rejects, p99 ms".into(),
            values: [
                opt("w3_a_propagation_ms_p99"),
                opt("w3_b_propagation_ms_p99"),
                opt("w3_c_propagation_ms_p99"),
            ],
            verdict: verdict("a ≤ 5 ms", met("w3_propagation_p99_le_5ms")),
        },
        Row {
            workload: "W4",
            metric: format!("probes reaching the dependency while half-open (configured {PROBES})"),
            values: [opt("w4_a_probes"), opt("w4_b_probes"), opt("w4_c_probes")],
            verdict: verdict(
                &format!("a = {PROBES} in every repeat"),
                met("w4_a_eq_probes"),
            ),
        },
        Row {
            workload: "W5",
            metric: "coordinator killed: added p99 after the first deadline, ms".into(),
            values: [opt("w5_a_added_ms_p99"), opt("w5_b_added_ms_p99"), None],
            verdict: verdict("a ≤ 1 ms", met("w5_a_added_p99_le_1ms")),
        },
        Row {
            workload: "W5",
            metric: "coordinator killed: errors the application sees".into(),
            values: [opt("w5_a_errors"), opt("w5_b_errors"), None],
            verdict: None,
        },
        Row {
            workload: "W6",
            metric: format!(
                "bytes per circuit at {} circuits (a: RSS, b: used_memory)",
                output::fmt_num(g("w6_circuits"))
            ),
            values: [
                opt("w6_a_bytes_per_circuit"),
                opt("w6_redis_bytes_per_circuit"),
                None,
            ],
            verdict: verdict("a ≤ 300", met("w6_a_le_300_bytes")),
        },
        Row {
            workload: "W7",
            metric: "one hot circuit / uniform keys, throughput ratio".into(),
            values: [opt("w7_hot_over_uniform"), None, None],
            verdict: verdict("≥ 0.5", met("w7_ge_0_5")),
        },
    ];
    let _ = a4;
    (rows, verdicts)
}

fn panels(r: &Results) -> Vec<Panel> {
    let bars = |keys: &[(&str, &str)]| -> Vec<(String, f64)> {
        keys.iter()
            .map(|(l, k)| ((*l).to_string(), r.get(k)))
            .collect()
    };
    vec![
        Panel {
            title: "W2 throughput, calls/s at p99 ≤ 1 ms (50 nodes × 1,000 circuits, uniform)"
                .into(),
            bars: bars(&[
                ("(a) breakerd", "w2_a_calls_per_s"),
                ("(b) Redis trick", "w2_b_calls_per_s"),
                ("(c) local", "w2_c_calls_per_s"),
            ]),
            log: true,
        },
        Panel {
            title: "W2 coordinator CPU-seconds per million calls".into(),
            bars: bars(&[
                ("(a) breakerd", "w2_a_cpu_s_per_million"),
                ("(b) Redis trick", "w2_b_cpu_s_per_million"),
            ]),
            log: false,
        },
        Panel {
            title: "W3 calls reaching the failing dependency after t0".into(),
            bars: bars(&[
                ("(a) breakerd", "w3_a_wasted_calls"),
                ("(b) Redis trick", "w3_b_wasted_calls"),
                ("(c) local", "w3_c_wasted_calls"),
            ]),
            log: false,
        },
        Panel {
            title: format!("W4 probes while half-open (configured: {PROBES})"),
            bars: bars(&[
                ("(a) breakerd", "w4_a_probes"),
                ("(b) Redis trick", "w4_b_probes"),
                ("(c) local", "w4_c_probes"),
            ]),
            log: false,
        },
        Panel {
            title: "W5 coordinator killed: errors seen by the application".into(),
            bars: bars(&[
                ("(a) breakerd", "w5_a_errors"),
                ("(b) Redis trick", "w5_b_errors"),
            ]),
            log: false,
        },
    ]
}
