//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4),
//! written by hand, and the gRPC latency histograms behind it.
//!
//! Every value comes from the registry's totals at scrape time, except the
//! per-method RPC figures, which [`RpcMetricsLayer`] records as calls run.
//! Label values are bounded: per-circuit series are capped (the rest summed
//! under `circuit="_other"`) and gRPC methods beyond [`MAX_METHODS`] are
//! folded into `method="_other"`, so a client sending garbage paths cannot
//! grow the scrape.

use std::{
    collections::HashMap,
    fmt::Write as _,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use breakerd_policy::State;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::RwLock;
use tower::{Layer, Service};

use breakerd_core::{ListQuery, Registry};

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

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        // The count is the +Inf bucket, so the two always agree in a scrape.
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
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

/// gRPC figures recorded by [`RpcMetricsLayer`].
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
    fn sorted(&self) -> Vec<(Box<str>, Arc<MethodStats>)> {
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

/// A tower layer for the gRPC server that records every call in
/// [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// Takes one call out of `in_flight` when dropped, however the call ends.
#[derive(Debug)]
struct InFlight(Arc<MethodStats>);

impl InFlight {
    fn start(stats: Arc<MethodStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for RpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let stats = self.metrics.method(req.uri().path());
        let started = Instant::now();
        let guard = InFlight::start(stats);
        MeteredFuture {
            inner: self.inner.call(req),
            started,
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetricsService`]: records the latency
    /// when the response headers are ready. Written out rather than boxed,
    /// since it wraps every call.
    #[derive(Debug)]
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        guard: Option<InFlight>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        if let Some(guard) = &guard {
            guard.0.latency.observe(this.started.elapsed());
        }
        // On error the guard drops here; on success it lives as long as the
        // response body (a stream stays in flight while open).
        Poll::Ready(res.map(|r| {
            r.map(|body| MeteredBody {
                inner: body,
                _guard: guard,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted as in flight until it
    /// is dropped.
    #[derive(Debug)]
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything `/metrics` shows besides the registry.
#[derive(Debug)]
pub struct ScrapeSources<'a> {
    /// The circuits.
    pub registry: &'a Registry,
    /// gRPC calls.
    pub rpc: &'a RpcMetrics,
    /// Open `/events` streams.
    pub sse_clients: u64,
    /// Cap on per-circuit series.
    pub max_circuit_series: usize,
    /// When the process started.
    pub started: SystemTime,
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

const STATES: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

fn state_index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

/// The whole exposition, as of now.
pub fn render(src: &ScrapeSources<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let stats = src.registry.stats();

    // Counts by state, and the circuits that get a series of their own:
    // open ones first, then half-open, then closed, each by name.
    let mut by_state = [0u64; 3];
    let mut own: Vec<(String, State)> = Vec::new();
    for state in [State::Open, State::HalfOpen, State::Closed] {
        let room = src.max_circuit_series.saturating_sub(own.len());
        // One page is enough: the cap is at most a page.
        let page = src.registry.list(&ListQuery {
            state: Some(state),
            page_size: room.max(1),
            ..ListQuery::default()
        });
        if let Ok(page) = page {
            by_state[state_index(state)] = page.total_matching;
            own.extend(
                page.circuits
                    .into_iter()
                    .take(room)
                    .map(|c| (c.name.to_string(), c.state)),
            );
        }
    }
    // A circuit that changed state between two lists must not get two
    // series of its own.
    let mut seen = std::collections::HashSet::new();
    own.retain(|(name, _)| seen.insert(name.clone()));

    header(
        &mut out,
        "breakerd_circuits",
        "gauge",
        "Circuits held, by state.",
    );
    for (i, state) in STATES.into_iter().enumerate() {
        let _ = writeln!(
            out,
            "breakerd_circuits{{state=\"{}\"}} {}",
            state.as_str(),
            by_state[i]
        );
    }

    header(
        &mut out,
        "breakerd_circuit_state",
        "gauge",
        "1 for the state each circuit is in (a state set). Only the first \
         http.metrics_max_circuit_series circuits (open, then half-open, then closed) \
         have their own series; circuit=\"_other\" counts the rest by state.",
    );
    let mut own_by_state = [0u64; 3];
    for (name, state) in &own {
        let name = escape_label(name);
        for (i, s) in STATES.into_iter().enumerate() {
            let v = u8::from(s == *state);
            if s == *state {
                own_by_state[i] += 1;
            }
            let _ = writeln!(
                out,
                "breakerd_circuit_state{{circuit=\"{name}\",state=\"{}\"}} {v}",
                s.as_str()
            );
        }
    }
    let rest: Vec<u64> = (0..3)
        .map(|i| by_state[i].saturating_sub(own_by_state[i]))
        .collect();
    if rest.iter().any(|&n| n > 0) {
        for (i, s) in STATES.into_iter().enumerate() {
            let _ = writeln!(
                out,
                "breakerd_circuit_state{{circuit=\"{OTHER}\",state=\"{}\"}} {}",
                s.as_str(),
                rest[i]
            );
        }
    }

    header(
        &mut out,
        "breakerd_transitions_total",
        "counter",
        "State transitions (every generation step), by from, to and cause.",
    );
    let mut transitions = src.registry.transition_counts();
    transitions.sort_by_key(|t| (t.from.as_str(), t.to.as_str(), t.cause.as_str()));
    for t in transitions {
        let _ = writeln!(
            out,
            "breakerd_transitions_total{{from=\"{}\",to=\"{}\",cause=\"{}\"}} {}",
            t.from.as_str(),
            t.to.as_str(),
            t.cause.as_str(),
            t.count
        );
    }

    header(
        &mut out,
        "breakerd_outcomes_total",
        "counter",
        "Reported outcomes applied to their circuit, by kind.",
    );
    for (kind, n) in [
        ("success", stats.successes),
        ("failure", stats.failures),
        ("ignored", stats.ignored),
    ] {
        let _ = writeln!(out, "breakerd_outcomes_total{{kind=\"{kind}\"}} {n}");
    }
    single(
        &mut out,
        "breakerd_stale_reports_total",
        "counter",
        "Reported outcomes dropped as stale (another generation, or a lease no longer held).",
        stats.stale,
    );
    single(
        &mut out,
        "breakerd_unknown_circuit_reports_total",
        "counter",
        "Reported outcomes for circuits that do not exist.",
        stats.unknown,
    );
    single(
        &mut out,
        "breakerd_acquires_total",
        "counter",
        "Acquire calls answered.",
        stats.acquires,
    );
    header(
        &mut out,
        "breakerd_rejections_total",
        "counter",
        "Acquire calls rejected, by reason.",
    );
    for (reason, n) in [
        ("open", stats.rejected_open),
        ("probes_exhausted", stats.rejected_probes_exhausted),
        ("forced_open", stats.rejected_forced_open),
    ] {
        let _ = writeln!(out, "breakerd_rejections_total{{reason=\"{reason}\"}} {n}");
    }
    single(
        &mut out,
        "breakerd_probe_leases_granted_total",
        "counter",
        "Half-open probe leases granted.",
        stats.leases_granted,
    );
    single(
        &mut out,
        "breakerd_probe_leases_expired_total",
        "counter",
        "Probe leases taken back after their lease time ran out.",
        stats.leases_expired,
    );
    single(
        &mut out,
        "breakerd_circuits_created_total",
        "counter",
        "Circuits created.",
        stats.created,
    );
    single(
        &mut out,
        "breakerd_circuits_evicted_total",
        "counter",
        "Idle circuits evicted.",
        stats.evicted,
    );
    single(
        &mut out,
        "breakerd_circuits_max",
        "gauge",
        "Most circuits the coordinator holds (limits.max_circuits).",
        src.registry.config().max_circuits,
    );
    single(
        &mut out,
        "breakerd_watch_resyncs_total",
        "counter",
        "Watchers resynchronised after falling behind.",
        stats.watch_resyncs,
    );

    header(
        &mut out,
        "breakerd_connected_clients",
        "gauge",
        "Open watch streams: gRPC Watch calls, and dashboard /events streams.",
    );
    let _ = writeln!(
        out,
        "breakerd_connected_clients{{kind=\"grpc_watch\"}} {}",
        src.rpc.watch_streams().max(0)
    );
    let _ = writeln!(
        out,
        "breakerd_connected_clients{{kind=\"sse\"}} {}",
        src.sse_clients
    );

    let methods = src.rpc.sorted();
    header(
        &mut out,
        "breakerd_rpc_duration_seconds",
        "histogram",
        "Time from a gRPC request to its response headers, by method \
         (for streaming calls: until the stream is set up).",
    );
    for (name, m) in &methods {
        let labels = format!("method=\"{}\"", escape_label(name));
        m.latency
            .write(&mut out, "breakerd_rpc_duration_seconds", &labels);
    }
    header(
        &mut out,
        "breakerd_rpc_in_flight",
        "gauge",
        "gRPC calls not finished yet, open streams included, by method.",
    );
    for (name, m) in &methods {
        let _ = writeln!(
            out,
            "breakerd_rpc_in_flight{{method=\"{}\"}} {}",
            escape_label(name),
            m.in_flight.load(Ordering::Relaxed).max(0)
        );
    }

    header(
        &mut out,
        "breakerd_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "breakerd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let start = src
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    single(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        start,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.write(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{m=\"a\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
