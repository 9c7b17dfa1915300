//! The error of a [`CircuitBreaker`](super::CircuitBreaker) service.

/// Either the circuit refused the request (the inner service was not
/// called), or the inner service failed.
///
/// A typed enum rather than a boxed error, so callers can match a rejection
/// apart from the dependency's own error. The inner error is exposed as the
/// `source()`, so chain walkers (tonic's `Status::from_error`, logging) see
/// through the wrapper.
#[derive(Debug, thiserror::Error)]
pub enum CircuitBreakerError<E> {
    /// The circuit rejected the request (open, forced open, probes
    /// exhausted, or failing closed while the coordinator is unreachable).
    #[error(transparent)]
    Rejected(crate::Error),
    /// The inner service returned an error.
    #[error("inner service failed")]
    Inner(#[source] E),
}

impl<E> CircuitBreakerError<E> {
    /// The rejection, when the request was not sent.
    pub fn rejection(&self) -> Option<&crate::Error> {
        match self {
            Self::Rejected(e) => Some(e),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what happened.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Rejected(_) => None,
        }
    }

    /// Convert to the boxed error most tower stacks use, keeping the
    /// rejection downcastable to [`crate::Error`].
    pub fn into_boxed(self) -> tower::BoxError
    where
        E: Into<tower::BoxError>,
    {
        match self {
            Self::Rejected(e) => Box::new(e),
            Self::Inner(e) => e.into(),
        }
    }
}

impl CircuitBreakerError<tonic::transport::Error> {
    /// The circuit's rejection behind a `tonic::Status` returned by a
    /// generated gRPC client over a `CircuitBreaker<Channel>`.
    ///
    /// tonic turns service errors it does not recognise into a `Status`
    /// with code `UNKNOWN` whose `source()` is this error; this digs the
    /// rejection back out, so callers can tell "circuit open" from a
    /// failure of the dependency.
    pub fn rejection_in(status: &tonic::Status) -> Option<&crate::Error> {
        use std::error::Error as _;
        status.source()?.downcast_ref::<Self>()?.rejection()
    }
}

impl<E: super::classify::ClassifyError> super::classify::ClassifyError for CircuitBreakerError<E> {
    fn class(&self) -> crate::Outcome {
        match self {
            Self::Rejected(_) => crate::Outcome::Ignored,
            Self::Inner(e) => e.class(),
        }
    }
}
