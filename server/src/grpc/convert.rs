//! The one place where wire types meet core types: requests into what the
//! core takes, the responses built from what it returns, and the exhaustive
//! mapping of [`CoreError`] to gRPC status codes (adding an error variant
//! forces a decision about its code here). Proto ↔ policy conversions
//! themselves are `breakerd-proto`'s (feature `policy`); this module only
//! turns their errors into statuses naming the field. The services only call these and the core.
//!
//! Everything arriving from the network is checked here before the core
//! sees it: unknown enum numbers and `UNSPECIFIED` where a value is required
//! are `INVALID_ARGUMENT` naming the field.

use std::time::Duration;

use breakerd_policy::{self as policy, Decision, PolicySpec};
use breakerd_proto::{policy as wire, v1 as pb};
use tonic::Status;

use breakerd_core::{
    AcquireOutcome, CircuitDetail, CircuitSnapshot, CoreError, ListQuery, OutcomeIn,
    OverrideSnapshot, Page, Refused, ReportSummary, TransitionView, WatchUpdate,
    store::{AuditRecord, CircuitRecord},
};

/// Maps a core error to its gRPC status. Exhaustive on purpose.
pub fn status_from_core(err: CoreError) -> Status {
    match err {
        e @ CoreError::InvalidName { .. } => Status::invalid_argument(e.to_string()),
        CoreError::InvalidPolicy(e) => invalid(&format!("policy.{}", e.field), e.reason),
        CoreError::InvalidArgument(msg) => Status::invalid_argument(msg),
        e @ CoreError::NotFound { .. } => Status::not_found(e.to_string()),
        e @ CoreError::TooManyCircuits { .. } => Status::resource_exhausted(e.to_string()),
        e @ CoreError::Storage(_) => Status::unavailable(e.to_string()),
    }
}

/// Maps the refusal of an admitted core call: the core's error, or the
/// status the admission refused with (a per-client limit).
pub fn status_from_refused(refused: Refused<Status>) -> Status {
    match refused {
        Refused::Core(err) => status_from_core(err),
        Refused::Admission(status) => status,
    }
}

/// An `INVALID_ARGUMENT` naming `field`.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// A proto `Policy` (only set fields change anything) as a [`PolicySpec`].
/// `UNSPECIFIED` enum values mean "unchanged"; unknown numbers are refused.
pub fn policy_spec_from_proto(p: &pb::Policy) -> Result<PolicySpec, Status> {
    match breakerd_proto::policy::spec_from_proto(p) {
        (spec, None) => Ok(spec),
        (_, Some(e)) => Err(invalid(
            &format!("policy.{}", e.field),
            format!("unknown {} {}", e.enum_name, e.value),
        )),
    }
}

/// A report's outcome; `UNSPECIFIED` and unknown numbers are refused.
/// `field` names the offending field in the error; it is only called on
/// error, so the hot report path formats nothing.
pub fn outcome_from_proto(
    n: i32,
    field: impl FnOnce() -> String,
) -> Result<policy::Outcome, Status> {
    wire::outcome_from_proto(n).map_err(|e| invalid(&field(), e))
}

/// The kind of a SetOverride; `NONE` (use ClearOverride) and unknown numbers
/// are refused.
pub fn override_kind_from_proto(n: i32) -> Result<policy::OverrideKind, Status> {
    wire::override_kind_from_proto(n).map_err(|e| invalid("kind", e))
}

/// A state filter of ListCircuits; `UNSPECIFIED` is "any state".
pub fn state_filter_from_proto(n: i32) -> Result<Option<policy::State>, Status> {
    wire::state_filter_from_proto(n).map_err(|e| invalid("state", e))
}

/// Milliseconds of an elapsed duration, rounded down and saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds of a remaining duration, rounded *up*: a deadline that has
/// not passed must never read as 0 ("no deadline" / "ask now").
pub fn ms_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// An override in force on the wire.
pub fn override_to_proto(o: &OverrideSnapshot) -> pb::Override {
    pb::Override {
        kind: pb::OverrideKind::from(o.kind).into(),
        reason: o.reason.clone(),
        actor: o.actor.clone(),
        // 0 means "never lapses", so one about to lapse reads as 1 ms.
        expires_in_ms: o.expires_in.map_or(0, |d| ms_ceil(d).max(1)),
    }
}

