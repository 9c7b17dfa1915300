//! [`TracedFuture`]: polls the call inside its span, then adds
//! `x-trace-id` to the response and logs the answer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::HeaderValue;

use super::id::TRACE_ID_HEADER;

pin_project_lite::pin_project! {
    /// The response future of [`TraceService`](super::TraceService): polls
    /// the call inside its span and adds `x-trace-id` to the response. Written out rather than
    /// boxed, since it wraps every call.
    #[derive(Debug)]
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        header: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F> TracedFuture<F> {
    /// Wraps the inner call's future; `header` is the trace id to echo.
    pub(super) fn new(
        inner: F,
        span: tracing::Span,
        header: Option<HeaderValue>,
        started: Instant,
    ) -> Self {
        Self {
            inner,
            span,
            header,
            started,
        }
    }
}

impl<F, ResBody, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(header) = this.header.take() {
            res.headers_mut().insert(TRACE_ID_HEADER, header);
        }
        let grpc_status = res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        tracing::debug!(
            grpc_status,
            elapsed_us = this.started.elapsed().as_micros() as u64,
            "rpc answered"
        );
        Poll::Ready(Ok(res))
    }
}
