//! Every bound at and beyond its edge, whatever the other fields are, and
//! the capping of restored deadlines.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::Breaker;
use crate::policy::PolicySpec;
use crate::types::{Override, OverrideKind, State};

fn ms(d: Duration) -> u64 {
    duration_ms(d)
}

/// An integer field: its setter, the spec it is tried on, and its bounds.
struct IntCase {
    field: &'static str,
    set: fn(&mut PolicySpec, u64),
    base: PolicySpec,
    lo: u64,
    hi: u64,
    /// The type's largest value (u32::MAX or u64::MAX).
    max: u64,
}

fn time_window() -> PolicySpec {
    PolicySpec {
        window_kind: Some(WindowKind::Time),
        window_size: Some(ms(MAX_TIME_WINDOW)),
        window_buckets: Some(1),
        ..Default::default()
    }
}

fn int_cases() -> Vec<IntCase> {
    let u32m = u64::from(u32::MAX);
    let d = PolicySpec::default;
    vec![
        IntCase {
            field: "consecutive_failures",
            set: |s, v| s.consecutive_failures = Some(v as u32),
            // 0 is allowed when another rule is on.
            base: PolicySpec {
                failure_rate_threshold: Some(0.5),
                ..d()
            },
            lo: 0,
            hi: MAX_CONSECUTIVE_FAILURES.into(),
            max: u32m,
        },
        IntCase {
            field: "window_size",
            set: |s, v| s.window_size = Some(v),
            base: PolicySpec {
                minimum_calls: Some(1),
                ..d()
            },
            lo: 1,
            hi: MAX_COUNT_WINDOW,
            max: u64::MAX,
        },
        IntCase {
            field: "window_size",
            set: |s, v| s.window_size = Some(v),
            base: PolicySpec {
                minimum_calls: Some(1),
                ..time_window()
            },
            lo: 1,
            hi: ms(MAX_TIME_WINDOW),
            max: u64::MAX,
        },
        // Checked for a count window too, which does not use it.
        IntCase {
            field: "window_buckets",
            set: |s, v| s.window_buckets = Some(v as u32),
            base: d(),
            lo: 1,
            hi: MAX_WINDOW_BUCKETS.into(),
            max: u32m,
        },
        IntCase {
            field: "window_buckets",
            set: |s, v| s.window_buckets = Some(v as u32),
            base: time_window(),
            lo: 1,
            hi: MAX_WINDOW_BUCKETS.into(),
            max: u32m,
        },
        // A time window's capacity in calls is unknown: the flat bound.
        IntCase {
            field: "minimum_calls",
            set: |s, v| s.minimum_calls = Some(v as u32),
            base: PolicySpec {
                failure_rate_threshold: Some(0.5),
                ..time_window()
            },
            lo: 1,
            hi: MAX_MINIMUM_CALLS.into(),
            max: u32m,
        },
        // A count window never holds more calls than its size.
        IntCase {
            field: "minimum_calls",
            set: |s, v| s.minimum_calls = Some(v as u32),
            base: PolicySpec {
                window_size: Some(50),
                ..d()
            },
            lo: 1,
            hi: 50,
            max: u32m,
        },
        IntCase {
            field: "slow_call_duration_ms",
            set: |s, v| s.slow_call_duration_ms = Some(v),
            base: PolicySpec {
                slow_call_rate_threshold: Some(0.5),
                ..d()
            },
            lo: 1,
            hi: ms(MAX_SLOW_CALL),
            max: u64::MAX,
        },
        IntCase {
            field: "quorum_nodes",
            set: |s, v| s.quorum_nodes = Some(v as u32),
            base: time_window(),
            lo: 0,
            hi: MAX_QUORUM_NODES.into(),
            max: u32m,
        },
        // A count window of N calls never holds more than N distinct nodes.
        IntCase {
            field: "quorum_nodes",
            set: |s, v| s.quorum_nodes = Some(v as u32),
            base: PolicySpec {
                window_size: Some(20),
                minimum_calls: Some(5),
                ..d()
            },
            lo: 0,
            hi: 20,
            max: u32m,
        },
        IntCase {
            field: "open_base_ms",
            set: |s, v| s.open_base_ms = Some(v),
            base: PolicySpec {
                open_max_ms: Some(ms(MAX_OPEN)),
                ..d()
            },
            lo: 1,
            hi: ms(MAX_OPEN),
            max: u64::MAX,
        },
        IntCase {
            field: "open_max_ms",
            set: |s, v| s.open_max_ms = Some(v),
            base: PolicySpec {
                open_base_ms: Some(5_000),
                ..d()
            },
            lo: 5_000,
            hi: ms(MAX_OPEN),
            max: u64::MAX,
        },
        IntCase {
            field: "half_open_max_probes",
            set: |s, v| s.half_open_max_probes = Some(v as u32),
            base: d(),
            lo: 1,
            hi: MAX_PROBES.into(),
            max: u32m,
        },
        IntCase {
            field: "probe_lease_ms",
            set: |s, v| s.probe_lease_ms = Some(v),
            base: d(),
            lo: 1,
            hi: ms(MAX_PROBE_LEASE),
            max: u64::MAX,
        },
        IntCase {
            field: "successes_to_close",
            set: |s, v| s.successes_to_close = Some(v as u32),
            base: d(),
            lo: 1,
            hi: MAX_PROBES.into(),
            max: u32m,
        },
    ]
}

