//! [`MeteredFuture`]: records a call's latency when its response headers
//! are ready, and hands the in-flight count on to the response body.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use super::{body::MeteredBody, stats::InFlight};

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetricsService`](super::RpcMetricsService):
    /// records the latency
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
            guard.stats().latency.observe(this.started.elapsed());
        }
        // On error the guard drops here; on success it lives as long as the
        // response body (a stream stays in flight while open).
        Poll::Ready(res.map(|r| r.map(|body| MeteredBody::new(body, guard))))
    }
}

impl<F> MeteredFuture<F> {
    /// Wraps the inner call's future, started at `started`.
    pub(super) fn new(inner: F, started: Instant, guard: InFlight) -> Self {
        Self {
            inner,
            started,
            guard: Some(guard),
        }
    }
}
