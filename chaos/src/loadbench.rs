//! Issue #5 item 6: how long the coordinator takes to load 100k persisted
//! circuits (target: under 2 s).
//!
//! The store is written with the coordinator's own [`Store`]: half open
//! circuits with an hour left, a quarter forced open, a quarter with an
//! admin policy and a forced-closed override with an expiry. Then the real
//! binary starts on it, several times; each start reports the time from
//! spawning the process until its health check answers SERVING (it is
//! NOT_SERVING until the store is loaded), and the `store_load_ms` of its
//! `state loaded` log line. Every start also checks that all the circuits
//! are there.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakerd_core::store::{CircuitRecord, OverrideRecord, Store};
use breakerd_policy::{OverrideKind, PolicySpec, State};
use breakerd_proto::v1 as pb;

use crate::server::Launch;

/// The target of item 6.
pub const TARGET: Duration = Duration::from_secs(2);

/// The `i`-th record of the benchmark store.
pub fn record(i: usize, now_unix_ms: u64) -> CircuitRecord {
    let name = format!("bench-{i:06}");
    let mut r = CircuitRecord {
        name,
        state: State::Closed,
        generation: 1 + i as u64,
        open_until_ms: None,
        consecutive_trips: 0,
        admin_policy: None,
        override_: None,
        policy_version: 1,
    };
    match i % 4 {
        0 | 1 => {
            r.state = State::Open;
            r.open_until_ms = Some(now_unix_ms + 3_600_000);
            r.consecutive_trips = 1;
        }
        2 => {
            r.override_ = Some(OverrideRecord {
                kind: OverrideKind::ForcedOpen,
                reason: format!("bench incident {i}"),
                actor: "chaos-bench".into(),
                expires_at_ms: None,
            });
        }
        _ => {
            r.admin_policy = Some(PolicySpec {
                consecutive_failures: Some(7),
                open_base_ms: Some(30_000),
                ..Default::default()
            });
            r.override_ = Some(OverrideRecord {
                kind: OverrideKind::ForcedClosed,
                reason: format!("bench maintenance {i}"),
                actor: "chaos-bench".into(),
                expires_at_ms: Some(now_unix_ms + 7_200_000),
            });
        }
    }
    r
}

/// Write `n` records into a fresh store in `dir` and wait until they are
/// durable. Blocking: call it off the async runtime.
pub fn write_store(dir: &Path, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let (store, _loaded) = Store::open(dir).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut last = None;
    for i in 0..n {
        last = Some(store.put(record(i, now)));
    }
    if let Some(ack) = last {
        // The writer commits in order: the last ack covers every record.
        ack.wait_blocking().map_err(|e| e.to_string())?;
    }
    store.close().map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// One start of the benchmark.
#[derive(Debug, Clone)]
pub struct Start {
    /// From spawn to health SERVING.
    pub to_serving: Duration,
    /// `store_load_ms` from the log.
    pub store_load_ms: Option<u64>,
    /// `circuits` from the `state loaded` line.
    pub loaded: Option<u64>,
    /// Circuits the Admin API lists.
    pub listed: u64,
    /// RSS once serving, bytes.
    pub rss: u64,
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct BenchFigures {
    /// Records written.
    pub circuits: usize,
    /// Time to write them.
    pub write: Duration,
    /// State log size, bytes.
    pub log_bytes: u64,
    /// Each start.
    pub starts: Vec<Start>,
}

impl BenchFigures {
    /// Whether every start served within [`TARGET`] with every circuit.
    pub fn pass(&self) -> bool {
        !self.starts.is_empty()
            && self
                .starts
                .iter()
                .all(|s| s.to_serving < TARGET && s.listed == self.circuits as u64)
    }

    /// The summary lines.
    pub fn render(&self) -> String {
        let mut s = format!(
            "\n=== store load benchmark: {} persisted circuits ({:.1} MiB store file, written in {:.2} s) ===\n",
            self.circuits,
            self.log_bytes as f64 / (1024.0 * 1024.0),
            self.write.as_secs_f64()
        );
        for (i, st) in self.starts.iter().enumerate() {
            s += &format!(
                "start {}: spawn -> SERVING {:.0} ms, store_load_ms {} (state loaded: {} circuits), listed {}, RSS {:.1} MiB\n",
                i + 1,
                st.to_serving.as_secs_f64() * 1e3,
                st.store_load_ms.map_or("?".into(), |m| m.to_string()),
                st.loaded.map_or("?".into(), |m| m.to_string()),
                st.listed,
                st.rss as f64 / (1024.0 * 1024.0)
            );
        }
        s += &format!(
            "load benchmark: {} (target: every start SERVING in < {} ms with all circuits)\n",
            if self.pass() { "PASS" } else { "FAIL" },
            TARGET.as_millis()
        );
        s
    }
}

/// Run the benchmark: `n` circuits, `starts` starts of `launch` (whose
/// store must be `dir`).
pub async fn run(
    launch: &Launch,
    dir: &Path,
    n: usize,
    starts: usize,
) -> Result<BenchFigures, String> {
    let d = dir.to_owned();
    let write = tokio::task::spawn_blocking(move || write_store(&d, n))
        .await
        .map_err(|e| e.to_string())??;
    let log_bytes = std::fs::metadata(dir.join("breakerd.redb")).map_or(0, |m| m.len());
    let mut out = BenchFigures {
        circuits: n,
        write,
        log_bytes,
        starts: Vec::new(),
    };
    for i in 0..starts {
        let server = launch.start(100 + i).await?;
        let to_serving = server.serving_at - server.spawned;
        let facts = server.facts.lock().clone();
        let listed = count_circuits(&launch.url()).await?;
        out.starts.push(Start {
            to_serving,
            store_load_ms: facts.store_load_ms,
            loaded: facts.loaded_circuits,
            listed,
            rss: server.rss_bytes(),
        });
        drop(server);
    }
    Ok(out)
}

async fn count_circuits(url: &str) -> Result<u64, String> {
    let mut admin = pb::admin_client::AdminClient::connect(url.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let r = admin
        .list_circuits(pb::ListCircuitsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.into_inner().total_matching)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_mix_open_circuits_and_overrides_all_worth_keeping() {
        let now = 1_000_000;
        let kinds: Vec<(State, bool, bool)> = (0..4)
            .map(|i| {
                let r = record(i, now);
                assert!(r.worth_keeping());
                (r.state, r.override_.is_some(), r.admin_policy.is_some())
            })
            .collect();
        assert_eq!(kinds[0], (State::Open, false, false));
        assert_eq!(kinds[2], (State::Closed, true, false));
        assert_eq!(kinds[3], (State::Closed, true, true));
        assert_ne!(record(1, now).name, record(2, now).name);
    }

    #[test]
    fn the_benchmark_passes_only_under_target_with_every_circuit() {
        let start = |ms, listed| Start {
            to_serving: Duration::from_millis(ms),
            store_load_ms: Some(ms),
            loaded: Some(listed),
            listed,
            rss: 0,
        };
        let mut b = BenchFigures {
            circuits: 10,
            write: Duration::ZERO,
            log_bytes: 0,
            starts: vec![start(500, 10), start(900, 10)],
        };
        assert!(b.pass());
        assert!(b.render().contains("PASS"));
        b.starts.push(start(2000, 10));
        assert!(!b.pass());
        b.starts = vec![start(10, 9)];
        assert!(!b.pass());
        b.starts.clear();
        assert!(!b.pass());
    }
}