fn with(c: &IntCase, v: u64) -> PolicySpec {
    let mut s = c.base.clone();
    (c.set)(&mut s, v);
    s
}

#[test]
fn integer_fields_take_their_bounds_and_refuse_beyond_them() {
    for c in int_cases() {
        for v in [c.lo, c.hi] {
            let p = Policy::try_from(&with(&c, v));
            assert!(p.is_ok(), "{} = {v} on {:?}: {p:?}", c.field, c.base);
        }
        let beyond = [c.lo.checked_sub(1), Some(c.hi + 1), Some(c.max)];
        for v in beyond.into_iter().flatten() {
            let err = Policy::try_from(&with(&c, v)).expect_err(c.field);
            assert_eq!(err.field, c.field, "{} = {v}: {err}", c.field);
            // The message gives the allowed range and the value refused.
            assert!(
                err.reason.contains(&format!("..={}", c.hi)) && err.reason.contains(&v.to_string()),
                "{err}"
            );
        }
    }
}

#[test]
fn values_that_leave_a_rule_unable_to_fire_are_refused() {
    let refused = |spec: PolicySpec, field: &str| {
        let err = Policy::try_from(&spec).expect_err(field);
        assert_eq!(err.field, field, "{spec:?}: {err}");
    };
    refused(
        PolicySpec {
            slow_call_rate_threshold: Some(0.5),
            slow_call_duration_ms: Some(u64::MAX),
            ..Default::default()
        },
        "slow_call_duration_ms",
    );
    refused(
        PolicySpec {
            window_buckets: Some(u32::MAX),
            ..Default::default()
        },
        "window_buckets",
    );
    refused(
        PolicySpec {
            failure_rate_threshold: Some(0.5),
            minimum_calls: Some(u32::MAX),
            ..time_window()
        },
        "minimum_calls",
    );
    refused(
        PolicySpec {
            failure_rate_threshold: Some(0.5),
            window_size: Some(4),
            minimum_calls: Some(2),
            quorum_nodes: Some(5),
            ..Default::default()
        },
        "quorum_nodes",
    );
}

