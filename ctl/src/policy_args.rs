//! `set-policy` arguments: `key=value` pairs into a partial proto `Policy`.
//!
//! Keys are the proto field names (the same names `get --json` prints), so
//! what an operator reads is what they can write back. Only syntax and types
//! are checked here; whether the resulting policy makes sense is the
//! coordinator's decision (it answers `INVALID_ARGUMENT` naming the field).

use breakerd_proto::v1::{DegradedMode, Policy, WindowKind};

use crate::duration::parse_duration;

/// Every key `set-policy` accepts, in proto field order.
pub const KEYS: [&str; 17] = [
    "consecutive_failures",
    "window_kind",
    "window_size",
    "window_buckets",
    "minimum_calls",
    "failure_rate_threshold",
    "slow_call_rate_threshold",
    "slow_call_duration_ms",
    "quorum_nodes",
    "open_base_ms",
    "open_backoff_multiplier",
    "open_max_ms",
    "open_jitter",
    "half_open_max_probes",
    "probe_lease_ms",
    "successes_to_close",
    "degraded_mode",
];

/// Why a `key=value` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyArgError {
    /// No `=` in the argument.
    #[error("{0:?} is not key=value (e.g. consecutive_failures=3)")]
    NotKeyValue(String),
    /// A key that is not a policy field.
    #[error("unknown policy key {key:?}; known keys: {}", KEYS.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The same key twice: which one was meant is anyone's guess.
    #[error("policy key {0:?} given more than once")]
    Duplicate(String),
    /// A value of the wrong type for its key.
    #[error("{key}={value:?}: {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// `set-policy` without any change.
    #[error("no policy changes given; pass key=value pairs (known keys: {})", KEYS.join(", "))]
    Empty,
}

/// Builds the partial policy of a `SetPolicy` request from `key=value`
/// arguments. Fields not mentioned stay unset, so the coordinator keeps them.
pub fn parse_policy_args<S: AsRef<str>>(args: &[S]) -> Result<Policy, PolicyArgError> {
    if args.is_empty() {
        return Err(PolicyArgError::Empty);
    }
    let mut policy = Policy::default();
    let mut seen: Vec<&str> = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| PolicyArgError::NotKeyValue(arg.to_owned()))?;
        let (key, value) = (key.trim(), value.trim());
        let Some(&known) = KEYS.iter().find(|k| **k == key) else {
            return Err(PolicyArgError::UnknownKey {
                key: key.to_owned(),
            });
        };
        if seen.contains(&known) {
            return Err(PolicyArgError::Duplicate(known.to_owned()));
        }
        seen.push(known);
        set_field(&mut policy, known, value)?;
    }
    Ok(policy)
}

