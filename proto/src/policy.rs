//! The wire `Policy` as the policy engine's [`PolicySpec`], in one place for
//! the server (which refuses unknown enum numbers) and the client (which
//! ignores them, so an older client keeps working with a newer server).

use breakerd_policy::{DegradedMode, PolicySpec, WindowKind};

use crate::v1 as pb;

/// An enum field holding a number this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEnum {
    /// The field, as named in the proto (`window_kind`, `degraded_mode`).
    pub field: &'static str,
    /// The enum type (`WindowKind`, `DegradedMode`).
    pub enum_name: &'static str,
    /// The number received.
    pub value: i32,
}

/// The set fields of `p` as a spec. `UNSPECIFIED` enum values mean
/// "unchanged" (unset); unknown enum numbers are left unset too and
/// reported, the first one in field order.
pub fn spec_from_proto(p: &pb::Policy) -> (PolicySpec, Option<UnknownEnum>) {
    let mut unknown = None;
    let mut note = |field, enum_name, value| {
        unknown.get_or_insert(UnknownEnum {
            field,
            enum_name,
            value,
        });
    };
    let window_kind = p
        .window_kind
        .and_then(|n| match pb::WindowKind::try_from(n) {
            Ok(pb::WindowKind::Unspecified) => None,
            Ok(pb::WindowKind::Count) => Some(WindowKind::Count),
            Ok(pb::WindowKind::Time) => Some(WindowKind::Time),
            Err(_) => {
                note("window_kind", "WindowKind", n);
                None
            }
        });
    let degraded_mode = p
        .degraded_mode
        .and_then(|n| match pb::DegradedMode::try_from(n) {
            Ok(pb::DegradedMode::Unspecified) => None,
            Ok(pb::DegradedMode::Local) => Some(DegradedMode::Local),
            Ok(pb::DegradedMode::FailOpen) => Some(DegradedMode::FailOpen),
            Ok(pb::DegradedMode::FailClosed) => Some(DegradedMode::FailClosed),
            Err(_) => {
                note("degraded_mode", "DegradedMode", n);
                None
            }
        });
    let spec = PolicySpec {
        consecutive_failures: p.consecutive_failures,
        window_kind,
        window_size: p.window_size,
        window_buckets: p.window_buckets,
        minimum_calls: p.minimum_calls,
        failure_rate_threshold: p.failure_rate_threshold,
        slow_call_rate_threshold: p.slow_call_rate_threshold,
        slow_call_duration_ms: p.slow_call_duration_ms,
        quorum_nodes: p.quorum_nodes,
        open_base_ms: p.open_base_ms,
        open_backoff_multiplier: p.open_backoff_multiplier,
        open_max_ms: p.open_max_ms,
        open_jitter: p.open_jitter,
        half_open_max_probes: p.half_open_max_probes,
        probe_lease_ms: p.probe_lease_ms,
        successes_to_close: p.successes_to_close,
        degraded_mode,
    };
    (spec, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_carry_over_and_unknown_enums_are_reported() {
        let p = pb::Policy {
            consecutive_failures: Some(3),
            window_kind: Some(pb::WindowKind::Time as i32),
            degraded_mode: Some(99),
            ..Default::default()
        };
        let (spec, unknown) = spec_from_proto(&p);
        assert_eq!(spec.consecutive_failures, Some(3));
        assert_eq!(spec.window_kind, Some(WindowKind::Time));
        assert_eq!(spec.degraded_mode, None);
        assert_eq!(spec.open_base_ms, None);
        assert_eq!(
            unknown,
            Some(UnknownEnum {
                field: "degraded_mode",
                enum_name: "DegradedMode",
                value: 99
            })
        );
        let unspecified = pb::Policy {
            window_kind: Some(0),
            ..Default::default()
        };
        assert_eq!(spec_from_proto(&unspecified), (PolicySpec::default(), None));
    }
}
