//! Round trips of every conversion, and the exact errors for the zero value
//! and unknown numbers (the server puts them in its `INVALID_ARGUMENT`s).

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

#[test]
fn the_first_unknown_enum_in_field_order_is_reported() {
    let p = pb::Policy {
        window_kind: Some(7),
        degraded_mode: Some(9),
        ..Default::default()
    };
    let (spec, unknown) = spec_from_proto(&p);
    assert_eq!(spec, PolicySpec::default());
    let unknown = unknown.unwrap();
    assert_eq!(unknown.field, "window_kind");
    assert_eq!(unknown.to_string(), "unknown WindowKind 7");
}

#[test]
fn every_enum_value_round_trips() {
    for s in [State::Closed, State::Open, State::HalfOpen] {
        let wire = pb::CircuitState::from(s);
        assert_eq!(State::try_from(wire), Ok(s));
        assert_eq!(state_from_proto(wire.into()), Ok(s));
        assert_eq!(state_filter_from_proto(wire.into()), Ok(Some(s)));
    }
    for r in [
        RejectReason::Open,
        RejectReason::ProbesExhausted,
        RejectReason::ForcedOpen,
    ] {
        assert_eq!(
            reject_reason_from_proto(pb::RejectReason::from(r).into()),
            Ok(r)
        );
    }
    for k in [
        OverrideKind::ForcedOpen,
        OverrideKind::ForcedClosed,
        OverrideKind::Disabled,
    ] {
        assert_eq!(
            override_kind_from_proto(pb::OverrideKind::from(k).into()),
            Ok(k)
        );
    }
    for o in [Outcome::Success, Outcome::Failure, Outcome::Ignored] {
        assert_eq!(outcome_from_proto(pb::Outcome::from(o).into()), Ok(o));
    }
    for k in [WindowKind::Count, WindowKind::Time] {
        assert_eq!(
            window_kind_from_proto(pb::WindowKind::from(k).into()),
            Ok(k)
        );
    }
    for m in [
        DegradedMode::Local,
        DegradedMode::FailOpen,
        DegradedMode::FailClosed,
    ] {
        assert_eq!(
            degraded_mode_from_proto(pb::DegradedMode::from(m).into()),
            Ok(m)
        );
    }
}

#[test]
fn the_wire_numbers_are_the_protos() {
    // Pinned, since clients in other languages hold the same numbers.
    assert_eq!(i32::from(pb::CircuitState::from(State::HalfOpen)), 3);
    assert_eq!(
        i32::from(pb::RejectReason::from(RejectReason::ForcedOpen)),
        3
    );
    assert_eq!(i32::from(pb::OverrideKind::from(OverrideKind::Disabled)), 3);
    assert_eq!(i32::from(pb::Outcome::from(Outcome::Failure)), 2);
    assert_eq!(i32::from(pb::WindowKind::from(WindowKind::Time)), 2);
    assert_eq!(
        i32::from(pb::DegradedMode::from(DegradedMode::FailClosed)),
        3
    );
}

#[test]
fn zero_values_are_unset_with_the_servers_messages() {
    let cases = [
        (
            outcome_from_proto(0).unwrap_err(),
            "OUTCOME_UNSPECIFIED is not an outcome",
        ),
        (
            override_kind_from_proto(0).unwrap_err(),
            "OVERRIDE_KIND_NONE is not an override; use ClearOverride",
        ),
        (
            state_from_proto(0).unwrap_err(),
            "CIRCUIT_STATE_UNSPECIFIED is not a state",
        ),
        (
            reject_reason_from_proto(0).unwrap_err(),
            "REJECT_REASON_NONE is not a reject reason",
        ),
        (
            window_kind_from_proto(0).unwrap_err(),
            "WINDOW_KIND_UNSPECIFIED is not a window kind",
        ),
        (
            degraded_mode_from_proto(0).unwrap_err(),
            "DEGRADED_MODE_UNSPECIFIED is not a degraded mode",
        ),
    ];
    for (err, message) in cases {
        assert!(err.is_unset(), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
    assert_eq!(state_filter_from_proto(0), Ok(None));
}

#[test]
fn unknown_numbers_name_the_enum_and_the_number() {
    let cases = [
        (outcome_from_proto(42).unwrap_err(), "Outcome", 42),
        (override_kind_from_proto(9).unwrap_err(), "OverrideKind", 9),
        (state_from_proto(4).unwrap_err(), "CircuitState", 4),
        (state_filter_from_proto(4).unwrap_err(), "CircuitState", 4),
        (
            reject_reason_from_proto(-1).unwrap_err(),
            "RejectReason",
            -1,
        ),
        (window_kind_from_proto(3).unwrap_err(), "WindowKind", 3),
        (
            degraded_mode_from_proto(i32::MAX).unwrap_err(),
            "DegradedMode",
            i32::MAX,
        ),
    ];
    for (err, enum_name, value) in cases {
        assert_eq!(err, EnumError::Unknown { enum_name, value });
        assert!(!err.is_unset());
        assert_eq!(err.to_string(), format!("unknown {enum_name} {value}"));
    }
}

#[test]
fn counters_round_trip_field_by_field() {
    let c = Counters {
        consecutive_failures: 1,
        window_calls: 2,
        window_failures: 3,
        window_slow_calls: 4,
        probes_in_flight: 5,
        half_open_successes: 6,
        consecutive_trips: 7,
        total_allowed: 8,
        total_rejected: 9,
        total_successes: 10,
        total_failures: 11,
        total_ignored: 12,
        total_stale: 13,
        total_leases_expired: 14,
    };
    let wire = pb::Counters::from(&c);
    assert_eq!(wire.total_leases_expired, 14);
    assert_eq!(wire.probes_in_flight, 5);
    assert_eq!(Counters::from(&wire), c);
}

#[test]
fn policies_round_trip_with_every_field_set() {
    let p = Policy::default()
        .apply(&PolicySpec {
            window_kind: Some(WindowKind::Time),
            window_size: Some(10_000),
            degraded_mode: Some(DegradedMode::FailClosed),
            ..Default::default()
        })
        .unwrap();
    let wire = pb::Policy::from(&p);
    assert_eq!(wire.window_kind, Some(pb::WindowKind::Time as i32));
    assert_eq!(
        wire.degraded_mode,
        Some(pb::DegradedMode::FailClosed as i32)
    );
    let (spec, unknown) = spec_from_proto(&wire);
    assert_eq!(unknown, None);
    assert_eq!(spec, p.to_spec());
    assert_eq!(Policy::default().apply(&spec).unwrap(), p);

    // A partial spec stays partial.
    let partial = PolicySpec {
        open_base_ms: Some(250),
        ..Default::default()
    };
    let wire = pb::Policy::from(&partial);
    assert_eq!(
        wire,
        pb::Policy {
            open_base_ms: Some(250),
            ..Default::default()
        }
    );
    assert_eq!(spec_from_proto(&wire), (partial, None));
}
