//! Conversions from what the coordinator sends (proto enums, policies,
//! gRPC status codes) to the client's own types, in one place. The enum
//! and policy conversions are `breakerd-proto`'s; this module only decides
//! what a client does with a value it does not know (a newer coordinator).

use breakerd_policy::{OverrideKind, PolicySpec, RejectReason, State};
use breakerd_proto::{policy as wire, v1 as pb};

use crate::error::RefusalCode;

/// A pushed state; `None` for `UNSPECIFIED` or a number this client does
/// not know.
pub(crate) fn state_from_proto(s: i32) -> Option<State> {
    wire::state_from_proto(s).ok()
}

/// A reject reason; one this client does not know reads as `Open`, the
/// reason that asks the least of the caller.
pub(crate) fn reason_from_proto(r: i32) -> RejectReason {
    wire::reject_reason_from_proto(r).unwrap_or(RejectReason::Open)
}

/// An override in force; `None` for `NONE` or a kind this client does not
/// know.
pub(crate) fn override_from_proto(k: i32) -> Option<OverrideKind> {
    wire::override_kind_from_proto(k).ok()
}

/// The policy fields the coordinator sent, as a spec over the defaults. An
/// enum number this client does not know (from a newer coordinator) leaves
/// that field at its default rather than dropping the policy.
pub(crate) fn spec_from_proto(p: &pb::Policy) -> PolicySpec {
    wire::spec_from_proto(p).0
}

/// What a failed RPC's status code means: `Some` when the coordinator
/// answered and refused (surfaced as `Error::Refused`), `None` when it
/// could not answer: never an error to the caller, but evidence that may
/// put the client in degraded mode (`shared/evidence.rs` weighs it). (An error status saying `OK` cannot come out
/// of tonic; it would mean a broken answer, so it counts as unreachable.)
pub(crate) fn refusal_code(code: tonic::Code) -> Option<RefusalCode> {
    use tonic::Code;
    Some(match code {
        Code::InvalidArgument => RefusalCode::InvalidArgument,
        Code::NotFound => RefusalCode::NotFound,
        Code::AlreadyExists => RefusalCode::AlreadyExists,
        Code::PermissionDenied => RefusalCode::PermissionDenied,
        Code::ResourceExhausted => RefusalCode::ResourceExhausted,
        Code::FailedPrecondition => RefusalCode::FailedPrecondition,
        Code::OutOfRange => RefusalCode::OutOfRange,
        Code::Unimplemented => RefusalCode::Unimplemented,
        Code::DataLoss => RefusalCode::DataLoss,
        Code::Unauthenticated => RefusalCode::Unauthenticated,
        Code::Ok
        | Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::Aborted => return None,
    })
}

/// True when a failed RPC ran out of time rather than reaching a
/// coordinator that could not answer: `DEADLINE_EXCEEDED` (the
/// coordinator's own `grpc-timeout`), or tonic's client-side enforcement of
/// the request timeout (`CANCELLED` caused by [`tonic::TimeoutExpired`]).
/// A missed deadline alone is not evidence that the coordinator is gone.
pub(crate) fn is_missed_deadline(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::DeadlineExceeded {
        return true;
    }
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use breakerd_policy::Policy;

    use super::*;

    #[test]
    fn proto_policy_becomes_a_checked_policy() {
        let p = pb::Policy {
            consecutive_failures: Some(3),
            open_base_ms: Some(200),
            open_jitter: Some(0.0),
            degraded_mode: Some(pb::DegradedMode::FailClosed as i32),
            ..Default::default()
        };
        let policy = Policy::default()
            .apply(&spec_from_proto(&p))
            .expect("valid");
        assert_eq!(
            policy.degraded_mode(),
            breakerd_policy::DegradedMode::FailClosed
        );
        let spec = policy.to_spec();
        assert_eq!(spec.consecutive_failures, Some(3));
        assert_eq!(spec.open_base_ms, Some(200));
    }

    #[test]
    fn values_from_a_newer_coordinator_read_as_the_safe_default() {
        assert_eq!(
            state_from_proto(pb::CircuitState::HalfOpen.into()),
            Some(State::HalfOpen)
        );
        assert_eq!(state_from_proto(0), None);
        assert_eq!(state_from_proto(99), None);
        assert_eq!(
            reason_from_proto(pb::RejectReason::ProbesExhausted.into()),
            RejectReason::ProbesExhausted
        );
        assert_eq!(reason_from_proto(99), RejectReason::Open);
        assert_eq!(reason_from_proto(0), RejectReason::Open);
        assert_eq!(
            override_from_proto(pb::OverrideKind::Disabled.into()),
            Some(OverrideKind::Disabled)
        );
        assert_eq!(override_from_proto(0), None);
        assert_eq!(override_from_proto(-4), None);
    }

    #[test]
    fn timeouts_are_missed_deadlines_and_other_failures_are_not() {
        use tonic::{Code, Status};
        assert!(is_missed_deadline(&Status::deadline_exceeded("late")));
        let timed_out = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(is_missed_deadline(&timed_out), "{timed_out:?}");
        for code in [Code::Unavailable, Code::Cancelled, Code::Unknown] {
            assert!(!is_missed_deadline(&Status::new(code, "x")), "{code:?}");
        }
    }

    #[test]
    fn every_status_code_is_a_refusal_or_unreachable() {
        use tonic::Code;
        let unreachable = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
            Code::Aborted,
        ];
        for code in unreachable {
            assert_eq!(refusal_code(code), None, "{code:?}");
        }
        for n in 0..=16 {
            let code = Code::from_i32(n);
            if code == Code::Ok || unreachable.contains(&code) {
                continue;
            }
            let refusal = refusal_code(code).expect("a refusal");
            // The same number, and the name tonic's Debug printed before.
            assert_eq!(refusal.grpc_code(), n, "{code:?}");
            assert_eq!(refusal.to_string(), format!("{code:?}"));
        }
    }
}
