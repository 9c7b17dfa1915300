//! The operators' HTTP side port: Prometheus metrics, a live dashboard and
//! a small JSON API, on its own address (`[http] listen`, default
//! `127.0.0.1:9464`), next to the gRPC port.
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//! | `GET /` | the dashboard page ([`dashboard`]) |
//! | `GET /events` | Server-Sent Events: circuit snapshots, live ([`sse`]) |
//! | `GET /api/circuits` | JSON list, paginated ([`api`]) |
//! | `GET /api/circuits/{name}` | one circuit with counters and history |
//! | `POST /api/circuits/{name}/override` | set an override (admin token) |
//! | `DELETE /api/circuits/{name}/override` | clear it (admin token) |
//!
//! Plain HTTP/1.1 on hyper, no framework: a handful of routes do not need
//! one. Every request is bounded (header and handler timeouts, a 16 KiB
//! body limit, a connection cap) and no input can panic a handler.

pub mod api;
pub mod dashboard;
pub mod metrics;
pub mod sse;

#[cfg(test)]
mod tests;

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::AtomicUsize},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    core::Registry, middleware::metrics::RpcMetrics, shutdown::ShutdownSignal, token::Token,
};

/// The admin token of the write routes.
pub type AdminToken = Token;

/// The checked `[http]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where to serve (`None`: the side port is off).
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was asked for (by flag, variable or file) rather
    /// than being the built-in default: only then is failing to bind it
    /// fatal. The default port may well be taken by another breakerd on the
    /// same host (tests, a second instance), and the side port is not worth
    /// refusing to coordinate for.
    pub listen_required: bool,
    /// The admin token (`None`: write actions are refused).
    pub admin_token: Option<AdminToken>,
    /// Cap on per-circuit metric series.
    pub max_circuit_series: usize,
}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Most `/events` streams open at once; more get 503.
pub const MAX_SSE_CLIENTS: usize = 64;
/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body included, `/events` streams excluded) must be answered
/// within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
    registry: Arc<Registry>,
    rpc: Arc<RpcMetrics>,
    config: HttpConfig,
    shutdown: ShutdownSignal,
    sse_clients: AtomicUsize,
    started: SystemTime,
}

impl HttpState {
    /// State over `registry` and the gRPC figures of `rpc`; `/events`
    /// streams end when `shutdown` fires.
    pub fn new(
        registry: Arc<Registry>,
        rpc: Arc<RpcMetrics>,
        config: HttpConfig,
        shutdown: ShutdownSignal,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            rpc,
            config,
            shutdown,
            sse_clients: AtomicUsize::new(0),
            started: SystemTime::now(),
        })
    }
}

/// A response body: all at once, or an event stream.
#[derive(Debug)]
pub enum Body {
    /// The whole body (taken on the first poll).
    Full(Option<Bytes>),
    /// Chunks from a producer task, until it hangs up.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A response with `status`, `content_type` and `body`, never cached.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Routes one request. Never panics on input; every path answers.
pub async fn handle<B>(state: Arc<HttpState>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let text = metrics::render(&metrics::ScrapeSources {
                registry: &state.registry,
                rpc: &state.rpc,
                sse_clients: state.sse_clients.load(std::sync::atomic::Ordering::Relaxed) as u64,
                max_circuit_series: state.config.max_circuit_series,
                started: state.started,
            });
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        (&Method::GET | &Method::HEAD, "/" | "/dashboard.js" | "/dashboard.css") => {
            dashboard::asset(&path)
        }
        (&Method::GET, "/events") => sse::events(&state),
        (&Method::GET, "/api/circuits") => api::list(&state, req.uri().query().unwrap_or("")),
        (_, p) if p.starts_with("/api/circuits/") => api::circuit(&state, req).await,
        (_, "/metrics" | "/" | "/events" | "/api/circuits") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no route for {path}")),
    }
}

/// Serves `state` on `listener` until its shutdown signal fires, then lets
/// open requests finish for at most `drain`.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, drain: Duration) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stop = state.shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop.wait() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(stream, peer, state.clone(), permit));
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<HttpState>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut stop = state.shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move {
            let res = if req.uri().path() == "/events" {
                // A stream: the handler returns at once, the body lives on.
                handle(state, req).await
            } else {
                tokio::time::timeout(REQUEST_TIMEOUT, handle(state, req))
                    .await
                    .unwrap_or_else(|_| error(StatusCode::REQUEST_TIMEOUT, "request timed out"))
            };
            Ok::<_, Infallible>(res)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
    }
}
