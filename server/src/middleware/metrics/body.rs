//! [`MeteredBody`]: a response body that keeps its call counted in flight
//! until it is dropped, so an open stream counts for as long as it is open.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use hyper::body::{Body, Frame, SizeHint};

use super::stats::InFlight;

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

impl<B> MeteredBody<B> {
    /// `inner`, counted by `guard` (none when the call was not counted).
    pub(super) fn new(inner: B, guard: Option<InFlight>) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}
