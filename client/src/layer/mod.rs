//! A `tower` middleware guarding any service with a circuit.
//!
//! Laid out like tower's own middleware: the service here,
//! [`CircuitBreakerLayer`] in `layer.rs`, [`ResponseFuture`] in `future.rs`,
//! [`CircuitBreakerError`] in `error.rs`, and the pluggable
//! [`Classify`] rules in `classify.rs`.
//!
//! * `poll_ready` only asks the inner service: readiness never takes a
//!   permit, so a service polled ready and then dropped cannot leak a
//!   half-open probe.
//! * `call` asks the circuit. A rejection resolves to
//!   [`CircuitBreakerError::Rejected`] and the inner service is not called.
//!   Otherwise the permit travels in the [`ResponseFuture`] and is recorded
//!   with the classifier's verdict when the response resolves; a dropped
//!   future records `Ignored`.
//! * Because the circuit's decision may await a probe RPC (half-open), the
//!   inner service is called only after it: the service polled ready moves
//!   into the future and a clone takes its place (the usual tower pattern),
//!   hence `S: Clone`.
//!
//! ```no_run
//! # async fn demo(circuit: breakerd_client::Circuit) {
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use breakerd_client::layer::CircuitBreakerLayer;
//!
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(circuit))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         Ok::<_, std::io::Error>(http::Response::new(()))
//!     }));
//! let res = svc.oneshot(http::Request::new(())).await;
//! # }
//! ```

pub mod classify;
mod error;
mod future;
#[allow(clippy::module_inception)]
mod layer;

use std::task::{Context, Poll};

use tower::Service;

pub use classify::{
    Classify, ClassifyError, ClassifyResponse, DefaultClassifier, ResultClassifier,
};
pub use error::CircuitBreakerError;
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;

use crate::Circuit;

/// A service whose calls go through a circuit. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    circuit: Circuit,
    classifier: C,
}

impl<S> CircuitBreaker<S> {
    /// Guard `inner` with `circuit`, classifying with the
    /// [`DefaultClassifier`].
    pub fn new(inner: S, circuit: Circuit) -> Self {
        Self::with_classifier(inner, circuit, DefaultClassifier)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Guard `inner` with `circuit`, classifying with `classifier`.
    pub fn with_classifier(inner: S, circuit: Circuit, classifier: C) -> Self {
        Self {
            inner,
            circuit,
            classifier,
        }
    }

    /// The guarding circuit.
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, C> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CircuitBreakerError<S::Error>;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitBreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service goes with the request; its clone waits for the
        // next poll_ready.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let circuit = self.circuit.clone();
        let acquire = Box::pin(async move { circuit.acquire().await });
        ResponseFuture::new(acquire, ready, req, self.classifier.clone())
    }
}

#[cfg(test)]
mod tests;
