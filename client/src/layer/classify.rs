//! Deciding what a finished call says about the dependency.
//!
//! A breaker is only as good as its classifier: a 404 or an invalid argument
//! is the caller's mistake and must not open a circuit for the whole fleet,
//! while a refused connection, a timeout or a 503 must. [`Classify`] is the
//! pluggable decision; [`DefaultClassifier`] implements the usual rules:
//!
//! | outcome | class |
//! |---|---|
//! | HTTP 1xx–3xx, gRPC `OK` | success |
//! | HTTP 5xx; gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | failure |
//! | timeouts (tower, tokio), connection errors (`std::io::Error`), unrecognised errors | failure |
//! | HTTP 4xx; every other gRPC code (`INVALID_ARGUMENT`, `NOT_FOUND`, `CANCELLED`, ...) | ignored |
//!
//! Client-side errors are *ignored* rather than successes, as the wire
//! contract says (`OUTCOME_IGNORED`: "its result says nothing about the
//! dependency"): they return a half-open probe lease but count nothing.
//!
//! gRPC status is read from a `tonic::Status` error or from the
//! `grpc-status` header of an `http::Response` (a "trailers-only" response,
//! which is how servers send errors without a body). A status sent in real
//! trailers arrives after the response head, when the circuit breaker's
//! future has already resolved, so such a response is classified by its
//! HTTP status (200: success); classify at the tonic client level (a
//! `tonic::Status` error) to see those.

use std::convert::Infallible;
use std::error::Error as StdError;

pub use crate::Outcome;

/// Classifies the result of a call made through a circuit.
///
/// Implemented by [`DefaultClassifier`], [`ResultClassifier`] and any
/// `Fn(Result<&Res, &Err>) -> Outcome`.
pub trait Classify<Res, Err> {
    /// The class of `result`.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
    }
}

/// The default rules (see the [module docs](self)): responses through
/// [`ClassifyResponse`], errors through [`ClassifyError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res: ClassifyResponse, Err: ClassifyError> Classify<Res, Err> for DefaultClassifier {
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(res) => res.class(),
            Err(err) => err.class(),
        }
    }
}

/// Every response is a success; errors are classified by [`ClassifyError`].
/// For services whose response type carries no status (`String`, a struct).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultClassifier;

impl<Res, Err: ClassifyError> Classify<Res, Err> for ResultClassifier {
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) => err.class(),
        }
    }
}

/// A response that knows its own class.
pub trait ClassifyResponse {
    /// The class of this response.
    fn class(&self) -> Outcome;
}

impl<B> ClassifyResponse for http::Response<B> {
    fn class(&self) -> Outcome {
        if let Some(code) = self
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            return grpc_code_class(tonic::Code::from_i32(code));
        }
        http_status_class(self.status())
    }
}

impl<T> ClassifyResponse for tonic::Response<T> {
    fn class(&self) -> Outcome {
        // tonic turns every non-OK status into an `Err(Status)`.
        Outcome::Success
    }
}

/// An error that knows its own class.
///
/// Implemented for the errors a dependency call typically fails with. For
/// an error type of your own, implement it or pass a closure classifier.
pub trait ClassifyError {
    /// The class of this error.
    fn class(&self) -> Outcome;
}

impl ClassifyError for tonic::Status {
    fn class(&self) -> Outcome {
        grpc_code_class(self.code())
    }
}

impl ClassifyError for std::io::Error {
    fn class(&self) -> Outcome {
        io_error_class(self)
    }
}

impl ClassifyError for tower::timeout::error::Elapsed {
    fn class(&self) -> Outcome {
        Outcome::Failure
    }
}

impl ClassifyError for tokio::time::error::Elapsed {
    fn class(&self) -> Outcome {
        Outcome::Failure
    }
}

impl ClassifyError for Box<dyn StdError + Send + Sync> {
    fn class(&self) -> Outcome {
        error_chain_class(self.as_ref())
    }
}

impl ClassifyError for tonic::transport::Error {
    fn class(&self) -> Outcome {
        // Connecting or talking to the endpoint failed.
        Outcome::Failure
    }
}

impl ClassifyError for crate::Error {
    fn class(&self) -> Outcome {
        // Another breaker refused the call: the dependency was not called.
        Outcome::Ignored
    }
}

impl<E: ClassifyError> ClassifyError for crate::CallError<E> {
    fn class(&self) -> Outcome {
        match self {
            crate::CallError::Rejected(_) => Outcome::Ignored,
            crate::CallError::Timeout(_) => Outcome::Failure,
            crate::CallError::Inner(e) => e.class(),
        }
    }
}

impl ClassifyError for Infallible {
    fn class(&self) -> Outcome {
        match *self {}
    }
}

/// Classify a type-erased error by walking its `source()` chain for a
/// `tonic::Status`, a `std::io::Error` or a timeout. An error with none of
/// these in its chain is a failure: an unknown error calling a dependency is
/// far more often the dependency's fault than the caller's.
pub fn error_chain_class(err: &(dyn StdError + 'static)) -> Outcome {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return status.class();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_error_class(io);
        }
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return Outcome::Failure;
        }
        cur = e.source();
    }
    Outcome::Failure
}

/// The class of an HTTP status: 5xx failure, 4xx ignored, others success.
pub fn http_status_class(status: http::StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Failure
    } else if status.is_client_error() {
        Outcome::Ignored
    } else {
        Outcome::Success
    }
}