/// A circuit snapshot on the wire.
pub fn snapshot_to_proto(s: &CircuitSnapshot) -> pb::CircuitSnapshot {
    pb::CircuitSnapshot {
        name: s.name.to_string(),
        state: pb::CircuitState::from(s.state).into(),
        generation: s.generation,
        open_remaining_ms: ms_ceil(s.open_remaining),
        policy_version: s.policy_version,
        policy: Some(pb::Policy::from(&s.policy)),
        r#override: s.override_.as_ref().map(override_to_proto),
        deleted: s.deleted,
    }
}

/// A history entry on the wire.
pub fn transition_to_proto(t: &TransitionView) -> pb::Transition {
    pb::Transition {
        from: pb::CircuitState::from(t.from).into(),
        to: pb::CircuitState::from(t.to).into(),
        generation: t.generation,
        age_ms: ms(t.age),
        reason: t.cause.as_str().to_owned(),
    }
}

/// A circuit in detail on the wire.
pub fn detail_to_proto(d: &CircuitDetail) -> pb::CircuitDetail {
    pb::CircuitDetail {
        snapshot: Some(snapshot_to_proto(&d.snapshot)),
        counters: Some(pb::Counters::from(&d.counters)),
        history: d.history.iter().map(transition_to_proto).collect(),
    }
}

/// A Report batch as the core takes it; any bad outcome refuses the batch.
pub fn outcomes_from_proto(req: &pb::ReportRequest) -> Result<Vec<OutcomeIn>, Status> {
    req.outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(OutcomeIn {
                circuit: o.circuit.clone(),
                generation: o.generation,
                lease: (o.lease_id != 0).then_some(o.lease_id),
                outcome: outcome_from_proto(o.outcome, || format!("outcomes[{i}].outcome"))?,
                latency: Duration::from_micros(o.latency_us),
                // The core clamps it; a huge age is never refused.
                age: Duration::from_micros(o.age_us),
            })
        })
        .collect()
}

/// The answer to an applied Report batch.
pub fn report_to_proto(s: &ReportSummary) -> pb::ReportResponse {
    pb::ReportResponse {
        applied: s.applied,
        stale: s.stale,
        unknown: s.unknown,
    }
}

/// An Acquire decision on the wire. Lease and retry times are rounded up,
/// so a lease or an open period that has not ended never reads as 0.
pub fn acquire_to_proto(out: &AcquireOutcome) -> pb::AcquireResponse {
    match out.decision {
        Decision::Allow {
            generation,
            state,
            lease,
        } => pb::AcquireResponse {
            allowed: true,
            generation,
            state: pb::CircuitState::from(state).into(),
            lease_id: lease.map_or(0, |l| l.id),
            lease_ttl_ms: lease.map_or(0, |l| ms_ceil(l.ttl)),
            retry_after_ms: 0,
            reject_reason: pb::RejectReason::None.into(),
            policy_version: out.policy_version,
        },
        Decision::Reject {
            generation,
            state,
            reason,
            retry_after,
        } => pb::AcquireResponse {
            allowed: false,
            generation,
            state: pb::CircuitState::from(state).into(),
            lease_id: 0,
            lease_ttl_ms: 0,
            retry_after_ms: ms_ceil(retry_after),
            reject_reason: pb::RejectReason::from(reason).into(),
            policy_version: out.policy_version,
        },
    }
}

/// A watch update on the wire: a resync is the `initial` event.
pub fn watch_event_to_proto(update: WatchUpdate) -> pb::WatchEvent {
    let (initial, snaps) = match update {
        WatchUpdate::Resync(s) => (true, s),
        WatchUpdate::Changed(s) => (false, s),
    };
    pb::WatchEvent {
        initial,
        circuits: snaps.iter().map(|s| snapshot_to_proto(s)).collect(),
        more: false,
    }
}

