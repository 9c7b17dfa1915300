//! Phase (iii): a client that is not legitimate creates circuits with unique
//! names as fast as it can, past the coordinator's circuit cap, while the
//! resident memory of the coordinator is watched.
//!
//! The memory cap is defined by measurement, since the coordinator's cap is
//! a number of circuits, not bytes: the **plateau** is the coordinator's RSS
//! once the circuit cap has been reached (the first sample at least
//! [`SETTLE`] after the first `RESOURCE_EXHAUSTED`), and every later sample
//! while the flood and the malformed phase go on must stay within 110 % of
//! it. A coordinator that kept allocating for refused names, or leaked per
//! refused request, would grow past it.
//!
//! How fast the cap is reached depends on how much CPU the coordinator gets
//! on this machine, so the flood runs on past its planned time until the
//! cap has been reached for [`PAST_CAP`] (within a longest time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use breakerd_proto::v1 as pb;
use parking_lot::Mutex;
use tonic::Code;
use tonic::transport::Endpoint;

/// Time after the cap is reached before the plateau is taken.
pub const SETTLE: Duration = Duration::from_millis(300);

/// How long the flood goes on once the cap is reached, at least: the
/// plateau is taken [`SETTLE`] after it, and memory must then be sampled
/// (every 100 ms) while the flood still runs.
pub const PAST_CAP: Duration = Duration::from_secs(1);

/// What the flood did.
#[derive(Debug, Clone, Default)]
pub struct FloodFigures {
    /// Requests answered OK (each created a circuit).
    pub created: u64,
    /// Requests answered `RESOURCE_EXHAUSTED`.
    pub exhausted: u64,
    /// Other answers, by code.
    pub other: BTreeMap<String, u64>,
    /// How long it ran.
    pub duration: Duration,
    /// When the cap was first hit, after the flood started.
    pub cap_after: Option<Duration>,
    /// When the cap was first hit.
    pub cap_at: Option<Instant>,
}

