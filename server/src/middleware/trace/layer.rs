//! [`TraceLayer`]: wraps services in a [`TraceService`].

use tower::Layer;

use super::TraceService;

/// Wraps services with [`TraceService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}