/// A ListCircuits request as the core's query.
pub fn list_query_from_proto(req: pb::ListCircuitsRequest) -> Result<ListQuery, Status> {
    Ok(ListQuery {
        prefix: req.prefix,
        state: state_filter_from_proto(req.state)?,
        page_size: usize::try_from(req.page_size).unwrap_or(usize::MAX),
        page_token: req.page_token,
    })
}

/// A page of circuits on the wire.
pub fn page_to_proto(page: Page) -> pb::ListCircuitsResponse {
    pb::ListCircuitsResponse {
        circuits: page.circuits.iter().map(snapshot_to_proto).collect(),
        next_page_token: page.next_page_token,
        total_matching: page.total_matching,
    }
}

/// The `limit` of ListAuditEvents: 0 is 100, at most 1000.
pub fn audit_limit_from_proto(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(100),
        n @ 1..=1000 => Ok(n as usize),
        n => Err(invalid(
            "limit",
            format!("must be within 0..=1000, not {n}"),
        )),
    }
}

/// An audit record on the wire, the states before and after as JSON.
pub fn audit_event_to_proto(r: AuditRecord) -> pb::AuditEvent {
    let json = |r: &Option<CircuitRecord>| {
        r.as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
            .unwrap_or_default()
    };
    pb::AuditEvent {
        at_unix_ms: r.at_ms,
        before_json: json(&r.before),
        after_json: json(&r.after),
        actor: r.actor,
        action: r.action,
        circuit: r.circuit,
        reason: r.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakerd_core::NameProblem;
    use breakerd_policy::Policy;
    use tonic::Code;

    #[test]
    fn core_errors_map_to_precise_codes() {
        let cases = [
            (
                CoreError::InvalidName {
                    what: "outcomes[3].circuit: circuit name".into(),
                    problem: NameProblem::Empty,
                },
                Code::InvalidArgument,
                "outcomes[3].circuit: circuit name is empty",
            ),
            (
                CoreError::InvalidPolicy(policy::InvalidPolicy {
                    field: "open_base_ms",
                    reason: "must be within 1..=604800000 ms".into(),
                }),
                Code::InvalidArgument,
                "policy.open_base_ms: must be within 1..=604800000 ms",
            ),
            (
                CoreError::InvalidArgument("actor is required".into()),
                Code::InvalidArgument,
                "actor is required",
            ),
            (
                CoreError::NotFound { name: "db".into() },
                Code::NotFound,
                "circuit \"db\" does not exist",
            ),
            (
                CoreError::TooManyCircuits { limit: 3 },
                Code::ResourceExhausted,
                "too many circuits: the coordinator holds at most 3",
            ),
        ];
        for (err, code, message) in cases {
            let status = status_from_core(err);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn policies_round_trip_and_unspecified_means_unchanged() {
        let p = Policy::default()
            .apply(&PolicySpec {
                window_kind: Some(policy::WindowKind::Time),
                window_size: Some(10_000),
                degraded_mode: Some(policy::DegradedMode::FailClosed),
                ..Default::default()
            })
            .unwrap();
        let wire = pb::Policy::from(&p);
        assert_eq!(
            Policy::default()
                .apply(&policy_spec_from_proto(&wire).unwrap())
                .unwrap(),
            p
        );

        let unchanged = pb::Policy {
            window_kind: Some(pb::WindowKind::Unspecified.into()),
            degraded_mode: Some(pb::DegradedMode::Unspecified.into()),
            ..Default::default()
        };
        assert_eq!(
            policy_spec_from_proto(&unchanged).unwrap(),
            PolicySpec::default()
        );
    }

    #[test]
    fn unknown_or_missing_enums_are_invalid_argument() {
        let bad_window = pb::Policy {
            window_kind: Some(7),
            ..Default::default()
        };
        let s = policy_spec_from_proto(&bad_window).unwrap_err();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "policy.window_kind: unknown WindowKind 7"
            )
        );
        let bad_mode = pb::Policy {
            degraded_mode: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            policy_spec_from_proto(&bad_mode).unwrap_err().code(),
            Code::InvalidArgument
        );

        let s = outcome_from_proto(0, || "outcomes[2].outcome".into()).unwrap_err();
        assert_eq!(
            s.message(),
            "outcomes[2].outcome: OUTCOME_UNSPECIFIED is not an outcome"
        );
        assert_eq!(
            outcome_from_proto(4, || "o".into()).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            outcome_from_proto(2, || "o".into()).unwrap(),
            policy::Outcome::Failure
        );

        assert_eq!(
            override_kind_from_proto(0).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            override_kind_from_proto(99).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            override_kind_from_proto(3).unwrap(),
            policy::OverrideKind::Disabled
        );

        assert_eq!(state_filter_from_proto(0).unwrap(), None);
        assert_eq!(
            state_filter_from_proto(3).unwrap(),
            Some(policy::State::HalfOpen)
        );
        assert_eq!(
            state_filter_from_proto(4).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn remaining_time_rounds_up() {
        assert_eq!(ms_ceil(Duration::ZERO), 0);
        assert_eq!(ms_ceil(Duration::from_micros(1)), 1);
        assert_eq!(ms_ceil(Duration::from_millis(1500)), 1500);
        assert_eq!(ms(Duration::from_micros(1999)), 1);
        assert_eq!(ms_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn acquire_answers_carry_the_decision_and_round_up() {
        let allowed = acquire_to_proto(&AcquireOutcome {
            decision: Decision::Allow {
                generation: 7,
                state: policy::State::HalfOpen,
                lease: Some(policy::Lease {
                    id: 3,
                    ttl: Duration::from_micros(1500),
                }),
            },
            policy_version: 2,
        });
        assert!(allowed.allowed);
        assert_eq!(
            (allowed.generation, allowed.lease_id, allowed.lease_ttl_ms),
            (7, 3, 2)
        );
        assert_eq!(allowed.state, i32::from(pb::CircuitState::HalfOpen));
        assert_eq!(allowed.reject_reason, i32::from(pb::RejectReason::None));
        assert_eq!((allowed.retry_after_ms, allowed.policy_version), (0, 2));

        let rejected = acquire_to_proto(&AcquireOutcome {
            decision: Decision::Reject {
                generation: 8,
                state: policy::State::Open,
                reason: policy::RejectReason::Open,
                retry_after: Duration::from_micros(1),
            },
            policy_version: 2,
        });
        assert!(!rejected.allowed);
        assert_eq!((rejected.lease_id, rejected.retry_after_ms), (0, 1));
        assert_eq!(rejected.reject_reason, i32::from(pb::RejectReason::Open));
    }

    #[test]
    fn report_batches_and_audit_limits_are_checked() {
        let req = pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![
                pb::OutcomeReport {
                    circuit: "a".into(),
                    generation: 1,
                    lease_id: 0,
                    outcome: pb::Outcome::Success.into(),
                    latency_us: 2000,
                    age_us: 5,
                },
                pb::OutcomeReport {
                    circuit: "b".into(),
                    generation: 1,
                    lease_id: 9,
                    outcome: pb::Outcome::Unspecified.into(),
                    latency_us: 0,
                    age_us: 0,
                },
            ],
        };
        let s = outcomes_from_proto(&req).unwrap_err();
        assert_eq!(
            s.message(),
            "outcomes[1].outcome: OUTCOME_UNSPECIFIED is not an outcome"
        );
        let mut ok = req.clone();
        ok.outcomes.truncate(1);
        let outcomes = outcomes_from_proto(&ok).unwrap();
        assert_eq!(outcomes[0].lease, None);
        assert_eq!(outcomes[0].latency, Duration::from_millis(2));

        assert_eq!(audit_limit_from_proto(0).unwrap(), 100);
        assert_eq!(audit_limit_from_proto(1000).unwrap(), 1000);
        assert_eq!(
            audit_limit_from_proto(1001).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