fn set_field(p: &mut Policy, key: &str, value: &str) -> Result<(), PolicyArgError> {
    let bad = |expected: &'static str| PolicyArgError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    };
    let u32_ = || {
        value
            .parse::<u32>()
            .map_err(|_| bad("expected a whole number (0-4294967295)"))
    };
    let u64_ = || {
        value
            .parse::<u64>()
            .map_err(|_| bad("expected a whole number"))
    };
    let f64_ = || match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(bad("expected a decimal number, e.g. 0.5")),
    };
    // `_ms` fields take milliseconds, or a duration with a unit (30s, 10m),
    // because open_base_ms=600000 is easy to get wrong by a factor of ten.
    let ms = || match value.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => parse_duration(value)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .ok_or_else(|| bad("expected milliseconds or a duration such as 30s or 10m")),
    };
    match key {
        "consecutive_failures" => p.consecutive_failures = Some(u32_()?),
        "window_kind" => {
            let kind = match value.to_ascii_lowercase().as_str() {
                "count" => WindowKind::Count,
                "time" => WindowKind::Time,
                _ => return Err(bad("expected count or time")),
            };
            p.window_kind = Some(kind as i32);
        }
        // A count window is sized in calls, a time window in milliseconds;
        // which one applies depends on window_kind, so take a plain number.
        "window_size" => p.window_size = Some(u64_()?),
        "window_buckets" => p.window_buckets = Some(u32_()?),
        "minimum_calls" => p.minimum_calls = Some(u32_()?),
        "failure_rate_threshold" => p.failure_rate_threshold = Some(f64_()?),
        "slow_call_rate_threshold" => p.slow_call_rate_threshold = Some(f64_()?),
        "slow_call_duration_ms" => p.slow_call_duration_ms = Some(ms()?),
        "quorum_nodes" => p.quorum_nodes = Some(u32_()?),
        "open_base_ms" => p.open_base_ms = Some(ms()?),
        "open_backoff_multiplier" => p.open_backoff_multiplier = Some(f64_()?),
        "open_max_ms" => p.open_max_ms = Some(ms()?),
        "open_jitter" => p.open_jitter = Some(f64_()?),
        "half_open_max_probes" => p.half_open_max_probes = Some(u32_()?),
        "probe_lease_ms" => p.probe_lease_ms = Some(ms()?),
        "successes_to_close" => p.successes_to_close = Some(u32_()?),
        "degraded_mode" => {
            let mode = match value.to_ascii_lowercase().replace('-', "_").as_str() {
                "local" => DegradedMode::Local,
                "fail_open" => DegradedMode::FailOpen,
                "fail_closed" => DegradedMode::FailClosed,
                _ => return Err(bad("expected local, fail_open or fail_closed")),
            };
            p.degraded_mode = Some(mode as i32);
        }
        // KEYS and this match list the same names; the unit test below
        // sets every key, so a name missing here fails it.
        _ => {
            return Err(PolicyArgError::UnknownKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_only_the_given_fields() {
        let p = parse_policy_args(&["consecutive_failures=3", "open_base_ms=30000"]).unwrap();
        assert_eq!(
            p,
            Policy {
                consecutive_failures: Some(3),
                open_base_ms: Some(30_000),
                ..Policy::default()
            }
        );
    }

    #[test]
    fn every_key_is_settable() {
        let sample = |k: &str| match k {
            "window_kind" => "time",
            "degraded_mode" => "fail_open",
            "failure_rate_threshold" | "slow_call_rate_threshold" | "open_jitter" => "0.5",
            "open_backoff_multiplier" => "2",
            _ => "7",
        };
        for key in KEYS {
            let arg = format!("{key}={}", sample(key));
            let p = parse_policy_args(&[arg.as_str()]).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_ne!(p, Policy::default(), "{key} changed nothing");
        }
        let all: Vec<String> = KEYS.iter().map(|k| format!("{k}={}", sample(k))).collect();
        let p = parse_policy_args(&all).unwrap();
        assert_eq!(p.window_kind, Some(WindowKind::Time as i32));
        assert_eq!(p.degraded_mode, Some(DegradedMode::FailOpen as i32));
        assert_eq!(p.open_jitter, Some(0.5));
        assert_eq!(p.probe_lease_ms, Some(7));
    }

    #[test]
    fn ms_fields_take_durations_with_units() {
        let p = parse_policy_args(&["open_base_ms=30s", "open_max_ms=10m", "probe_lease_ms=1500"])
            .unwrap();
        assert_eq!(
            (p.open_base_ms, p.open_max_ms, p.probe_lease_ms),
            (Some(30_000), Some(600_000), Some(1_500))
        );
    }

    #[test]
    fn enums_are_case_insensitive_and_accept_dashes() {
        let p = parse_policy_args(&["window_kind=COUNT", "degraded_mode=fail-closed"]).unwrap();
        assert_eq!(p.window_kind, Some(WindowKind::Count as i32));
        assert_eq!(p.degraded_mode, Some(DegradedMode::FailClosed as i32));
    }

    #[test]
    fn unknown_keys_are_a_clear_error() {
        let err = parse_policy_args(&["consecutive_failure=3"]).unwrap_err();
        assert_eq!(
            err,
            PolicyArgError::UnknownKey {
                key: "consecutive_failure".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("unknown policy key \"consecutive_failure\""),
            "{msg}"
        );
        assert!(msg.contains("consecutive_failures, window_kind"), "{msg}");
    }

    #[test]
    fn refuses_bad_syntax_and_values() {
        assert_eq!(parse_policy_args::<&str>(&[]), Err(PolicyArgError::Empty));
        assert_eq!(
            parse_policy_args(&["consecutive_failures"]),
            Err(PolicyArgError::NotKeyValue("consecutive_failures".into()))
        );
        assert_eq!(
            parse_policy_args(&["quorum_nodes=2", "quorum_nodes=3"]),
            Err(PolicyArgError::Duplicate("quorum_nodes".into()))
        );
        for bad in [
            "consecutive_failures=-1",
            "consecutive_failures=three",
            "consecutive_failures=4294967296",
            "window_size=1.5",
            "failure_rate_threshold=half",
            "failure_rate_threshold=NaN",
            "open_jitter=inf",
            "open_base_ms=10",
            "open_base_ms=soon",
            "window_kind=sliding",
            "degraded_mode=open",
        ] {
            // open_base_ms=10 is fine (10 ms); everything else is refused.
            let result = parse_policy_args(&[bad]);
            if bad == "open_base_ms=10" {
                assert_eq!(result.unwrap().open_base_ms, Some(10));
            } else {
                assert!(
                    matches!(result, Err(PolicyArgError::BadValue { .. })),
                    "{bad}: {result:?}"
                );
            }
        }
    }
}
