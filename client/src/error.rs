//! Typed errors of the client: why a call was not allowed, and what a
//! protected call ended with.
//!
//! Callers match on these instead of parsing strings: "the circuit is open"
//! ([`Error::Open`]), "the coordinator is unreachable and this circuit fails
//! closed" ([`Error::Unavailable`]) and "the dependency itself failed"
//! ([`CallError::Inner`]) are distinct variants.

use std::sync::Arc;
use std::time::Duration;

pub use breakerd_policy::{RejectReason, State};

/// Why the client refused a call, or could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The circuit is open (or half-open with every probe taken, or forced
    /// open by an operator): do not call the dependency.
    #[error("circuit {circuit} is {} ({}), retry after {retry_after:?}", state.as_str(), reason_str(*reason))]
    Open {
        /// The circuit's name.
        circuit: Arc<str>,
        /// State that rejected the call.
        state: State,
        /// Why it was rejected.
        reason: RejectReason,
        /// Time until asking again is worthwhile.
        retry_after: Duration,
    },
    /// The coordinator cannot be reached and the circuit's degraded mode is
    /// `FAIL_CLOSED`, so the call is refused without asking anyone.
    #[error("circuit {circuit}: coordinator unreachable and the circuit fails closed")]
    Unavailable {
        /// The circuit's name.
        circuit: Arc<str>,
    },
    /// The circuit name breaks the naming rule (1-200 bytes of
    /// `[A-Za-z0-9._:/-]`); nothing was sent.
    #[error("invalid circuit name {name:?}: it {problem}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        problem: breakerd_policy::NameProblem,
    },
    /// The coordinator answered but refused the request (for example
    /// `RESOURCE_EXHAUSTED` past its circuit cap, or an authentication
    /// error). Transport failures never surface here: they switch the client
    /// to its degraded mode.
    #[error("circuit {circuit}: coordinator refused the request: {code:?}: {message}")]
    Refused {
        /// The circuit's name.
        circuit: Arc<str>,
        /// The gRPC status code.
        code: tonic::Code,
        /// The coordinator's message.
        message: String,
    },
    /// The client was configured wrongly (bad endpoint, bad node id, no
    /// tokio runtime).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

fn reason_str(r: RejectReason) -> &'static str {
    match r {
        RejectReason::Open => "open",
        RejectReason::ProbesExhausted => "every probe is taken",
        RejectReason::ForcedOpen => "forced open by an operator",
    }
}

impl Error {
    /// True for [`Error::Open`]: the breaker said no.
    pub fn is_open(&self) -> bool {
        matches!(self, Error::Open { .. })
    }

    /// True for [`Error::Unavailable`]: the coordinator is unreachable and
    /// the circuit fails closed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// How long to wait before asking again, when the error says so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Open { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What a protected call made through [`Circuit::call`](crate::Circuit::call)
/// ended with, other than success.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The call was not made: the breaker (or degraded mode) refused it.
    #[error(transparent)]
    Rejected(Error),
    /// The call was made and did not finish within its timeout (counted as a
    /// failure).
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The call was made and returned this error.
    #[error("call failed: {0}")]
    Inner(E),
}

impl<E> CallError<E> {
    /// The inner error, when the call itself failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The rejection, when the call was not made.
    pub fn rejection(&self) -> Option<&Error> {
        match self {
            CallError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}
