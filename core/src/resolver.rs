//! Which policy a circuit starts with: the configured defaults, then every
//! configured name pattern that matches, in order (later patterns win field
//! by field). Per-circuit admin changes are layered on top by the registry.

use std::collections::HashMap;
use std::sync::Arc;

use breakerd_policy::{InvalidPolicy, Policy, PolicySpec};
use parking_lot::Mutex;

use crate::glob::glob_match;

/// Most distinct combinations of matching patterns whose policy is kept for
/// sharing; circuits of further combinations get a policy of their own.
const MAX_SHARED_COMBINATIONS: usize = 1024;

/// Why the policy configuration was refused, with where in the config the
/// problem is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolverError {
    /// The defaults are not a valid policy.
    #[error("defaults: {0}")]
    InvalidDefaults(#[source] InvalidPolicy),
    /// A pattern's policy, applied onto the defaults, is invalid.
    #[error("circuits[{index}] (pattern {pattern:?}): {source}")]
    InvalidPatternPolicy {
        /// Position of the pattern in the config, from 0.
        index: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong with its policy.
        #[source]
        source: InvalidPolicy,
    },
    /// A pattern is not a valid glob over circuit names.
    #[error("circuits[{index}] (pattern {pattern:?}): {reason}")]
    InvalidPattern {
        /// Position of the pattern in the config, from 0.
        index: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The policy of a combination of patterns, and the error of their merge
/// when they conflicted.
type Combined = (Arc<Policy>, Option<InvalidPolicy>);

/// Resolves the configured policy of a circuit name. Cheap to query; built
/// once from config.
///
/// Every circuit keeps its policy, so [`resolve_shared`](Self::resolve_shared)
/// hands circuits with the same matching patterns one shared policy instead
/// of a copy each.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    defaults: Arc<Policy>,
    patterns: Vec<(String, PolicySpec)>,
    /// The policy of each combination of matching patterns (by index) seen
    /// so far, and how its patterns conflicted, if they did.
    combinations: Arc<Mutex<HashMap<Vec<usize>, Combined>>>,
}

impl Default for PolicyResolver {
    /// Built-in defaults and no patterns.
    fn default() -> Self {
        Self::build(Policy::default(), Vec::new())
    }
}

impl PolicyResolver {
    /// Checks the defaults and every pattern (each pattern's policy applied
    /// onto the defaults must be valid).
    pub fn new(
        defaults: PolicySpec,
        patterns: Vec<(String, PolicySpec)>,
    ) -> Result<Self, ResolverError> {
        let defaults = Policy::default()
            .apply(&defaults)
            .map_err(ResolverError::InvalidDefaults)?;
        for (index, (pattern, spec)) in patterns.iter().enumerate() {
            if let Some(reason) = pattern_problem(pattern) {
                return Err(ResolverError::InvalidPattern {
                    index,
                    pattern: pattern.clone(),
                    reason,
                });
            }
            defaults
                .apply(spec)
                .map_err(|source| ResolverError::InvalidPatternPolicy {
                    index,
                    pattern: pattern.clone(),
                    source,
                })?;
        }
        Ok(Self::build(defaults, patterns))
    }

    fn build(defaults: Policy, patterns: Vec<(String, PolicySpec)>) -> Self {
        Self {
            defaults: Arc::new(defaults),
            patterns,
            combinations: Arc::default(),
        }
    }

    /// The configured policy of `name`: defaults, then every matching
    /// pattern in order.
    ///
    /// Each pattern is valid on its own, but two matching patterns can
    /// combine into an invalid policy (one raises `open_base_ms` above the
    /// other's `open_max_ms`). Then the patterns are applied one at a time
    /// and any that would make the policy invalid is skipped, with a warning.
    pub fn resolve(&self, name: &str) -> Policy {
        Policy::clone(&self.resolve_shared(name))
    }

    /// [`resolve`](Self::resolve), shared: names with the same matching
    /// patterns (all names matching none, typically) get the same `Arc`.
    pub fn resolve_shared(&self, name: &str) -> Arc<Policy> {
        let matched: Vec<usize> = (self.patterns.iter().enumerate())
            .filter(|(_, (pattern, _))| glob_match(pattern, name))
            .map(|(index, _)| index)
            .collect();
        if matched.is_empty() {
            return Arc::clone(&self.defaults);
        }
        let known = self.combinations.lock().get(&matched).cloned();
        let (policy, conflict) = known.unwrap_or_else(|| {
            let resolved = self.combine(&matched);
            let mut combinations = self.combinations.lock();
            if combinations.len() < MAX_SHARED_COMBINATIONS {
                combinations.insert(matched, resolved.clone());
            }
            resolved
        });
        if let Some(err) = conflict {
            tracing::warn!(
                circuit = name,
                error = %err,
                "matching config patterns combine into an invalid policy; skipping the ones that conflict"
            );
        }
        policy
    }

    /// The policy of the patterns at `matched` (indices, in order) over the
    /// defaults.
    fn combine(&self, matched: &[usize]) -> Combined {
        let specs = || matched.iter().map(|&i| &self.patterns[i].1);
        let merged = specs().fold(PolicySpec::default(), |m, spec| merge_spec(&m, spec));
        match self.defaults.apply(&merged) {
            Ok(policy) => (Arc::new(policy), None),
            Err(err) => {
                let mut policy = Policy::clone(&self.defaults);
                for spec in specs() {
                    if let Ok(p) = policy.apply(spec) {
                        policy = p;
                    }
                }
                (Arc::new(policy), Some(err))
            }
        }
    }
}

fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return Some("pattern is empty".to_owned());
    }
    pattern.bytes().enumerate().find_map(|(offset, b)| {
        let ok = b.is_ascii_alphanumeric() || b"._:/-*?".contains(&b);
        (!ok).then(|| {
            format!("pattern contains byte 0x{b:02x} at offset {offset}; allowed: A-Z a-z 0-9 . _ : / - * ?")
        })
    })
}

