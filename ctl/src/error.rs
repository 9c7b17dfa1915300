//! Everything that can make breakerctl fail, each as a one-line message and
//! an exit code that scripts can branch on:
//!
//! | exit | meaning |
//! |---|---|
//! | 1 | breakerd answered with an error status (shown as `CODE: message`) |
//! | 2 | bad command line (clap's code too) |
//! | 3 | breakerd could not be reached, or did not answer within `--timeout` |

use std::{error::Error as StdError, io, time::Duration};

use tonic::{Code, Status};

use crate::duration::format_ms;

/// Why a breakerctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No connection to the coordinator.
    #[error("cannot reach breakerd at {endpoint}: {cause}")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The underlying reason, e.g. `connection refused`.
        cause: String,
    },
    /// Connected (or connecting) but no answer in time.
    #[error("breakerd at {endpoint} did not answer within {}", format_ms(.timeout.as_millis().try_into().unwrap_or(u64::MAX)))]
    Timeout {
        /// The endpoint asked.
        endpoint: String,
        /// The `--timeout` in force.
        timeout: Duration,
    },
    /// The coordinator answered with an error status.
    #[error("breakerd answered {code}: {message}")]
    Status {
        /// The gRPC code in its canonical spelling (`NOT_FOUND`).
        code: &'static str,
        /// The server's message.
        message: String,
    },
    /// The Watch stream ended without an error status.
    #[error("breakerd at {endpoint} closed the watch stream")]
    StreamEnded {
        /// The endpoint watched.
        endpoint: String,
    },
    /// A command-line value that clap could not check on its own.
    #[error("{0}")]
    Usage(String),
    /// The store could not be read (`export-store`).
    #[error("{0}")]
    Store(String),
    /// Writing to stdout failed (a closed pipe is handled apart).
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
}

impl CtlError {
    /// The process exit code for this error (see the module table).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Status { .. } | CtlError::Output(_) | CtlError::Store(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. }
            | CtlError::Timeout { .. }
            | CtlError::StreamEnded { .. } => 3,
        }
    }

    /// True when stdout was closed under us (`breakerctl watch | head`):
    /// not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CtlError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// A transport failure while connecting.
    pub fn unreachable(endpoint: &str, err: &(dyn StdError + 'static)) -> Self {
        CtlError::Unreachable {
            endpoint: endpoint.to_owned(),
            cause: root_cause(err),
        }
    }

    /// An error status from a call. `UNAVAILABLE` caused by the transport
    /// (the connection dropped or could not be re-established) reads as
    /// "cannot reach", like a failed connect; any other status is the
    /// server's answer.
    pub fn from_status(endpoint: &str, status: Status) -> Self {
        if status.code() == Code::Unavailable
            && let Some(source) = StdError::source(&status)
        {
            return CtlError::Unreachable {
                endpoint: endpoint.to_owned(),
                cause: root_cause(source),
            };
        }
        CtlError::Status {
            code: code_name(status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// The most specific reason in an error chain, in a few plain words: an
/// I/O error kind we know (`connection refused`), else the innermost
/// message.
pub fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io_reason(io);
        }
        innermost = e.to_string();
        current = e.source();
    }
    innermost
}

fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "connection timed out".into(),
        K::AddrNotAvailable => "address not available".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::BrokenPipe => "connection closed".into(),
        _ => e.to_string(),
    }
}

/// The canonical gRPC spelling of a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn connection_refused_reads_plainly() {
        let err = Wrapper(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        let e = CtlError::unreachable("http://127.0.0.1:50051", &err);
        assert_eq!(
            e.to_string(),
            "cannot reach breakerd at http://127.0.0.1:50051: connection refused"
        );
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn unknown_causes_fall_back_to_the_innermost_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("dns error")]
        struct Dns;
        assert_eq!(root_cause(&Dns), "dns error");
    }

    #[test]
    fn statuses_show_code_and_message() {
        let e = CtlError::from_status("http://x", Status::not_found("no circuit \"x\""));
        assert_eq!(
            e.to_string(),
            "breakerd answered NOT_FOUND: no circuit \"x\""
        );
        assert_eq!(e.exit_code(), 1);
        // UNAVAILABLE from the server itself (no transport cause) is its answer.
        let e = CtlError::from_status("http://x", Status::unavailable("shutting down"));
        assert_eq!(
            e.to_string(),
            "breakerd answered UNAVAILABLE: shutting down"
        );
    }

    #[test]
    fn timeouts_name_the_deadline() {
        let e = CtlError::Timeout {
            endpoint: "http://x".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            e.to_string(),
            "breakerd at http://x did not answer within 5s"
        );
        assert_eq!(e.exit_code(), 3);
    }
}
