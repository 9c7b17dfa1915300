//! The client's hot path: `acquire()` + `success()` on a CLOSED circuit,
//! against a real coordinator running in-process on loopback, next to the
//! alternative of running `breakerd_policy::Breaker` in-process behind a
//! mutex (no coordination at all), measured in the same run.
//!
//! Run with `cargo bench -p breakerd-client --bench hot_path`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use breakerd_client::{Coordinator, State};
use breakerd_policy::{Breaker, NodeId, Outcome, Policy, Report};
use criterion::{Criterion, criterion_group, criterion_main};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The coordinator's defaults, with the store in memory (a bench leaves no
/// files behind).
fn in_memory_config() -> breakerd::config::Config {
    use breakerd::config::{Cli, Config, FileConfig};
    let file = FileConfig::parse("[store]\npath = \"none\"\n").expect("config");
    Config::from_file(file, &Cli::default()).expect("config")
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, stopped) = oneshot::channel::<()>();
    let (coordinator, circuit) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(breakerd::app::serve(in_memory_config(), listener, async {
            let _ = stopped.await;
        }));
        let coordinator = Coordinator::builder()
            .endpoint(format!("http://{addr}"))
            .node_id("bench-1")
            .build()
            .expect("client");
        let circuit = coordinator.circuit("bench").expect("name");
        let mut view = circuit.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            view.wait_for(|v| v.state == Some(State::Closed)),
        )
        .await
        .expect("snapshot within 10 s")
        .expect("circuit alive");
        (coordinator, circuit)
    });

    let mut g = c.benchmark_group("closed_acquire_and_report");
    g.measurement_time(Duration::from_millis(2500));
    g.warm_up_time(Duration::from_millis(500));

    g.bench_function("breakerd_client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    match circuit.acquire().await {
                        Ok(p) => p.success(),
                        Err(e) => panic!("closed circuit rejected: {e}"),
                    }
                }
                start.elapsed()
            })
        });
    });

    let node = NodeId::from_name("bench-1");
    let local = Mutex::new(Breaker::new(Policy::default(), 1, 42, Instant::now()));
    g.bench_function("policy_breaker_behind_mutex", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut br = local.lock();
            let d = br.acquire(node, now);
            let started = Instant::now();
            let r = br.record(
                &Report {
                    generation: d.generation(),
                    lease: None,
                    outcome: Outcome::Success,
                    latency: started - now,
                    node,
                    completed_at: None,
                },
                now,
            );
            black_box(r)
        });
    });
    g.finish();

    rt.block_on(async {
        let flushed = tokio::time::timeout(Duration::from_secs(10), coordinator.flush()).await;
        let s = coordinator.stats();
        println!(
            "client stats: sent {} outcomes in {} batches ({:.0}/batch), applied {}, dropped (queue full) {}, acquire RPCs {}, flushed {:?}",
            s.sent_reports,
            s.sent_batches,
            s.sent_reports as f64 / s.sent_batches.max(1) as f64,
            s.applied_reports,
            s.dropped_reports,
            s.acquire_rpcs,
            flushed.ok()
        );
    });
    let _ = stop.send(());
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
