//! The flaky upstream ("pricing service") and the HTTP client that calls it.
//!
//! The simulated upstream is a second tiny HTTP server in this process, so
//! every call crosses a real socket: timeouts, refused connections and 5xx
//! answers are the real thing, and the trace headers really travel. Its
//! failure and slowness rates can be changed while it runs (`PUT /chaos` on
//! the web node) to watch the circuit open, probe and close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::trace_ctx::TraceCtx;

/// Knobs of the simulated upstream, shared with the `/chaos` endpoint.
#[derive(Debug)]
pub struct Chaos {
    failure_rate: AtomicU64,
    slow_rate: AtomicU64,
    /// How long a slow answer takes (beyond any sensible timeout).
    pub slow_for: Duration,
    /// Latency of a normal answer.
    pub latency: Duration,
}

impl Chaos {
    /// Rates are clamped to `0..=1`.
    pub fn new(failure_rate: f64, slow_rate: f64, latency: Duration) -> Self {
        let c = Self {
            failure_rate: AtomicU64::new(0),
            slow_rate: AtomicU64::new(0),
            slow_for: Duration::from_secs(5),
            latency,
        };
        c.set(Some(failure_rate), Some(slow_rate));
        c
    }

    /// Change either rate.
    pub fn set(&self, failure_rate: Option<f64>, slow_rate: Option<f64>) {
        let clamp = |r: f64| {
            if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        if let Some(r) = failure_rate {
            self.failure_rate
                .store(clamp(r).to_bits(), Ordering::Relaxed);
        }
        if let Some(r) = slow_rate {
            self.slow_rate.store(clamp(r).to_bits(), Ordering::Relaxed);
        }
    }

    /// Current (failure, slow) rates.
    pub fn rates(&self) -> (f64, f64) {
        (
            f64::from_bits(self.failure_rate.load(Ordering::Relaxed)),
            f64::from_bits(self.slow_rate.load(Ordering::Relaxed)),
        )
    }
}

/// The symbols the upstream knows, with a base price.
const SYMBOLS: &[(&str, f64)] = &[
    ("ACME", 101.25),
    ("GLOBEX", 47.80),
    ("INITECH", 12.05),
    ("UMBRELLA", 230.10),
];

/// The reference price of a symbol: what the alternative path (a slower,
/// end-of-day reference table) answers.
pub fn reference_price(symbol: &str) -> Option<f64> {
    SYMBOLS.iter().find(|(s, _)| *s == symbol).map(|(_, p)| *p)
}

/// Start the simulated upstream on `addr` (port 0: any free port).
pub async fn spawn_simulated(addr: SocketAddr, chaos: Arc<Chaos>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "upstream: accept failed");
                    continue;
                }
            };
            let chaos = Arc::clone(&chaos);
            tokio::spawn(async move {
                let svc = service_fn(move |req| simulated(req, Arc::clone(&chaos)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

/// `GET /price/{symbol}`: 200 with a price that drifts a little, 404 for an
/// unknown symbol, 503 at the failure rate, very slow at the slow rate.
async fn simulated(
    req: Request<Incoming>,
    chaos: Arc<Chaos>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ctx = TraceCtx::from_headers(req.headers());
    let symbol = req
        .uri()
        .path()
        .strip_prefix("/price/")
        .unwrap_or_default()
        .to_owned();
    let (failure_rate, slow_rate) = chaos.rates();
    let roll: f64 = rand::random();
    let reply = |status: StatusCode, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res
    };
    let res = if roll < failure_rate {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream overloaded".into(),
        )
    } else {
        if roll < failure_rate + slow_rate {
            tokio::time::sleep(chaos.slow_for).await;
        } else {
            tokio::time::sleep(chaos.latency).await;
        }
        match reference_price(&symbol) {
            Some(base) => {
                let drift = 1.0 + (rand::random::<f64>() - 0.5) / 50.0;
                reply(StatusCode::OK, format!("{:.2}", base * drift))
            }
            None => reply(StatusCode::NOT_FOUND, "unknown symbol".into()),
        }
    };
    info!(
        component = "upstream",
        trace_id = %ctx.trace_id,
        symbol = %symbol,
        status = res.status().as_u16(),
        "upstream answered"
    );
    Ok(res)
}

/// Why a call to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with an error status.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// Connecting or talking to it failed.
    #[error("upstream unreachable: {0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    /// Reading the answer failed.
    #[error("reading the upstream answer: {0}")]
    Body(#[from] hyper::Error),
    /// The answer was not a price.
    #[error("upstream sent a malformed price")]
    Malformed,
    /// The request could not be built (a symbol that is not URI-safe).
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
}

impl UpstreamError {
    /// A client-side error: retrying or falling back would not help.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Status(s) if s.is_client_error()) || matches!(self, Self::Request(_))
    }
}

/// The HTTP client of the upstream.
#[derive(Clone)]
pub struct UpstreamClient {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl UpstreamClient {
    /// A client of the upstream at `base` (e.g. `http://127.0.0.1:9000`).
    pub fn new(base: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(100)));
        Self {
            base: base.into(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `GET /price/{symbol}`, forwarding the trace headers. No timeout
    /// here: the caller's retry policy puts one on every attempt.
    pub async fn price(&self, symbol: &str, trace: &TraceCtx) -> Result<f64, UpstreamError> {
        let mut req = Request::get(format!("{}/price/{symbol}", self.base));
        for (name, value) in trace.outgoing() {
            req = req.header(name, value);
        }
        let res = self.http.request(req.body(Empty::new())?).await?;
        if !res.status().is_success() {
            return Err(UpstreamError::Status(res.status()));
        }
        let body = res.into_body().collect().await?.to_bytes();
        std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(UpstreamError::Malformed)
    }
}
