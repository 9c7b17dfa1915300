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
    #[error("circuit {circuit}: coordinator refused the request: {code}: {message}")]
    Refused {
        /// The circuit's name.
        circuit: Arc<str>,
        /// Why, as the gRPC status code the coordinator answered with.
        code: RefusalCode,
        /// The coordinator's message.
        message: String,
    },
    /// The client was configured wrongly (bad endpoint, bad node id, no
    /// tokio runtime).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// The gRPC status code of a refusal ([`Error::Refused`]): the codes with
/// which a coordinator that answered says no. The codes meaning it could
/// not answer (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, `UNKNOWN`,
/// `INTERNAL`, `ABORTED`) never appear here: they switch the client to its
/// degraded mode instead.
///
/// `Display` prints the code's name in the form `Unauthenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    /// `INVALID_ARGUMENT` (3): the request was malformed.
    InvalidArgument,
    /// `NOT_FOUND` (5).
    NotFound,
    /// `ALREADY_EXISTS` (6).
    AlreadyExists,
    /// `PERMISSION_DENIED` (7): the credentials do not allow this call.
    PermissionDenied,
    /// `RESOURCE_EXHAUSTED` (8): for example past the coordinator's circuit
    /// cap.
    ResourceExhausted,
    /// `FAILED_PRECONDITION` (9).
    FailedPrecondition,
    /// `OUT_OF_RANGE` (11).
    OutOfRange,
    /// `UNIMPLEMENTED` (12): the coordinator does not serve this RPC.
    Unimplemented,
    /// `DATA_LOSS` (15).
    DataLoss,
    /// `UNAUTHENTICATED` (16): no token, or a wrong one.
    Unauthenticated,
}

impl RefusalCode {
    /// The code's number in the gRPC status code table.
    pub fn grpc_code(self) -> i32 {
        match self {
            RefusalCode::InvalidArgument => 3,
            RefusalCode::NotFound => 5,
            RefusalCode::AlreadyExists => 6,
            RefusalCode::PermissionDenied => 7,
            RefusalCode::ResourceExhausted => 8,
            RefusalCode::FailedPrecondition => 9,
            RefusalCode::OutOfRange => 11,
            RefusalCode::Unimplemented => 12,
            RefusalCode::DataLoss => 15,
            RefusalCode::Unauthenticated => 16,
        }
    }

    /// The code's name, as `Display` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::InvalidArgument => "InvalidArgument",
            RefusalCode::NotFound => "NotFound",
            RefusalCode::AlreadyExists => "AlreadyExists",
            RefusalCode::PermissionDenied => "PermissionDenied",
            RefusalCode::ResourceExhausted => "ResourceExhausted",
            RefusalCode::FailedPrecondition => "FailedPrecondition",
            RefusalCode::OutOfRange => "OutOfRange",
            RefusalCode::Unimplemented => "Unimplemented",
            RefusalCode::DataLoss => "DataLoss",
            RefusalCode::Unauthenticated => "Unauthenticated",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