#[test]
fn real_fields_take_their_bounds_and_refuse_beyond_them() {
    type Set = fn(&mut PolicySpec, f64);
    let cases: [(&str, Set, f64, f64); 4] = [
        (
            "failure_rate_threshold",
            |s, v| s.failure_rate_threshold = Some(v),
            0.0,
            1.0,
        ),
        (
            "slow_call_rate_threshold",
            |s, v| s.slow_call_rate_threshold = Some(v),
            0.0,
            1.0,
        ),
        (
            "open_backoff_multiplier",
            |s, v| s.open_backoff_multiplier = Some(v),
            1.0,
            MAX_BACKOFF_MULTIPLIER,
        ),
        ("open_jitter", |s, v| s.open_jitter = Some(v), 0.0, 1.0),
    ];
    for (field, set, lo, hi) in cases {
        let spec = |v| {
            let mut s = PolicySpec::default();
            set(&mut s, v);
            s
        };
        for v in [lo, hi, (lo + hi) / 2.0] {
            assert!(Policy::try_from(&spec(v)).is_ok(), "{field} = {v}");
        }
        let below = if lo == 0.0 {
            -f64::MIN_POSITIVE
        } else {
            lo - f64::EPSILON * lo
        };
        let above = hi + f64::EPSILON * hi;
        for v in [below, above, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = Policy::try_from(&spec(v)).expect_err(field);
            assert_eq!(err.field, field, "{v}: {err}");
            assert!(err.reason.contains(&format!("..={hi}")), "{err}");
        }
    }
}

#[test]
fn every_policy_field_is_in_the_bounds_table() {
    let doc = include_str!("../bounds.rs");
    let spec = serde_json::to_value(Policy::default().to_spec()).unwrap();
    let fields = spec.as_object().unwrap().keys().cloned();
    // The two enums have no numeric bound.
    for field in fields.filter(|f| f != "window_kind" && f != "degraded_mode") {
        assert!(
            doc.contains(&format!("//! | `{field}`")),
            "{field} is missing from the table in bounds.rs"
        );
    }
}

