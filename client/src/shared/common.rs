//! The common handle: what the coordinator, its circuits and its permits
//! all reach through one `Arc` (settings, RPC clients, the link to the
//! coordinator, the report queue, counters and the clock epoch).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use breakerd_policy::NodeId;
use breakerd_proto::v1::breaker_client::BreakerClient;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::config::{Config, RpcChannel};
use super::evidence::MissedDeadlines;
use super::queue::{Queue, Queued};

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

/// The counters behind `Coordinator::stats`, bumped by the tasks and
/// permits.
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
    /// `report/codec.rs`).
    pub(crate) report_rpc: tonic::client::Grpc<RpcChannel>,
    link: AtomicU8,
    /// When the link last went `Down` (nanoseconds since `epoch`; 0 while
    /// it never did): the fail-static hold-off of degraded mode counts
    /// from it.
    down_since: AtomicU64,
    /// The run of missed RPC deadlines (see `evidence.rs`).
    missed: MissedDeadlines,
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
    /// The common handle of a new connection over `channel`: link unknown,
    /// clock epoch now.
    pub(crate) fn new(config: Config, channel: RpcChannel) -> Self {
        Self {
            node_name: config.node_id.clone(),
            node: NodeId::from_name(&config.node_id),
            client: BreakerClient::new(channel.clone()),
            report_rpc: tonic::client::Grpc::new(channel),
            link: AtomicU8::new(Link::Unknown as u8),
            down_since: AtomicU64::new(0),
            missed: MissedDeadlines::default(),
            link_tx: watch::Sender::new(false),
            kick: Notify::new(),
            urgent: Notify::new(),
            reports: Queue::new(config.queue_capacity),
            stats: AtomicStats::default(),
            epoch: Instant::now(),
            config,
        }
    }

    pub(crate) fn link(&self) -> Link {
        match self.link.load(Ordering::Acquire) {
            1 => Link::Up,
            2 => Link::Down,
            _ => Link::Unknown,
        }
    }

    /// A receiver of link changes: `true` while `Up`.
    pub(crate) fn connectivity(&self) -> watch::Receiver<bool> {
        self.link_tx.subscribe()
    }

    /// Called by the watch task once a fresh snapshot is in place.
    pub(crate) fn mark_up(&self) {
        self.missed.answered();
        if self.link.swap(Link::Up as u8, Ordering::AcqRel) != Link::Up as u8 {
            tracing::info!(node = %self.node_name, "coordinator connected");
            self.link_tx.send_replace(true);
        }
    }

    /// Switch to `Down`; false if it already was. `down_since` is written
    /// before the link turns `Down`, so whoever sees `Down` sees it.
    fn go_down(&self) -> bool {
        let mut prev = self.link.load(Ordering::Acquire);
        loop {
            if prev == Link::Down as u8 {
                return false;
            }
            self.down_since
                .store(self.now_nanos().max(1), Ordering::Relaxed);
            match self.link.compare_exchange(
                prev,
                Link::Down as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.link_tx.send_replace(false);
                    return true;
                }
                Err(now) => prev = now,
            }
        }
    }

    /// Called by the watch task when its stream failed or could not be
    /// opened: evidence that the coordinator is gone.
    pub(crate) fn mark_down_quiet(&self) {
        if self.go_down() {
            tracing::warn!(node = %self.node_name, "coordinator unreachable; deciding locally");
        }
    }

    /// Called when an RPC could not reach the coordinator (the connection
    /// failed), or when enough deadlines were missed in a row: decide
    /// locally from now on, and have the watch task re-establish (and so
    /// re-verify) the link.
    pub(crate) fn mark_down(&self, why: &'static str) {
        if self.go_down() {
            tracing::warn!(node = %self.node_name, why, "coordinator unreachable; deciding locally");
            self.kick.notify_one();
        }
    }

    /// When the link last went `Down`, as a deadline base (0: never).
    pub(crate) fn down_since(&self) -> u64 {
        self.down_since.load(Ordering::Relaxed)
    }

    /// The coordinator answered an RPC: any run of missed deadlines ends.
    pub(crate) fn rpc_answered(&self) {
        self.missed.answered();
    }

    /// An RPC started at `started` (see `now_nanos`) missed its deadline.
    /// Only `degrade_after_missed_deadlines` misses in a row are evidence
    /// enough to switch to degraded mode (see `evidence.rs`); returns true
    /// when this one did.
    pub(crate) fn rpc_missed_deadline(&self, started: u64) -> bool {
        let Some(run) = self.missed.missed(started, self.now_nanos()) else {
            return false;
        };
        if run < self.config.degrade_after_missed {
            tracing::debug!(node = %self.node_name, run, "coordinator RPC missed its deadline");
            return false;
        }
        self.mark_down("RPC deadlines missed in a row");
        self.link() == Link::Down
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

    /// Queue an outcome for the coordinator; never blocks. Urgent outcomes
    /// (see `Queued::is_urgent`) wake the report task so they go out at
    /// once.
    pub(crate) fn enqueue(&self, q: Queued) {
        let urgent = q.is_urgent();
        if !self.reports.push_report(q) {
            self.stats.dropped_reports.fetch_add(1, Ordering::Relaxed);
        } else if urgent {
            self.urgent.notify_one();
        }
    }
}
