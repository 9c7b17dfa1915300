//! The errors of the coordinator core.
//!
//! Every failure a caller can cause is one variant here, so the gRPC adapter
//! maps them to status codes in one exhaustive `match`: adding a variant
//! forces a decision about its code.

use breakerd_policy::{InvalidPolicy, NameProblem};

/// Why a core operation was refused. Nothing changed when one is returned,
/// except for [`CoreError::Storage`], which reports a change that was made
/// but not made durable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// A circuit name or node id breaks the naming rule
    /// (gRPC: `INVALID_ARGUMENT`).
    #[error("{what} {problem}")]
    InvalidName {
        /// What was named, e.g. `circuit name` or `outcomes[3].circuit: circuit name`.
        what: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A policy change would produce an invalid policy
    /// (gRPC: `INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidPolicy(#[from] InvalidPolicy),
    /// Any other malformed request: missing actor or reason, a batch that is
    /// too large, a bad page token... (gRPC: `INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The circuit does not exist (gRPC: `NOT_FOUND`).
    #[error("circuit {name:?} does not exist")]
    NotFound {
        /// The circuit asked for.
        name: String,
    },
    /// Creating the circuit would exceed the circuit cap
    /// (gRPC: `RESOURCE_EXHAUSTED`).
    #[error("too many circuits: the coordinator holds at most {limit}")]
    TooManyCircuits {
        /// The configured cap.
        limit: usize,
    },
    /// The store could not make a change durable or read it back. The
    /// change is in force in memory but may not survive a restart
    /// (gRPC: `UNAVAILABLE`).
    #[error("store: {0}")]
    Storage(String),
}
