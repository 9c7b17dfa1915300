//! [`CircuitBreakerLayer`]: wraps services in a [`CircuitBreaker`].

use tower::Layer;

use super::CircuitBreaker;
use super::classify::DefaultClassifier;
use crate::Circuit;

/// Applies a [`CircuitBreaker`] guarded by one circuit to a service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    circuit: Circuit,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer guarding services with `circuit`, classifying results with
    /// the [`DefaultClassifier`].
    pub fn new(circuit: Circuit) -> Self {
        Self {
            circuit,
            classifier: DefaultClassifier,
        }
    }
}

// Here rather than in mod.rs, so the service does not import its layer
// back (mod.rs only re-exports this file).
impl<S> CircuitBreaker<S> {
    /// A [`CircuitBreakerLayer`] for `circuit`.
    pub fn layer(circuit: Circuit) -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(circuit)
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Use `classifier` instead (a [`Classify`](super::Classify)
    /// implementation or a closure `Fn(Result<&Res, &Err>) -> Outcome`).
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            circuit: self.circuit,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.circuit.clone(), self.classifier.clone())
    }
}
