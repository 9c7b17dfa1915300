//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4),
//! written by hand.
//!
//! Every value comes from the registry's totals at scrape time, the
//! circuit counts and per-circuit series from the side port's shared copy
//! of the circuits (at most `[http] list_cache_ms` old), except the
//! per-method RPC figures, which the RPC metrics middleware
//! ([`crate::middleware::metrics`]) records as calls run. Label values are
//! bounded: per-circuit series are capped (the rest summed under
//! `circuit="_other"`), and so are gRPC methods (see
//! [`MAX_METHODS`](crate::middleware::metrics::MAX_METHODS)).

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{extract::State as Shared, response::Response};
use breakerd_policy::State;
use http::StatusCode;

use super::{
    cache::{PageQuery, Taken},
    response::respond,
    state::HttpState,
};
use breakerd_core::Registry;

use crate::middleware::metrics::{Histogram, LATENCY_BUCKETS, OTHER, RpcMetrics};

/// Writes `h` as the series of a Prometheus histogram `name{labels}`.
fn write_histogram(out: &mut String, h: &Histogram, name: &str, labels: &str) {
    let cumulative = h.cumulative();
    for (i, n) in cumulative.iter().enumerate() {
        let le = LATENCY_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds());
    // The count is the +Inf bucket, so the two always agree in a scrape.
    let total = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

/// `GET /metrics`: the exposition, as of now.
pub async fn scrape(Shared(state): Shared<Arc<HttpState>>) -> Response {
    let circuits = state.cache.fresh().await;
    let text = render(&ScrapeSources {
        registry: &state.registry,
        circuits: &circuits,
        rpc: &state.rpc,
        sse_clients: super::sse::open_streams(&state).0 as u64,
        max_circuit_series: state.config.max_circuit_series,
        started: state.started,
    });
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}

/// Everything `/metrics` shows besides the registry.
#[derive(Debug)]
pub struct ScrapeSources<'a> {
    /// The registry's totals.
    pub registry: &'a Registry,
    /// The circuits: the side port's shared copy (at most `[http]
    /// list_cache_ms` old), so that a scrape loop costs no scan each.
    pub circuits: &'a Taken,
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
        let page = src.circuits.page(&PageQuery {
            state: Some(state),
            limit: room.max(1),
            ..PageQuery::default()
        });
        by_state[state_index(state)] = page.total_matching as u64;
        own.extend(
            page.rows
                .iter()
                .take(room)
                .map(|r| (r.snapshot.name.to_string(), r.snapshot.state)),
        );
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
        write_histogram(
            &mut out,
            &m.latency,
            "breakerd_rpc_duration_seconds",
            &labels,
        );
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        write_histogram(&mut out, &h, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{m=\"a\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
