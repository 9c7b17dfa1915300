//! RPC metrics: a tower middleware that records, per gRPC method, the time
//! to the response headers and the calls still in flight (open streams
//! included), for the side port's `/metrics`.
//!
//! Laid out like tower's own middleware: [`RpcMetricsService`] here,
//! [`RpcMetricsLayer`] in `layer.rs`, [`MeteredFuture`] in `future.rs`, and
//! beside them the [`MeteredBody`] the response is wrapped in (`body.rs`)
//! and the figures themselves, [`RpcMetrics`] (`stats.rs`). It has no error
//! of its own: the inner service's passes through.

mod body;
mod future;
mod layer;
pub mod stats;

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower::Service;

pub use body::MeteredBody;
pub use future::MeteredFuture;
pub use layer::RpcMetricsLayer;
pub use stats::{
    Histogram, LATENCY_BUCKETS, MAX_METHODS, MethodStats, OTHER, RpcMetrics, WATCH_METHOD,
};

use stats::InFlight;

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
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
        MeteredFuture::new(self.inner.call(req), started, guard)
    }
}
