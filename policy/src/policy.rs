//! Breaker policies: the partial [`PolicySpec`] that config files and admin
//! calls carry, and the validated [`Policy`] a breaker runs.
//!
//! Policies layer: built-in defaults, then per-name patterns from config,
//! then per-circuit admin changes. Each layer is a `PolicySpec` whose set
//! fields win; [`Policy::apply`] merges one onto a policy and checks the
//! result, so an invalid combination is refused before it reaches a breaker.
//! The bound of every field is listed in [`crate::bounds`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which calls the rate-based rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_size` calls.
    Count,
    /// The last `window_size` milliseconds, in `window_buckets` buckets.
    Time,
}

/// What a client does for a circuit while it cannot reach the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedMode {
    /// Run the same policy locally.
    Local,
    /// Allow every call.
    FailOpen,
    /// Reject every call.
    FailClosed,
}

/// A partial policy: every field is optional and only set fields change
/// anything when applied. This is the shape of a config file's `[defaults]`
/// and `[[circuits]]` tables and of an admin `SetPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Trip after this many consecutive failures; 0 disables the rule.
    pub consecutive_failures: Option<u32>,
    /// Window used by the rate rules.
    pub window_kind: Option<WindowKind>,
    /// Calls (count window) or milliseconds (time window).
    pub window_size: Option<u64>,
    /// Buckets of a time window.
    pub window_buckets: Option<u32>,
    /// Rate rules judge only windows holding at least this many calls.
    pub minimum_calls: Option<u32>,
    /// Failure rate (0 < x <= 1) that trips; 0 disables the rule.
    pub failure_rate_threshold: Option<f64>,
    /// Slow-call rate (0 < x <= 1) that trips; 0 disables the rule.
    pub slow_call_rate_threshold: Option<f64>,
    /// A call at least this slow (milliseconds) is slow.
    pub slow_call_duration_ms: Option<u64>,
    /// Trip only on failures from at least this many distinct nodes (0/1: off).
    pub quorum_nodes: Option<u32>,
    /// Open duration after the first trip, in milliseconds.
    pub open_base_ms: Option<u64>,
    /// Multiplier per consecutive trip without a full recovery (>= 1).
    pub open_backoff_multiplier: Option<f64>,
    /// Cap of the open duration before jitter, in milliseconds.
    pub open_max_ms: Option<u64>,
    /// Fraction (0-1) of the open duration added at random.
    pub open_jitter: Option<f64>,
    /// Probe leases in flight fleet-wide while half-open.
    pub half_open_max_probes: Option<u32>,
    /// Lifetime of a probe lease, in milliseconds.
    pub probe_lease_ms: Option<u64>,
    /// Successful probes needed to close.
    pub successes_to_close: Option<u32>,
    /// Client behaviour while the coordinator is unreachable.
    pub degraded_mode: Option<DegradedMode>,
}

/// Why a policy was refused: the field and the reason, for error messages
/// that an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {field}: {reason}")]
pub struct InvalidPolicy {
    /// The offending field, as named in config and in the proto.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidPolicy {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A validated breaker policy. Build one with [`Policy::default`] and
/// [`Policy::apply`]; every value in it has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) consecutive_failures: u32,
    pub(crate) window_kind: WindowKind,
    pub(crate) window_size: u64,
    pub(crate) window_buckets: u32,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Duration,
    pub(crate) quorum_nodes: u32,
    pub(crate) open_base: Duration,
    pub(crate) open_backoff_multiplier: f64,
    pub(crate) open_max: Duration,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_max_probes: u32,
    pub(crate) probe_lease: Duration,
    pub(crate) successes_to_close: u32,
    pub(crate) degraded_mode: DegradedMode,
}

impl Default for Policy {
    /// The seed's breaker: trip after 5 consecutive failures, stay open
    /// 60 s (doubling per repeated trip up to 10 min, +0-10 % jitter), one
    /// probe at a time with a 10 s lease, one success closes.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            window_kind: WindowKind::Count,
            window_size: 100,
            window_buckets: 10,
            minimum_calls: 20,
            failure_rate_threshold: 0.0,
            slow_call_rate_threshold: 0.0,
            slow_call_duration: Duration::from_secs(1),
            quorum_nodes: 0,
            open_base: Duration::from_secs(60),
            open_backoff_multiplier: 2.0,
            open_max: Duration::from_secs(600),
            open_jitter: 0.1,
            half_open_max_probes: 1,
            probe_lease: Duration::from_secs(10),
            successes_to_close: 1,
            degraded_mode: DegradedMode::Local,
        }
    }
}

