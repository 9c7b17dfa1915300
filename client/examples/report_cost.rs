//! Cost of the background report path, for a profiler: pushes N outcomes
//! (`acquire()` + `success()` on CLOSED circuits) through one
//! [`Coordinator`] on a single-threaded runtime, like one thread of the
//! bench's load generator, then flushes.
//!
//! Every 512th outcome is a failure, which wakes the report task at once,
//! and the flush interval is an hour, so batches are the full 512 whatever
//! the program's speed and the work per outcome is deterministic; run it
//! under `valgrind --tool=callgrind` with two values of N and divide the
//! difference in instructions by the difference in N:
//!
//! ```sh
//! target/release/breakerd --store none --listen 127.0.0.1:50051 --http-listen off &
//! valgrind --tool=callgrind target/release/examples/report_cost http://127.0.0.1:50051 200000
//! ```

use std::time::Duration;

use breakerd_client::{Coordinator, State};

/// Typical dependency names, so the name work is realistic.
const NAMES: [&str; 8] = [
    "payments-gateway",
    "recs:v2",
    "db-primary",
    "inventory/eu-west-1",
    "search.backend",
    "auth-tokens",
    "pricing:v3",
    "shipping-quotes",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    // A whole number of batches, so the last outcome is a failure and the
    // final flush goes out at once.
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(102_400);
    let n = n.div_ceil(512) * 512;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let coordinator = Coordinator::builder()
            .endpoint(endpoint)
            .node_id("report-cost-1")
            .flush_interval(Duration::from_secs(3600))
            .build()
            .expect("client");
        let circuits: Vec<_> = NAMES
            .iter()
            .map(|n| coordinator.circuit(n).expect("name"))
            .collect();
        for c in &circuits {
            let mut view = c.subscribe();
            tokio::time::timeout(
                Duration::from_secs(30),
                view.wait_for(|v| v.state == Some(State::Closed)),
            )
            .await
            .expect("snapshot within 30 s")
            .expect("circuit alive");
        }
        for i in 0..n {
            let c = &circuits[(i % NAMES.len() as u64) as usize];
            match c.acquire().await {
                Ok(p) if i % 512 == 511 => p.failure(),
                Ok(p) => p.success(),
                Err(e) => panic!("closed circuit rejected: {e}"),
            }
            // Let the report task (and the connection) run, as a load
            // generator between calls would.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
        let flushed = tokio::time::timeout(Duration::from_secs(60), coordinator.flush()).await;
        let s = coordinator.stats();
        println!(
            "outcomes {n}: sent {} in {} batches, applied {}, dropped {}, unsent {}, flushed {:?}",
            s.sent_reports,
            s.sent_batches,
            s.applied_reports,
            s.dropped_reports,
            s.unsent_reports,
            flushed.ok()
        );
    });
}