/// The class of a gRPC status code.
pub fn grpc_code_class(code: tonic::Code) -> Outcome {
    use tonic::Code;
    match code {
        Code::Ok => Outcome::Success,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::DataLoss => Outcome::Failure,
        Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => Outcome::Ignored,
    }
}

fn io_error_class(err: &std::io::Error) -> Outcome {
    use std::io::ErrorKind;
    match err.kind() {
        // The caller's own mistakes or cancellation, not the dependency's.
        ErrorKind::InvalidInput | ErrorKind::Interrupted | ErrorKind::Unsupported => {
            Outcome::Ignored
        }
        // Refused, reset, aborted, timed out, broken pipe, EOF, and the rest.
        _ => Outcome::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn http(status: u16, grpc: Option<&str>) -> http::Response<()> {
        let mut b = http::Response::builder().status(status);
        if let Some(g) = grpc {
            b = b.header("grpc-status", g);
        }
        b.body(()).unwrap()
    }

    fn classify<Res: ClassifyResponse, Err: ClassifyError>(r: Result<&Res, &Err>) -> Outcome {
        DefaultClassifier.classify(r)
    }

    #[test]
    fn http_statuses() {
        for (code, want) in [
            (200, Outcome::Success),
            (204, Outcome::Success),
            (304, Outcome::Success),
            (400, Outcome::Ignored),
            (404, Outcome::Ignored),
            (429, Outcome::Ignored),
            (500, Outcome::Failure),
            (502, Outcome::Failure),
            (503, Outcome::Failure),
            (504, Outcome::Failure),
        ] {
            assert_eq!(
                classify::<_, Infallible>(Ok(&http(code, None))),
                want,
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn grpc_status_header_wins_over_http_200() {
        for (grpc, want) in [
            ("0", Outcome::Success),
            ("14", Outcome::Failure), // UNAVAILABLE
            ("4", Outcome::Failure),  // DEADLINE_EXCEEDED
            ("13", Outcome::Failure), // INTERNAL
            ("3", Outcome::Ignored),  // INVALID_ARGUMENT
            ("5", Outcome::Ignored),  // NOT_FOUND
            ("1", Outcome::Ignored),  // CANCELLED
        ] {
            assert_eq!(
                classify::<_, Infallible>(Ok(&http(200, Some(grpc)))),
                want,
                "grpc-status {grpc}"
            );
        }
        // Unparseable header: fall back to the HTTP status.
        assert_eq!(
            classify::<_, Infallible>(Ok(&http(503, Some("x")))),
            Outcome::Failure
        );
    }

    #[test]
    fn tonic_status_errors() {
        let c = |s: tonic::Status| classify::<tonic::Response<()>, _>(Err(&s));
        assert_eq!(c(tonic::Status::unavailable("down")), Outcome::Failure);
        assert_eq!(
            c(tonic::Status::deadline_exceeded("slow")),
            Outcome::Failure
        );
        assert_eq!(c(tonic::Status::internal("bug")), Outcome::Failure);
        assert_eq!(c(tonic::Status::invalid_argument("bad")), Outcome::Ignored);
        assert_eq!(c(tonic::Status::permission_denied("no")), Outcome::Ignored);
        assert_eq!(
            classify::<_, tonic::Status>(Ok(&tonic::Response::new(()))),
            Outcome::Success
        );
    }

    #[test]
    fn io_and_timeout_errors() {
        let c = |e: io::Error| classify::<http::Response<()>, _>(Err(&e));
        assert_eq!(c(io::ErrorKind::ConnectionRefused.into()), Outcome::Failure);
        assert_eq!(c(io::ErrorKind::ConnectionReset.into()), Outcome::Failure);
        assert_eq!(c(io::ErrorKind::TimedOut.into()), Outcome::Failure);
        assert_eq!(c(io::ErrorKind::InvalidInput.into()), Outcome::Ignored);
        let elapsed = tower::timeout::error::Elapsed::new();
        assert_eq!(
            classify::<http::Response<()>, _>(Err(&elapsed)),
            Outcome::Failure
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapper(#[source] tonic::Status);

    #[test]
    fn boxed_errors_are_classified_through_their_source_chain() {
        let c = |e: Box<dyn StdError + Send + Sync>| classify::<http::Response<()>, _>(Err(&e));
        assert_eq!(
            c(Box::new(tonic::Status::invalid_argument("bad"))),
            Outcome::Ignored
        );
        assert_eq!(
            c(Box::new(Wrapper(tonic::Status::invalid_argument("bad")))),
            Outcome::Ignored
        );
        assert_eq!(
            c(Box::new(Wrapper(tonic::Status::unavailable("down")))),
            Outcome::Failure
        );
        assert_eq!(
            c(Box::new(tower::timeout::error::Elapsed::new())),
            Outcome::Failure
        );
        assert_eq!(
            c("something odd".into()),
            Outcome::Failure,
            "unknown errors are failures"
        );
    }

    #[test]
    fn closures_and_result_classifier() {
        let only_teapots = |r: Result<&u16, &Infallible>| match r {
            Ok(418) => Outcome::Failure,
            _ => Outcome::Success,
        };
        assert_eq!(only_teapots.classify(Ok(&418)), Outcome::Failure);
        assert_eq!(
            Classify::<String, io::Error>::classify(&ResultClassifier, Ok(&String::new())),
            Outcome::Success
        );
        let refused: io::Error = io::ErrorKind::ConnectionRefused.into();
        assert_eq!(
            Classify::<String, _>::classify(&ResultClassifier, Err(&refused)),
            Outcome::Failure
        );
    }
}
