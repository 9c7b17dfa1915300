//! What [`RpcMetricsLayer`](super::RpcMetricsLayer) records: per gRPC
//! method, a latency histogram and the calls in flight. Lock-free on the
//! call path (atomics); the side port's `/metrics` reads and renders them.
//!
//! Method labels are bounded: odd paths and methods beyond
//! [`MAX_METHODS`] are folded into [`OTHER`], so a client sending garbage
//! paths cannot grow the scrape.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::RwLock;

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Most distinct gRPC method labels; later ones count as `_other`.
pub const MAX_METHODS: usize = 64;
/// The label standing for everything past a cap.
pub const OTHER: &str = "_other";
/// The gRPC method whose open streams are the connected watchers.
pub const WATCH_METHOD: &str = "breakerd.v1.Breaker/Watch";

/// A latency histogram with fixed [`LATENCY_BUCKETS`]; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Observations at or below each bound of [`LATENCY_BUCKETS`], then in
    /// all (the `+Inf` bucket), as Prometheus exposes them.
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let mut cumulative = 0;
        self.buckets.each_ref().map(|bucket| {
            cumulative += bucket.load(Ordering::Relaxed);
            cumulative
        })
    }
}

/// Per gRPC method: latency and calls in flight.
#[derive(Debug, Default)]
pub struct MethodStats {
    /// Time from the request to the response headers (for streams: until
    /// the stream is set up, not its lifetime).
    pub latency: Histogram,
    /// Calls whose response is not finished yet; open streams included.
    pub in_flight: AtomicI64,
}

/// gRPC figures recorded by [`RpcMetricsLayer`](super::RpcMetricsLayer).
#[derive(Debug, Default)]
pub struct RpcMetrics {
    methods: RwLock<HashMap<Box<str>, Arc<MethodStats>>>,
}

impl RpcMetrics {
    /// A shareable, empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The stats of the method at `path` (`/package.Service/Method`),
    /// created on first use; odd or too many methods share `_other`.
    pub fn method(&self, path: &str) -> Arc<MethodStats> {
        let name = path.strip_prefix('/').unwrap_or(path);
        let sane = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/'));
        let name = if sane { name } else { OTHER };
        if let Some(m) = self.methods.read().get(name) {
            return m.clone();
        }
        let mut methods = self.methods.write();
        let name = if methods.len() >= MAX_METHODS && !methods.contains_key(name) {
            OTHER
        } else {
            name
        };
        methods.entry(name.into()).or_default().clone()
    }

    /// Snapshot of the methods seen, sorted by name.
    pub fn sorted(&self) -> Vec<(Box<str>, Arc<MethodStats>)> {
        let mut v: Vec<_> = self
            .methods
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Open `Watch` streams.
    pub fn watch_streams(&self) -> i64 {
        self.methods
            .read()
            .get(WATCH_METHOD)
            .map_or(0, |m| m.in_flight.load(Ordering::Relaxed))
    }
}

/// Takes one call out of `in_flight` when dropped, however the call ends.
#[derive(Debug)]
pub(super) struct InFlight(Arc<MethodStats>);

impl InFlight {
    pub(super) fn start(stats: Arc<MethodStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl InFlight {
    /// The stats of the call's method.
    pub(super) fn stats(&self) -> &MethodStats {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        let m = RpcMetrics::default();
        m.method("/breakerd.v1.Breaker/Acquire");
        m.method("/evil\"path{}");
        for i in 0..200 {
            m.method(&format!("/x.Y/M{i}"));
        }
        let names: Vec<_> = m.sorted().into_iter().map(|(n, _)| n).collect();
        assert!(names.len() <= MAX_METHODS + 1, "{}", names.len());
        assert!(names.iter().any(|n| &**n == "breakerd.v1.Breaker/Acquire"));
        assert!(names.iter().any(|n| &**n == OTHER));
        assert!(names.iter().all(|n| !n.contains('"')));
    }
}