impl TryFrom<&PolicySpec> for Policy {
    type Error = InvalidPolicy;

    /// The defaults with `spec` applied.
    fn try_from(spec: &PolicySpec) -> Result<Self, InvalidPolicy> {
        Policy::default().apply(spec)
    }
}

impl Policy {
    /// This policy with the set fields of `spec` replacing its own, checked
    /// as a whole. `self` is unchanged either way.
    pub fn apply(&self, spec: &PolicySpec) -> Result<Policy, InvalidPolicy> {
        let ms = Duration::from_millis;
        let mut p = self.clone();
        if let Some(v) = spec.consecutive_failures {
            p.consecutive_failures = v;
        }
        if let Some(v) = spec.window_kind {
            p.window_kind = v;
        }
        if let Some(v) = spec.window_size {
            p.window_size = v;
        }
        if let Some(v) = spec.window_buckets {
            p.window_buckets = v;
        }
        if let Some(v) = spec.minimum_calls {
            p.minimum_calls = v;
        }
        if let Some(v) = spec.failure_rate_threshold {
            p.failure_rate_threshold = v;
        }
        if let Some(v) = spec.slow_call_rate_threshold {
            p.slow_call_rate_threshold = v;
        }
        if let Some(v) = spec.slow_call_duration_ms {
            p.slow_call_duration = ms(v);
        }
        if let Some(v) = spec.quorum_nodes {
            p.quorum_nodes = v;
        }
        if let Some(v) = spec.open_base_ms {
            p.open_base = ms(v);
        }
        if let Some(v) = spec.open_backoff_multiplier {
            p.open_backoff_multiplier = v;
        }
        if let Some(v) = spec.open_max_ms {
            p.open_max = ms(v);
        }
        if let Some(v) = spec.open_jitter {
            p.open_jitter = v;
        }
        if let Some(v) = spec.half_open_max_probes {
            p.half_open_max_probes = v;
        }
        if let Some(v) = spec.probe_lease_ms {
            p.probe_lease = ms(v);
        }
        if let Some(v) = spec.successes_to_close {
            p.successes_to_close = v;
        }
        if let Some(v) = spec.degraded_mode {
            p.degraded_mode = v;
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks every field against its bound (see [`crate::bounds`]).
    fn validate(&self) -> Result<(), InvalidPolicy> {
        crate::bounds::check(self)
    }

    /// Every field of this policy as a fully set spec (for the wire and for
    /// persistence).
    pub fn to_spec(&self) -> PolicySpec {
        PolicySpec {
            consecutive_failures: Some(self.consecutive_failures),
            window_kind: Some(self.window_kind),
            window_size: Some(self.window_size),
            window_buckets: Some(self.window_buckets),
            minimum_calls: Some(self.minimum_calls),
            failure_rate_threshold: Some(self.failure_rate_threshold),
            slow_call_rate_threshold: Some(self.slow_call_rate_threshold),
            slow_call_duration_ms: Some(duration_ms(self.slow_call_duration)),
            quorum_nodes: Some(self.quorum_nodes),
            open_base_ms: Some(duration_ms(self.open_base)),
            open_backoff_multiplier: Some(self.open_backoff_multiplier),
            open_max_ms: Some(duration_ms(self.open_max)),
            open_jitter: Some(self.open_jitter),
            half_open_max_probes: Some(self.half_open_max_probes),
            probe_lease_ms: Some(duration_ms(self.probe_lease)),
            successes_to_close: Some(self.successes_to_close),
            degraded_mode: Some(self.degraded_mode),
        }
    }

    /// Degraded-mode behaviour for clients.
    pub fn degraded_mode(&self) -> DegradedMode {
        self.degraded_mode
    }

    /// Probes allowed in flight while half-open.
    pub fn half_open_max_probes(&self) -> u32 {
        self.half_open_max_probes
    }

    /// Lifetime of a probe lease.
    pub fn probe_lease(&self) -> Duration {
        self.probe_lease
    }

    /// Whether the failure-rate or slow-call-rate rule is on, which is when
    /// a breaker keeps a sliding window.
    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate_threshold > 0.0 || self.slow_call_rate_threshold > 0.0
    }

    /// The open duration before jitter for the `trips`-th consecutive trip
    /// (1-based): `open_base * multiplier^(trips-1)`, capped at `open_max`.
    pub fn open_duration_before_jitter(&self, trips: u32) -> Duration {
        let exp = trips.saturating_sub(1).min(1000) as i32;
        let secs = self.open_base.as_secs_f64() * self.open_backoff_multiplier.powi(exp);
        let max = self.open_max.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.open_max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The longest a trip can hold this policy's circuit open:
    /// `open_max` plus its full jitter. Restored open deadlines are capped
    /// at this from the moment of the restart.
    pub fn longest_open(&self) -> Duration {
        self.jittered(self.open_max, 1.0)
    }

    /// The jittered open duration: `base` plus `jitter * unit * base`, where
    /// `unit` is a sample in `[0, 1)`. Never shorter than `base`.
    pub fn jittered(&self, base: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        base + base.mul_f64(self.open_jitter * unit)
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let p = Policy::default();
        assert_eq!(p.consecutive_failures, 5);
        assert_eq!(p.open_base, Duration::from_secs(60));
        assert_eq!(p.half_open_max_probes, 1);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn invalid_fields_are_named_and_leave_the_policy_unchanged() {
        let cases: &[(PolicySpec, &str)] = &[
            (
                PolicySpec {
                    failure_rate_threshold: Some(1.5),
                    ..Default::default()
                },
                "failure_rate_threshold",
            ),
            (
                PolicySpec {
                    failure_rate_threshold: Some(f64::NAN),
                    ..Default::default()
                },
                "failure_rate_threshold",
            ),
            (
                PolicySpec {
                    half_open_max_probes: Some(0),
                    ..Default::default()
                },
                "half_open_max_probes",
            ),
            (
                PolicySpec {
                    open_base_ms: Some(0),
                    ..Default::default()
                },
                "open_base_ms",
            ),
            (
                PolicySpec {
                    open_max_ms: Some(1000),
                    ..Default::default()
                },
                "open_max_ms",
            ),
            (
                PolicySpec {
                    open_backoff_multiplier: Some(0.5),
                    ..Default::default()
                },
                "open_backoff_multiplier",
            ),
            (
                PolicySpec {
                    open_jitter: Some(-0.1),
                    ..Default::default()
                },
                "open_jitter",
            ),
            (
                PolicySpec {
                    quorum_nodes: Some(65),
                    ..Default::default()
                },
                "quorum_nodes",
            ),
            (
                PolicySpec {
                    window_size: Some(0),
                    ..Default::default()
                },
                "window_size",
            ),
            (
                PolicySpec {
                    window_size: Some(10),
                    ..Default::default()
                },
                "minimum_calls",
            ),
            (
                PolicySpec {
                    consecutive_failures: Some(0),
                    ..Default::default()
                },
                "consecutive_failures",
            ),
            (
                PolicySpec {
                    probe_lease_ms: Some(0),
                    ..Default::default()
                },
                "probe_lease_ms",
            ),
            (
                PolicySpec {
                    successes_to_close: Some(0),
                    ..Default::default()
                },
                "successes_to_close",
            ),
            (
                PolicySpec {
                    window_kind: Some(WindowKind::Time),
                    window_size: Some(5),
                    window_buckets: Some(10),
                    ..Default::default()
                },
                "window_size",
            ),
        ];
        let base = Policy::default();
        for (spec, field) in cases {
            let err = base.apply(spec).expect_err(field);
            assert_eq!(err.field, *field, "{spec:?}");
        }
        assert_eq!(base, Policy::default());
    }

    #[test]
    fn apply_changes_only_set_fields() {
        let p = Policy::default()
            .apply(&PolicySpec {
                consecutive_failures: Some(3),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.consecutive_failures, 3);
        assert_eq!(p.open_base, Policy::default().open_base);
        assert_eq!(Policy::default().apply(&p.to_spec()).unwrap(), p);
    }

    #[test]
    fn open_duration_backs_off_and_caps() {
        let p = Policy::default();
        let s = Duration::from_secs;
        assert_eq!(p.open_duration_before_jitter(0), s(60));
        assert_eq!(p.open_duration_before_jitter(1), s(60));
        assert_eq!(p.open_duration_before_jitter(2), s(120));
        assert_eq!(p.open_duration_before_jitter(4), s(480));
        assert_eq!(p.open_duration_before_jitter(5), s(600));
        assert_eq!(p.open_duration_before_jitter(u32::MAX), s(600));
    }

    #[test]
    fn jitter_only_lengthens_within_its_fraction() {
        let p = Policy::default();
        let base = Duration::from_secs(60);
        assert_eq!(p.jittered(base, 0.0), base);
        assert_eq!(p.jittered(base, 1.0), Duration::from_secs(66));
        assert_eq!(p.jittered(base, f64::NAN), base);
        let mid = p.jittered(base, 0.5);
        assert!(mid > base && mid < Duration::from_secs(66));
    }
}