/// `over`'s set fields on top of `base`'s.
pub fn merge_spec(base: &PolicySpec, over: &PolicySpec) -> PolicySpec {
    // Destructured so that a new PolicySpec field fails to compile here
    // instead of being silently dropped.
    let PolicySpec {
        consecutive_failures,
        window_kind,
        window_size,
        window_buckets,
        minimum_calls,
        failure_rate_threshold,
        slow_call_rate_threshold,
        slow_call_duration_ms,
        quorum_nodes,
        open_base_ms,
        open_backoff_multiplier,
        open_max_ms,
        open_jitter,
        half_open_max_probes,
        probe_lease_ms,
        successes_to_close,
        degraded_mode,
    } = over.clone();
    PolicySpec {
        consecutive_failures: consecutive_failures.or(base.consecutive_failures),
        window_kind: window_kind.or(base.window_kind),
        window_size: window_size.or(base.window_size),
        window_buckets: window_buckets.or(base.window_buckets),
        minimum_calls: minimum_calls.or(base.minimum_calls),
        failure_rate_threshold: failure_rate_threshold.or(base.failure_rate_threshold),
        slow_call_rate_threshold: slow_call_rate_threshold.or(base.slow_call_rate_threshold),
        slow_call_duration_ms: slow_call_duration_ms.or(base.slow_call_duration_ms),
        quorum_nodes: quorum_nodes.or(base.quorum_nodes),
        open_base_ms: open_base_ms.or(base.open_base_ms),
        open_backoff_multiplier: open_backoff_multiplier.or(base.open_backoff_multiplier),
        open_max_ms: open_max_ms.or(base.open_max_ms),
        open_jitter: open_jitter.or(base.open_jitter),
        half_open_max_probes: half_open_max_probes.or(base.half_open_max_probes),
        probe_lease_ms: probe_lease_ms.or(base.probe_lease_ms),
        successes_to_close: successes_to_close.or(base.successes_to_close),
        degraded_mode: degraded_mode.or(base.degraded_mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(n: u32) -> PolicySpec {
        PolicySpec {
            consecutive_failures: Some(n),
            ..Default::default()
        }
    }

    fn consecutive(p: &Policy) -> Option<u32> {
        p.to_spec().consecutive_failures
    }

    #[test]
    fn later_patterns_win_and_defaults_fill_the_rest() {
        let r = PolicyResolver::new(
            PolicySpec {
                consecutive_failures: Some(4),
                open_base_ms: Some(30_000),
                ..Default::default()
            },
            vec![
                ("pay*".into(), cf(3)),
                ("payments".into(), cf(7)),
                (
                    "*".into(),
                    PolicySpec {
                        half_open_max_probes: Some(2),
                        ..Default::default()
                    },
                ),
            ],
        )
        .unwrap();
        let payments = r.resolve("payments");
        assert_eq!(consecutive(&payments), Some(7));
        assert_eq!(payments.half_open_max_probes(), 2);
        assert_eq!(payments.to_spec().open_base_ms, Some(30_000));
        assert_eq!(consecutive(&r.resolve("payroll")), Some(3));
        assert_eq!(consecutive(&r.resolve("search")), Some(4));
        assert_eq!(r.resolve("search").half_open_max_probes(), 2);
    }

    #[test]
    fn order_decides_precedence() {
        let r = PolicyResolver::new(
            PolicySpec::default(),
            vec![("payments".into(), cf(7)), ("pay*".into(), cf(3))],
        )
        .unwrap();
        assert_eq!(consecutive(&r.resolve("payments")), Some(3));
    }

    #[test]
    fn invalid_config_names_its_place() {
        let bad = PolicySpec {
            half_open_max_probes: Some(0),
            ..Default::default()
        };
        let err = PolicyResolver::new(bad.clone(), vec![]).unwrap_err();
        assert!(
            matches!(err, ResolverError::InvalidDefaults(ref e) if e.field == "half_open_max_probes")
        );

        let err = PolicyResolver::new(
            PolicySpec::default(),
            vec![("ok".into(), cf(2)), ("db-*".into(), bad)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "circuits[1] (pattern \"db-*\"): invalid policy: half_open_max_probes: must be within 1..=1000, not 0"
        );

        let err =
            PolicyResolver::new(PolicySpec::default(), vec![("a b".into(), cf(2))]).unwrap_err();
        assert!(
            matches!(err, ResolverError::InvalidPattern { index: 0, .. }),
            "{err}"
        );
        let err = PolicyResolver::new(PolicySpec::default(), vec![("".into(), cf(2))]).unwrap_err();
        assert!(
            matches!(err, ResolverError::InvalidPattern { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn conflicting_patterns_skip_the_conflict() {
        let r = PolicyResolver::new(
            PolicySpec::default(),
            vec![
                (
                    "a*".into(),
                    PolicySpec {
                        open_base_ms: Some(500_000),
                        ..Default::default()
                    },
                ),
                (
                    "ab".into(),
                    PolicySpec {
                        open_max_ms: Some(100_000),
                        ..Default::default()
                    },
                ),
            ],
        )
        .unwrap();
        let p = r.resolve("ab").to_spec();
        assert_eq!(p.open_base_ms, Some(500_000));
        assert_eq!(p.open_max_ms, Some(600_000));
    }

    #[test]
    fn circuits_with_the_same_patterns_share_one_policy() {
        let r = PolicyResolver::new(
            PolicySpec::default(),
            vec![("pay*".into(), cf(3)), ("*ments".into(), cf(4))],
        )
        .unwrap();
        let shared = |a: &str, b: &str| Arc::ptr_eq(&r.resolve_shared(a), &r.resolve_shared(b));
        assert!(shared("search", "recs"), "the defaults");
        assert!(shared("payments", "payments"));
        assert!(shared("payroll", "paypal"));
        assert!(!shared("payroll", "payments"));
        assert!(!shared("search", "payroll"));
        assert_eq!(*r.resolve_shared("payments"), r.resolve("payments"));
        assert_eq!(consecutive(&r.resolve_shared("payments")), Some(4));
    }

    #[test]
    fn merge_keeps_unset_fields() {
        let m = merge_spec(
            &cf(3),
            &PolicySpec {
                probe_lease_ms: Some(5),
                ..Default::default()
            },
        );
        assert_eq!(m.consecutive_failures, Some(3));
        assert_eq!(m.probe_lease_ms, Some(5));
        assert_eq!(merge_spec(&cf(3), &cf(9)).consecutive_failures, Some(9));
    }
}