impl FloodFigures {
    /// Requests per second answered.
    pub fn rate(&self) -> f64 {
        let n = self.created + self.exhausted + self.other.values().sum::<u64>();
        n as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// Flood `url` for `duration` (at most `max_requests`) from `conns`
/// connections with `per_conn` requests in flight on each; and on past it,
/// up to `longest` in all, until the cap has been reached for
/// [`PAST_CAP`]. How fast the cap is reached depends on the CPU the
/// coordinator gets on this box; that the flood meets the cap must not.
pub async fn flood(
    url: &str,
    run: &str,
    duration: Duration,
    longest: Duration,
    max_requests: u64,
    conns: usize,
    per_conn: usize,
) -> Result<FloodFigures, String> {
    let start = Instant::now();
    let end = start + duration;
    let hard_end = start + longest.max(duration);
    // Milliseconds after `start` the cap was first hit, plus one (0: not
    // yet).
    let cap_hit = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let figures = Arc::new(Mutex::new(FloodFigures::default()));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        // One Endpoint per connection: a Channel is one HTTP/2 connection.
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        for _ in 0..per_conn {
            let mut client = pb::breaker_client::BreakerClient::new(channel.clone());
            let counter = Arc::clone(&counter);
            let figures = Arc::clone(&figures);
            let cap_hit = Arc::clone(&cap_hit);
            let hit = Arc::clone(&cap_hit);
            let run = run.to_owned();
            let going_on = move || {
                let now = Instant::now();
                if now < end {
                    return true;
                }
                match hit.load(Ordering::Relaxed) {
                    0 => now < hard_end,
                    hit => now < (start + Duration::from_millis(hit - 1) + PAST_CAP).min(hard_end),
                }
            };
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut exhausted) = (0u64, 0u64);
                let mut other: BTreeMap<String, u64> = BTreeMap::new();
                let mut cap_at = None;
                while going_on() {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if n >= max_requests {
                        break;
                    }
                    let mut req = tonic::Request::new(pb::AcquireRequest {
                        circuit: format!("flood-{run}-{n:09}"),
                        node_id: "chaos-flood".into(),
                    });
                    req.set_timeout(Duration::from_secs(2));
                    match tokio::time::timeout(Duration::from_secs(3), client.acquire(req)).await {
                        Ok(Ok(_)) => ok += 1,
                        Ok(Err(s)) if s.code() == Code::ResourceExhausted => {
                            exhausted += 1;
                            let at = *cap_at.get_or_insert_with(Instant::now);
                            let ms = u64::try_from((at - start).as_millis()).unwrap_or(u64::MAX);
                            let _ = cap_hit.compare_exchange(
                                0,
                                ms.saturating_add(1),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        Ok(Err(s)) => *other.entry(format!("{:?}", s.code())).or_default() += 1,
                        Err(_) => *other.entry("client timeout".into()).or_default() += 1,
                    }
                }
                let mut f = figures.lock();
                f.created += ok;
                f.exhausted += exhausted;
                for (k, v) in other {
                    *f.other.entry(k).or_default() += v;
                }
                f.cap_at = match (f.cap_at, cap_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut f = figures.lock().clone();
    f.duration = start.elapsed();
    f.cap_after = f.cap_at.map(|t| t.saturating_duration_since(start));
    Ok(f)
}

/// The figures as one JSON line (what a flood worker process prints).
pub fn to_json(f: &FloodFigures) -> String {
    serde_json::json!({
        "created": f.created,
        "exhausted": f.exhausted,
        "other": f.other,
        "duration_us": f.duration.as_micros() as u64,
        "cap_after_us": f.cap_after.map(|d| d.as_micros() as u64),
    })
    .to_string()
}

/// Figures back from [`to_json`]'s line; `started` is when the worker was
/// started (its cap time is relative to its own start, a little later).
pub fn from_json(line: &str, started: Instant) -> Option<FloodFigures> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let cap_after = v["cap_after_us"].as_u64().map(Duration::from_micros);
    Some(FloodFigures {
        created: v["created"].as_u64()?,
        exhausted: v["exhausted"].as_u64()?,
        other: v["other"]
            .as_object()?
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect(),
        duration: Duration::from_micros(v["duration_us"].as_u64()?),
        cap_after,
        cap_at: cap_after.map(|d| started + d),
    })
}

/// Run [`flood`] in a separate process (this executable with
/// `--flood-worker`) under `nice -n nice`: the attacker then competes for
/// the CPU as another machine would, not ahead of the legitimate nodes that
/// share this process's cores. Bounded by its own duration and count.
pub async fn flood_in_child(
    nice: i32,
    url: &str,
    run: &str,
    duration: Duration,
    longest: Duration,
    max_requests: u64,
) -> Result<FloodFigures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut cmd = std::process::Command::new("nice");
    cmd.arg("-n")
        .arg(nice.to_string())
        .arg(exe)
        .arg("--flood-worker")
        .arg(url)
        .arg("--flood-run")
        .arg(run)
        .arg("--flood-ms")
        .arg(duration.as_millis().to_string())
        .arg("--flood-longest-ms")
        .arg(longest.as_millis().to_string())
        .arg("--flood-max")
        .arg(max_requests.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("start flood worker: {e}"))?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("flood worker: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| from_json(l, started))
        .ok_or_else(|| format!("flood worker ({}) printed no figures", out.status))
}

/// One sample of the coordinator's resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSample {
    /// When.
    pub at: Instant,
    /// Which process (restarts change it).
    pub pid: u32,
    /// VmRSS, bytes.
    pub rss: u64,
}

/// The memory figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryFigures {
    /// RSS just before the flood.
    pub baseline: u64,
    /// RSS once the circuit cap was reached (see the module doc).
    pub plateau: u64,
    /// Highest RSS after the plateau.
    pub max_after: u64,
    /// Highest RSS after the plateau while the flood went on.
    pub max_flood: u64,
    /// Highest RSS from the end of the flood on (malformed input).
    pub max_later: u64,
    /// Samples after the plateau.
    pub samples_after: usize,
    /// Circuits the flood created.
    pub created: u64,
}

impl MemoryFigures {
    /// Bytes per circuit: (plateau - baseline) / created.
    pub fn per_circuit(&self) -> u64 {
        self.plateau.saturating_sub(self.baseline) / self.created.max(1)
    }
}

/// Memory figures from `samples`: `baseline` is the RSS before the flood,
/// `cap_at` when the cap was first hit, `flood_end` when the flood ended,
/// `pid` the coordinator flooded.
pub fn memory_figures(
    samples: &[RssSample],
    pid: u32,
    baseline: u64,
    cap_at: Instant,
    flood_end: Instant,
    created: u64,
) -> Option<MemoryFigures> {
    let mine = samples.iter().filter(|s| s.pid == pid && s.rss > 0);
    let plateau = mine.clone().find(|s| s.at >= cap_at + SETTLE)?;
    let after: Vec<&RssSample> = mine.filter(|s| s.at >= plateau.at).collect();
    let max = |f: &dyn Fn(&RssSample) -> bool| {
        after
            .iter()
            .filter(|s| f(s))
            .map(|s| s.rss)
            .max()
            .unwrap_or(0)
    };
    Some(MemoryFigures {
        baseline,
        plateau: plateau.rss,
        max_after: max(&|_| true),
        max_flood: max(&|s| s.at < flood_end),
        max_later: max(&|s| s.at >= flood_end),
        samples_after: after.len(),
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_is_taken_after_the_settle_time_for_the_flooded_process() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let samples = [
            RssSample {
                at: at(0),
                pid: 1,
                rss: 500,
            },
            RssSample {
                at: at(100),
                pid: 2,
                rss: 10,
            },
            RssSample {
                at: at(200),
                pid: 2,
                rss: 20,
            },
            RssSample {
                at: at(600),
                pid: 2,
                rss: 100,
            },
            RssSample {
                at: at(700),
                pid: 2,
                rss: 0,
            },
            RssSample {
                at: at(800),
                pid: 2,
                rss: 105,
            },
            RssSample {
                at: at(900),
                pid: 1,
                rss: 999,
            },
        ];
        let m = memory_figures(&samples, 2, 10, at(250), at(750), 9).expect("plateau");
        assert_eq!(m.plateau, 100);
        assert_eq!(m.max_after, 105);
        assert_eq!((m.max_flood, m.max_later), (100, 105));
        assert_eq!(m.samples_after, 2);
        assert_eq!(m.per_circuit(), 10);
        assert!(memory_figures(&samples, 2, 10, at(850), at(900), 9).is_none());
    }

    #[test]
    fn figures_survive_the_worker_pipe() {
        let mut f = FloodFigures {
            created: 5,
            exhausted: 7,
            duration: Duration::from_millis(1500),
            cap_after: Some(Duration::from_millis(800)),
            ..Default::default()
        };
        f.other.insert("Unavailable".into(), 2);
        let t = Instant::now();
        let back = from_json(&to_json(&f), t).expect("parses");
        assert_eq!((back.created, back.exhausted), (5, 7));
        assert_eq!(back.other, f.other);
        assert_eq!(back.duration, f.duration);
        assert_eq!(back.cap_at, Some(t + Duration::from_millis(800)));
        assert!(from_json("garbage", t).is_none());
    }

    #[test]
    fn rate_counts_every_answer() {
        let mut f = FloodFigures {
            created: 10,
            exhausted: 20,
            duration: Duration::from_secs(2),
            ..Default::default()
        };
        f.other.insert("Unavailable".into(), 10);
        assert!((f.rate() - 20.0).abs() < 1e-9);
    }
}
