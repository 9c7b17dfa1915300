//! Trace ids across services: a tower middleware that opens one span per
//! request carrying the caller's trace id and the gRPC method, and echoes
//! the id in the `x-trace-id` response header.
//!
//! Laid out like tower's own middleware: [`TraceService`] here,
//! [`TraceLayer`] in `layer.rs`, [`TracedFuture`] in `future.rs`, and the
//! trace-id rules (which header wins, what is sane, fresh ids) in `id.rs`.
//! It has no error of its own: the inner service's passes through.

mod future;
pub mod id;
mod layer;

use std::{
    task::{Context, Poll},
    time::Instant,
};

use http::HeaderValue;
use tower::Service;

pub use future::TracedFuture;
pub use id::{
    MAX_TRACE_ID_LEN, TRACE_ID_HEADER, TRACEPARENT_HEADER, new_trace_id, parse_traceparent,
    parse_x_trace_id, trace_id_from_headers,
};
pub use layer::TraceLayer;

/// Runs each request inside an `rpc` span with `rpc` (the gRPC method path)
/// and `trace_id`, and returns the trace id in `x-trace-id`.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let trace_id = trace_id_from_headers(req.headers()).unwrap_or_else(new_trace_id);
        // `&str` fields, not `%` (Display), so the formatter copies them
        // rather than formatting each into a fresh string.
        let span = tracing::info_span!("rpc", rpc = req.uri().path(), trace_id = trace_id.as_str());
        let header = HeaderValue::from_str(&trace_id).ok();
        let started = Instant::now();
        let inner = span.in_scope(|| self.inner.call(req));
        TracedFuture::new(inner, span, header, started)
    }
}