/// A valid policy spec: small values inside every bound.
fn valid_spec() -> impl Strategy<Value = PolicySpec> {
    (
        (0u32..10, any::<bool>(), 10u64..500, 1u32..10, 1u32..10),
        (0.0f64..=1.0, 0.0f64..=1.0, 1u64..5_000, 0u32..10),
        (1u64..10_000, 1.0f64..=10.0, 0.0f64..=1.0),
        (1u32..5, 1u64..10_000, 1u32..5),
    )
        .prop_map(
            |(
                (failures, time, size, buckets, min_calls),
                (rate, slow_rate, slow_ms, quorum),
                (open_ms, mult, jitter),
                (probes, lease, successes),
            )| PolicySpec {
                consecutive_failures: Some(failures.max(1)),
                window_kind: Some(if time {
                    WindowKind::Time
                } else {
                    WindowKind::Count
                }),
                window_size: Some(size),
                window_buckets: Some(buckets),
                minimum_calls: Some(min_calls),
                failure_rate_threshold: Some(rate),
                slow_call_rate_threshold: Some(slow_rate),
                slow_call_duration_ms: Some(slow_ms),
                quorum_nodes: Some(quorum),
                open_base_ms: Some(open_ms),
                open_backoff_multiplier: Some(mult),
                open_max_ms: Some(open_ms * 2),
                open_jitter: Some(jitter),
                half_open_max_probes: Some(probes),
                probe_lease_ms: Some(lease),
                successes_to_close: Some(successes),
                degraded_mode: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the other fields are, one field beyond its absolute bound
    /// is refused, naming that field.
    #[test]
    fn one_field_out_of_bounds_is_refused_whatever_the_others(
        base in valid_spec(),
        pick in 0usize..11,
        excess in 1u64..1_000_000,
    ) {
        prop_assert!(Policy::try_from(&base).is_ok(), "{base:?}");
        let mut spec = base;
        let over = |max: u64| max.saturating_add(excess);
        let over32 = |max: u32| u32::try_from(over(max.into())).unwrap_or(u32::MAX);
        let field = match pick {
            0 => { spec.consecutive_failures = Some(over32(MAX_CONSECUTIVE_FAILURES)); "consecutive_failures" }
            1 => { spec.window_buckets = Some(over32(MAX_WINDOW_BUCKETS)); "window_buckets" }
            2 => { spec.minimum_calls = Some(over32(MAX_MINIMUM_CALLS)); "minimum_calls" }
            3 => { spec.slow_call_duration_ms = Some(over(ms(MAX_SLOW_CALL))); "slow_call_duration_ms" }
            4 => { spec.quorum_nodes = Some(over32(MAX_QUORUM_NODES)); "quorum_nodes" }
            5 => { spec.open_base_ms = Some(over(ms(MAX_OPEN))); "open_base_ms" }
            6 => { spec.open_max_ms = Some(over(ms(MAX_OPEN))); "open_max_ms" }
            7 => { spec.half_open_max_probes = Some(over32(MAX_PROBES)); "half_open_max_probes" }
            8 => { spec.probe_lease_ms = Some(over(ms(MAX_PROBE_LEASE))); "probe_lease_ms" }
            9 => { spec.successes_to_close = Some(over32(MAX_PROBES)); "successes_to_close" }
            _ => { spec.window_size = Some(over(ms(MAX_TIME_WINDOW))); "window_size" }
        };
        let err = Policy::try_from(&spec).expect_err(field);
        prop_assert_eq!(err.field, field, "{}", err);
    }
}

#[test]
fn longest_open_is_open_max_plus_its_full_jitter() {
    let p = Policy::default();
    assert_eq!(p.longest_open(), Duration::from_secs(660));
    // No trip can open it for longer.
    for trips in [1, 5, 50, u32::MAX] {
        let base = p.open_duration_before_jitter(trips);
        assert!(p.jittered(base, 0.999_999) <= p.longest_open());
    }
}

fn saved(open_until: Option<Instant>, expires_at: Option<Instant>) -> Persisted {
    Persisted {
        state: State::Open,
        generation: 7,
        open_until,
        consecutive_trips: 3,
        override_: expires_at.map(|t| Override {
            kind: OverrideKind::Disabled,
            reason: "r".into(),
            actor: "a".into(),
            expires_at: Some(t),
        }),
    }
}

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[test]
fn restored_deadlines_far_ahead_are_capped_and_near_ones_kept() {
    let now = Instant::now();
    let p = Policy::default();
    let mut far = saved(Some(now + TEN_YEARS), Some(now + TEN_YEARS));
    let capped = far.cap_deadlines(&p, now);
    assert_eq!(
        capped,
        CappedDeadlines {
            open_until: Some(TEN_YEARS),
            override_expiry: Some(TEN_YEARS),
        }
    );
    assert_eq!(far.open_until, Some(now + p.longest_open()));
    assert_eq!(
        far.override_.as_ref().unwrap().expires_at,
        Some(now + MAX_OVERRIDE_TTL)
    );
    // Idempotent.
    assert!(far.clone().cap_deadlines(&p, now).is_empty());

    // At the horizon, before it, or already past: unchanged.
    for t in [now + p.longest_open(), now + Duration::from_secs(1), now] {
        let mut near = saved(Some(t), Some(t));
        assert!(near.cap_deadlines(&p, now).is_empty());
        assert_eq!(near, saved(Some(t), Some(t)));
    }
    let mut edge = saved(None, Some(now + MAX_OVERRIDE_TTL));
    assert!(edge.cap_deadlines(&p, now).is_empty());
}

#[test]
fn a_restored_far_deadline_half_opens_within_the_longest_open_time() {
    let now = Instant::now();
    let p = Policy::default();
    let longest = p.longest_open();
    let b = Breaker::restore(p, 3, saved(Some(now + TEN_YEARS), None), now);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.open_deadline(), Some(now + longest));
    let mut b = b;
    b.advance(now + longest);
    assert_eq!(b.state(), State::HalfOpen);
}
