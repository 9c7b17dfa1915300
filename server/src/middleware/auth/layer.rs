//! [`AuthLayer`]: wraps the gRPC router in an [`AuthService`].

use std::sync::Arc;

use tower::Layer;

use super::{AuthService, access::AuthConfig};

/// Wraps the gRPC router with [`AuthService`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    config: Arc<AuthConfig>,
}

impl AuthLayer {
    /// A layer enforcing `config`.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            config: self.config.clone(),
        }
    }
}
