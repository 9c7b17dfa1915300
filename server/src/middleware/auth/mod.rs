//! Bearer-token authentication of the gRPC API: a tower middleware that
//! checks `authorization: Bearer <token>` on every request against the
//! tokens `[auth]` was checked into.
//!
//! Two tokens, each optional:
//!
//! | RPC | no token configured | token configured |
//! |---|---|---|
//! | `breakerd.v1.Admin/*` | open | the admin token only; the data-plane token is `PERMISSION_DENIED` |
//! | `breakerd.v1.Breaker/*` | open | the data-plane token or the admin token (admin may do everything) |
//! | health, reflection, anything else | open | open (probes carry no secret) |
//!
//! A missing, malformed or unknown token is `UNAUTHENTICATED`. Refusals are
//! answered by the layer before the handler runs, so a refused call never
//! changes state. Tokens are compared in constant time
//! ([`Token::matches`](crate::token::Token::matches)) and never logged: their `Debug` is redacted and
//! refusals name only the RPC.

//!
//! Laid out like tower's own middleware: [`AuthService`] here, [`AuthLayer`]
//! in `layer.rs`, the refusal [`Denied`] in `error.rs`, and the access rules
//! ([`Access`], [`AuthConfig::check`]) in `access.rs`. A refusal is a
//! response, not an error of the service, and an accepted call is the inner
//! service's own future, so there is no `future.rs`.

mod access;
mod error;
mod layer;

#[cfg(test)]
mod tests;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use tower::Service;

pub use access::{Access, AuthConfig, bearer_token};
pub use error::Denied;
pub use layer::AuthLayer;

/// Answers a refused request itself (`UNAUTHENTICATED` or
/// `PERMISSION_DENIED`, trailers-only) and passes the others on.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    config: Arc<AuthConfig>,
}

impl<S, B, ResBody> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let access = Access::for_path(req.uri().path());
        match self.config.check(access, req.headers()) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(denied) => {
                tracing::info!(
                    rpc = %req.uri().path(),
                    code = ?denied.code(),
                    reason = ?denied,
                    "rpc refused"
                );
                Either::Left(ready(Ok(denied.status().into_http())))
            }
        }
    }
}
