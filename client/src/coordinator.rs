//! The connection to one coordinator: the registry of circuits this node
//! uses, connectivity, statistics, and the background tasks (one Watch
//! stream, one ReportStream).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use breakerd_policy::{NodeId, Outcome};
use breakerd_proto::v1::breaker_client::BreakerClient;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::builder::{Builder, Config, RpcChannel};
use crate::circuit::{Circuit, CircuitShared, validate_name};
use crate::error::Error;
use crate::report::{Queue, Queued};

/// What the client believes about its coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not connected yet, nothing failed yet.
    Unknown = 0,
    /// The Watch stream is up and has delivered its snapshot.
    Up = 1,
    /// Unreachable: decide locally.
    Down = 2,
}

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

#[derive(Default)]
pub(crate) struct AtomicStats {
    pub(crate) dropped_reports: AtomicU64,
    pub(crate) unsent_reports: AtomicU64,
    pub(crate) sent_reports: AtomicU64,
    pub(crate) applied_reports: AtomicU64,
    pub(crate) stale_reports: AtomicU64,
    pub(crate) sent_batches: AtomicU64,
    pub(crate) acquire_rpcs: AtomicU64,
    pub(crate) watch_connects: AtomicU64,
}

/// State shared by the coordinator, its circuits and its permits. It never
/// points back at the registry, so circuits hold it without a cycle.
pub(crate) struct Common {
    pub(crate) config: Config,
    pub(crate) node_name: String,
    pub(crate) node: NodeId,
    pub(crate) client: BreakerClient<RpcChannel>,
    /// The same channel, for `ReportStream` with its own codec (see
    /// [`wire`](crate::wire)).
    pub(crate) report_rpc: tonic::client::Grpc<RpcChannel>,
    link: AtomicU8,
    link_tx: watch::Sender<bool>,
    /// Wakes the watch task when an RPC found the coordinator unreachable.
    pub(crate) kick: Notify,
    /// Wakes the report task for outcomes that must go out at once.
    pub(crate) urgent: Notify,
    pub(crate) reports: Queue,
    pub(crate) stats: AtomicStats,
    epoch: Instant,
}

impl Common {
    pub(crate) fn link(&self) -> Link {
        match self.link.load(Ordering::Acquire) {
            1 => Link::Up,
            2 => Link::Down,
            _ => Link::Unknown,
        }
    }

    /// Called by the watch task once a fresh snapshot is in place.
    pub(crate) fn mark_up(&self) {
        if self.link.swap(Link::Up as u8, Ordering::AcqRel) != Link::Up as u8 {
            tracing::info!(node = %self.node_name, "coordinator connected");
            self.link_tx.send_replace(true);
        }
    }

    /// Called by the watch task when its stream failed.
    pub(crate) fn mark_down_quiet(&self) {
        if self.link.swap(Link::Down as u8, Ordering::AcqRel) != Link::Down as u8 {
            tracing::warn!(node = %self.node_name, "coordinator unreachable; deciding locally");
            self.link_tx.send_replace(false);
        }
    }

    /// Called when an RPC failed or timed out: decide locally from now on,
    /// and have the watch task re-establish (and so re-verify) the link.
    pub(crate) fn mark_down(&self) {
        let prev = self.link.swap(Link::Down as u8, Ordering::AcqRel);
        if prev != Link::Down as u8 {
            tracing::warn!(node = %self.node_name, "coordinator RPC failed; deciding locally");
            self.link_tx.send_replace(false);
            self.kick.notify_one();
        }
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The epoch-relative deadline `d` from now (never 0, which means none).
    pub(crate) fn nanos_after(&self, d: Duration) -> u64 {
        self.now_nanos()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .max(1)
    }

    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Queue an outcome for the coordinator; never blocks. Failures and
    /// probe outcomes wake the report task so they go out at once.
    pub(crate) fn enqueue(&self, q: Queued) {
        let urgent = q.outcome == Outcome::Failure || q.lease != 0;
        if !self.reports.push_report(q) {
            self.stats.dropped_reports.fetch_add(1, Ordering::Relaxed);
        } else if urgent {
            self.urgent.notify_one();
        }
    }
}

pub(crate) struct Registry {
    pub(crate) by_name: HashMap<Arc<str>, Arc<CircuitShared>>,
    pub(crate) by_idx: Vec<Arc<CircuitShared>>,
}

pub(crate) struct Inner {
    pub(crate) common: Arc<Common>,
    pub(crate) registry: RwLock<Registry>,
    /// Bumped when a circuit is first used, so the watch task resubscribes.
    pub(crate) registry_version: watch::Sender<u64>,
}

impl Inner {
    pub(crate) fn circuit_at(&self, idx: u32) -> Option<Arc<CircuitShared>> {
        self.registry.read().by_idx.get(idx as usize).cloned()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Arc<CircuitShared>> {
        self.registry.read().by_name.get(name).cloned()
    }
}

/// Aborts the background tasks when the last handle is gone.
pub(crate) struct TaskGuard {
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
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
    /// Start configuring a coordinator connection.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Build from a finished configuration: connects lazily, spawns the
    /// watch and report tasks on the current tokio runtime.
    pub(crate) fn start(
        config: Config,
        channel: RpcChannel,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let node = NodeId::from_name(&config.node_id);
        let common = Arc::new(Common {
            node_name: config.node_id.clone(),
            node,
            client: BreakerClient::new(channel.clone()),
            report_rpc: tonic::client::Grpc::new(channel),
            link: AtomicU8::new(Link::Unknown as u8),
            link_tx: watch::Sender::new(false),
            kick: Notify::new(),
            urgent: Notify::new(),
            reports: Queue::new(config.queue_capacity),
            stats: AtomicStats::default(),
            epoch: Instant::now(),
            config,
        });
        let inner = Arc::new(Inner {
            common,
            registry: RwLock::new(Registry {
                by_name: HashMap::new(),
                by_idx: Vec::new(),
            }),
            registry_version: watch::Sender::new(0),
        });
        let watch = runtime.spawn(crate::watch::run(Arc::clone(&inner)));
        let report = runtime.spawn(crate::report::run(Arc::clone(&inner)));
        let tasks = Arc::new(TaskGuard {
            tasks: Mutex::new(vec![watch.abort_handle(), report.abort_handle()]),
        });
        Self { inner, tasks }
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
        self.inner.common.link_tx.subscribe()
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
