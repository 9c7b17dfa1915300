//! The connection to one coordinator: the public handle on the registry of
//! circuits this node uses, connectivity and statistics. It starts the
//! background tasks (one Watch stream, one ReportStream) and hands out
//! circuit handles. `Coordinator::builder` lives in `builder.rs`, next to
//! the builder it returns, so that imports run one way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{oneshot, watch};

use crate::circuit::{Circuit, validate_name};
use crate::error::Error;
use crate::shared::{CircuitShared, Common, Config, Inner, Link, RpcChannel, TaskGuard};

/// Counters of one [`Coordinator`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Outcomes dropped because the report queue was full.
    pub dropped_reports: u64,
    /// Outcomes dropped because the report stream was down.
    pub unsent_reports: u64,
    /// Outcomes sent to the coordinator.
    pub sent_reports: u64,
    /// Outcomes the coordinator counted.
    pub applied_reports: u64,
    /// Outcomes the coordinator dropped as stale.
    pub stale_reports: u64,
    /// Batches sent.
    pub sent_batches: u64,
    /// Unary Acquire RPCs made (calls that could not be decided locally).
    pub acquire_rpcs: u64,
    /// Watch streams opened successfully.
    pub watch_connects: u64,
}

/// A connection to a breakerd coordinator, shared by every circuit this
/// node protects. Cheap to clone (an `Arc` inside).
///
/// ```no_run
/// # async fn demo() -> Result<(), breakerd_client::Error> {
/// use std::time::Duration;
/// use breakerd_client::Coordinator;
///
/// let coordinator = Coordinator::builder()
///     .endpoint("http://127.0.0.1:50051")
///     .node_id("web-1")
///     .rpc_timeout(Duration::from_millis(30))
///     .build()?;
/// let payments = coordinator.circuit("payments")?;
/// match payments.acquire().await {
///     Ok(permit) => {
///         // ... call the dependency ...
///         permit.success();
///     }
///     Err(e) if e.is_open() => { /* fall back */ }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
    tasks: Arc<TaskGuard>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("endpoint", &self.inner.common.config.endpoint)
            .field("node_id", &self.inner.common.node_name)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Coordinator {
    /// Build from a finished configuration: connects lazily, spawns the
    /// watch and report tasks on the current tokio runtime.
    pub(crate) fn start(
        config: Config,
        channel: RpcChannel,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let common = Arc::new(Common::new(config, channel));
        let inner = Arc::new(Inner::new(common));
        let watch = runtime.spawn(crate::watch::run(Arc::clone(&inner)));
        let report = runtime.spawn(crate::report::run(Arc::clone(&inner)));
        let tasks = Arc::new(TaskGuard::new(vec![
            watch.abort_handle(),
            report.abort_handle(),
        ]));
        Self { inner, tasks }
    }

    /// A connection with no background tasks (no Watch, no ReportStream),
    /// for unit tests that push snapshots and flip the link by hand.
    #[cfg(test)]
    pub(crate) fn start_detached(config: Config, channel: RpcChannel) -> Self {
        let common = Arc::new(Common::new(config, channel));
        let inner = Arc::new(Inner::new(common));
        let tasks = Arc::new(TaskGuard::new(Vec::new()));
        Self { inner, tasks }
    }

    /// The common handle, for unit tests.
    #[cfg(test)]
    pub(crate) fn common(&self) -> &Common {
        &self.inner.common
    }

    /// A handle on the circuit `name`, checked with the coordinator's naming
    /// rule (1-200 bytes of `[A-Za-z0-9._:/-]`). The first time a name is
    /// used the Watch stream is re-opened to include it; no call waits for
    /// that.
    pub fn circuit(&self, name: &str) -> Result<Circuit, Error> {
        if let Some(shared) = self.inner.by_name(name) {
            return Ok(self.handle(shared));
        }
        validate_name(name)?;
        let shared = {
            let mut reg = self.inner.registry.write();
            if let Some(s) = reg.by_name.get(name) {
                Arc::clone(s)
            } else {
                let idx = u32::try_from(reg.by_idx.len())
                    .map_err(|_| Error::Config("too many circuits on one coordinator".into()))?;
                let name: Arc<str> = Arc::from(name);
                let s = Arc::new(CircuitShared::new(
                    Arc::clone(&name),
                    idx,
                    Arc::clone(&self.inner.common),
                ));
                reg.by_name.insert(name, Arc::clone(&s));
                reg.by_idx.push(Arc::clone(&s));
                self.inner.registry_version.send_modify(|v| *v += 1);
                s
            }
        };
        Ok(self.handle(shared))
    }

    fn handle(&self, shared: Arc<CircuitShared>) -> Circuit {
        Circuit {
            shared,
            _tasks: Arc::clone(&self.tasks),
        }
    }

    /// This node's id, as sent to the coordinator.
    pub fn node_id(&self) -> &str {
        &self.inner.common.node_name
    }

    /// True while the Watch stream is up and its state is in use; false
    /// while calls are decided by degraded mode (or before first contact).
    pub fn is_connected(&self) -> bool {
        self.inner.common.link() == Link::Up
    }

    /// A receiver of connectivity changes (`true`: coordinated decisions,
    /// `false`: degraded mode or not connected yet).
    pub fn connectivity(&self) -> watch::Receiver<bool> {
        self.inner.common.connectivity()
    }

    /// Outcomes dropped because the report queue was full.
    pub fn dropped_reports(&self) -> u64 {
        self.inner
            .common
            .stats
            .dropped_reports
            .load(Ordering::Relaxed)
    }

    /// A copy of this connection's counters.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.common.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            dropped_reports: l(&s.dropped_reports),
            unsent_reports: l(&s.unsent_reports),
            sent_reports: l(&s.sent_reports),
            applied_reports: l(&s.applied_reports),
            stale_reports: l(&s.stale_reports),
            sent_batches: l(&s.sent_batches),
            acquire_rpcs: l(&s.acquire_rpcs),
            watch_connects: l(&s.watch_connects),
        }
    }

    /// Send every outcome recorded so far and wait until the coordinator
    /// has acknowledged it. Returns false if they could not be delivered
    /// (report stream down). Use it before shutdown, or wrap it in a
    /// timeout.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self.inner.common.reports.push_flush(tx) {
            return false;
        }
        // An open batch goes out now rather than at its next tick.
        self.inner.common.urgent.notify_one();
        rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    /// Here rather than in `circuit.rs`: making a circuit takes a
    /// coordinator.
    #[test]
    fn the_acquire_future_stays_small() {
        fn size_of_future<F: Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let coordinator = crate::Coordinator::builder()
            .endpoint("http://127.0.0.1:9")
            .build()
            .expect("config");
        let circuit = coordinator.circuit("size").expect("name");
        let size = size_of_future(&circuit.acquire());
        assert!(size <= 256, "acquire() future is {size} bytes");
    }
}
