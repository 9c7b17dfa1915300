//! Conversions from what the coordinator sends (proto enums, policies,
//! gRPC status codes) to the client's own types, in one place.

use breakerd_policy::{OverrideKind, PolicySpec, RejectReason, State};
use breakerd_proto::v1 as pb;

pub(crate) fn state_from_proto(s: i32) -> Option<State> {
    match pb::CircuitState::try_from(s) {
        Ok(pb::CircuitState::Closed) => Some(State::Closed),
        Ok(pb::CircuitState::Open) => Some(State::Open),
        Ok(pb::CircuitState::HalfOpen) => Some(State::HalfOpen),
        _ => None,
    }
}

pub(crate) fn reason_from_proto(r: i32) -> RejectReason {
    match pb::RejectReason::try_from(r) {
        Ok(pb::RejectReason::ProbesExhausted) => RejectReason::ProbesExhausted,
        Ok(pb::RejectReason::ForcedOpen) => RejectReason::ForcedOpen,
        _ => RejectReason::Open,
    }
}

pub(crate) fn override_from_proto(k: i32) -> Option<OverrideKind> {
    match pb::OverrideKind::try_from(k) {
        Ok(pb::OverrideKind::ForcedOpen) => Some(OverrideKind::ForcedOpen),
        Ok(pb::OverrideKind::ForcedClosed) => Some(OverrideKind::ForcedClosed),
        Ok(pb::OverrideKind::Disabled) => Some(OverrideKind::Disabled),
        _ => None,
    }
}

/// The policy fields the coordinator sent, as a spec over the defaults. An
/// enum number this client does not know (from a newer coordinator) leaves
/// that field at its default rather than dropping the policy.
pub(crate) fn spec_from_proto(p: &pb::Policy) -> PolicySpec {
    breakerd_proto::policy::spec_from_proto(p).0
}

/// Status codes that mean "the coordinator could not answer", which switch
/// the client to its degraded mode rather than surfacing as errors.
pub(crate) fn is_unreachable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Aborted
    )
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
}
