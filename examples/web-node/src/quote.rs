//! The web node's HTTP handlers: `GET /quote`, `GET /healthz`, `PUT /chaos`.

use std::sync::Arc;
use std::time::Duration;

use breakerd_client::fallback::{Fallback, Source};
use breakerd_client::retry::RetryPolicy;
use breakerd_client::{CallError, Circuit, Coordinator, Outcome, with_trace};
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde_json::json;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::json;
use crate::trace_ctx::TraceCtx;
use crate::upstream::{Chaos, UpstreamClient, UpstreamError};

/// Everything a request needs; shared by all connections.
pub struct App {
    /// The breakerd client (kept for health and shutdown).
    pub coordinator: Coordinator,
    /// The circuit guarding the upstream.
    pub circuit: Circuit,
    /// Retries of the upstream (shares one budget across requests).
    pub retry: RetryPolicy,
    /// Fallback tiers: last good price, reference table, "no price".
    pub fallback: Fallback<String, Option<f64>>,
    /// The upstream's HTTP client.
    pub upstream: UpstreamClient,
    /// Timeout of each upstream attempt.
    pub timeout: Duration,
    /// Knobs of the simulated upstream.
    pub chaos: Arc<Chaos>,
}

type Res = hyper::Response<Full<Bytes>>;

impl App {
    /// Route one request.
    pub async fn handle(&self, req: hyper::Request<Incoming>) -> Res {
        let ctx = TraceCtx::from_headers(req.headers());
        let query = req.uri().query().unwrap_or_default().to_owned();
        let mut res = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/quote") => {
                let span = info_span!("request", trace_id = %ctx.trace_id, route = "/quote");
                with_trace(
                    ctx.for_coordinator(),
                    self.quote(param(&query, "symbol"), &ctx),
                )
                .instrument(span)
                .await
            }
            ("GET", "/healthz") => self.health(),
            ("PUT", "/chaos") => self.chaos(&query),
            _ => json(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
        };
        if let Ok(v) = HeaderValue::from_str(&ctx.trace_id) {
            res.headers_mut().insert("x-trace-id", v);
        }
        res
    }

    async fn quote(&self, symbol: Option<String>, ctx: &TraceCtx) -> Res {
        let Some(symbol) = symbol.map(|s| s.to_ascii_uppercase()).filter(|s| {
            (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
        }) else {
            return json(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "symbol must be 1-12 letters, digits or dots" }),
            );
        };
        let started = Instant::now();

        // What each attempt says about the upstream: a 404 is our caller's
        // problem (not retried, not counted); 5xx, timeouts and connection
        // errors are the upstream's (counted, retried).
        let classify = |r: &Result<f64, UpstreamError>| match r {
            Ok(_) => Outcome::Success,
            Err(e) if e.is_client_error() => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        };
        let primary = self
            .retry
            .run_with(Some(&self.circuit), self.timeout, classify, || {
                self.upstream.price(&symbol, ctx)
            })
            .await;

        let (price, source) = match primary {
            Ok(price) => {
                self.fallback.remember(symbol.clone(), &Some(price));
                (Some(price), Source::Primary)
            }
            Err(e) if matches!(&e.error, CallError::Inner(u) if u.is_client_error()) => {
                info!(%symbol, error = %e, "unknown symbol");
                return json(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": "unknown symbol", "symbol": symbol }),
                );
            }
            Err(e) => {
                let retry_after_ms = e
                    .rejection()
                    .and_then(|r| r.retry_after())
                    .map(|d| d.as_millis() as u64);
                warn!(
                    %symbol,
                    error = %e,
                    attempts = e.attempts,
                    stop = ?e.stop,
                    retry_after_ms,
                    "upstream unavailable; falling back"
                );
                // Only a configured tier can answer, and the static one
                // always does.
                self.fallback
                    .tiers(symbol.clone())
                    .await
                    .unwrap_or((None, Source::Static))
            }
        };
        let age_ms = match source {
            Source::LastKnownGood { age } => Some(age.as_millis() as u64),
            _ => None,
        };
        info!(
            %symbol,
            price,
            source = source.as_str(),
            age_ms,
            latency_ms = started.elapsed().as_millis() as u64,
            "quote served"
        );
        let mut res = json(
            StatusCode::OK,
            &json!({
                "symbol": symbol,
                "price": price,
                "source": source.as_str(),
                "degraded": source.is_fallback(),
                "age_ms": age_ms,
                "trace_id": ctx.trace_id,
            }),
        );
        res.headers_mut()
            .insert("x-quote-source", HeaderValue::from_static(source.as_str()));
        res
    }

    /// Health that watches health: the node serves quotes even without the
    /// coordinator (degraded mode), so it stays 200 and says what it sees.
    fn health(&self) -> Res {
        let view = self.circuit.view();
        json(
            StatusCode::OK,
            &json!({
                "status": if self.coordinator.is_connected() { "ok" } else { "degraded" },
                "coordinator_connected": self.coordinator.is_connected(),
                "circuit": {
                    "name": self.circuit.name(),
                    "state": view.state.map(|s| s.as_str()),
                    "generation": view.generation,
                    "rejecting": view.is_rejecting(),
                },
                "dropped_reports": self.coordinator.dropped_reports(),
            }),
        )
    }

    /// `PUT /chaos?failure_rate=1&slow_rate=0`: change the simulated
    /// upstream while it runs.
    fn chaos(&self, query: &str) -> Res {
        let rate = |name| param(query, name).and_then(|v| v.parse::<f64>().ok());
        self.chaos.set(rate("failure_rate"), rate("slow_rate"));
        let (failure_rate, slow_rate) = self.chaos.rates();
        info!(failure_rate, slow_rate, "chaos changed");
        json(
            StatusCode::OK,
            &json!({ "failure_rate": failure_rate, "slow_rate": slow_rate }),
        )
    }
}

/// The value of `name` in a query string (no percent-decoding: symbols and
/// rates need none).
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
