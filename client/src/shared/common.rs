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
