//! [`RpcMetricsLayer`]: wraps services in an [`RpcMetricsService`].

use std::sync::Arc;

use tower::Layer;

use super::{RpcMetricsService, stats::RpcMetrics};

/// A tower layer for the gRPC server that records every call in
/// [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}
