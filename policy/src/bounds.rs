//! The bound of every numeric policy field and admin input, and the check
//! that enforces them; and the horizons of deadlines restored after a
//! restart.
//!
//! Every field is range-checked on its own, whatever the other fields are
//! (a count window's `window_buckets` too), then the rules that join
//! fields are checked. A value that would leave a rule unable to fire (a
//! `minimum_calls` a count window can never hold, a `slow_call_duration_ms`
//! no call reaches, a quorum larger than the nodes a count window can hold)
//! is refused like any other, with an [`InvalidPolicy`] naming the field and
//! the allowed range. Durations are milliseconds.
//!
//! | field | allowed | why this bound |
//! |---|---|---|
//! | `consecutive_failures` | 0 (off) or 1..=1000000 | a run longer than that is no longer "consecutive" |
//! | `window_size` (count) | 1..=10000 calls | one byte per call, per circuit |
//! | `window_size` (time) | `window_buckets`..=3600000 | at least 1 ms per bucket; one hour at most |
//! | `window_buckets` | 1..=600, whatever the window kind | one bucket each, per circuit |
//! | `minimum_calls` | 1..=1000000; with a count window also ≤ `window_size` | a count window never holds more calls than its size; a time window's capacity in calls is not known, so it has the flat bound |
//! | `failure_rate_threshold` | 0 (off) or within 0..=1 (finite) | a rate is at most 1 |
//! | `slow_call_rate_threshold` | 0 (off) or within 0..=1 (finite) | a rate is at most 1 |
//! | `slow_call_duration_ms` | 1..=3600000 | a call slower than an hour is a timeout, not a slow call; u64::MAX would never fire |
//! | `quorum_nodes` | 0 or 1 (off), 2..=64; with a count window also ≤ `window_size` | distinct nodes tracked per circuit; a window of N calls holds at most N nodes |
//! | `open_base_ms` | 1..=604800000 (7 days) | |
//! | `open_backoff_multiplier` | 1..=100 (finite) | |
//! | `open_max_ms` | `open_base_ms`..=604800000 | |
//! | `open_jitter` | 0..=1 (finite) | a fraction of the open time |
//! | `half_open_max_probes` | 1..=1000 | leases held per circuit |
//! | `probe_lease_ms` | 1..=3600000 | |
//! | `successes_to_close` | 1..=1000 | probes may follow each other, so any count up to it is reachable |
//! | override `expires_in_ms` | 0 or omitted (never lapses), 1..=2592000000 (30 days) | [`MAX_OVERRIDE_TTL`]; a longer hold is an override without expiry |
//!
//! Every policy also needs one trip rule on: `consecutive_failures`,
//! `failure_rate_threshold` or `slow_call_rate_threshold` (shadow mode is a
//! `DISABLED` override). The admin API's other numbers are clamped or
//! refused where they are read: a list `page_size` is clamped to 1000
//! (0: the default), an audit `limit` must be within 0..=1000. On the data
//! plane a report's `age_us` is clamped to 10 s and its `latency_us` is
//! taken as it is (any latency up to the slow-call bound can be reported).
//!
//! **Restored deadlines.** Deadlines are saved in wall-clock time, so a wall
//! clock that was ahead when they were written leaves them far in the
//! future. At restore ([`Persisted::cap_deadlines`]) an open deadline is
//! capped at the policy's [`longest open time`](Policy::longest_open)
//! (`open_max_ms` plus its full jitter) from now, and an override's expiry
//! at [`MAX_OVERRIDE_TTL`] from now. Probe leases are not saved at all: a
//! restored circuit has no probe in flight.

use std::time::{Duration, Instant};

use crate::policy::{InvalidPolicy, Policy, WindowKind, duration_ms};
use crate::types::Persisted;

/// Longest run the consecutive-failure rule may wait for.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1_000_000;
/// Largest quorum a policy may ask for; also bounds the per-circuit set of
/// distinct failing nodes a breaker tracks.
pub const MAX_QUORUM_NODES: u32 = 64;
/// Largest count window, in calls (bounds per-circuit memory).
pub const MAX_COUNT_WINDOW: u64 = 10_000;
/// Largest time window.
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(3600);
/// Most buckets in a time window.
pub const MAX_WINDOW_BUCKETS: u32 = 600;
/// Largest `minimum_calls` (a count window is bounded by its size too).
pub const MAX_MINIMUM_CALLS: u32 = 1_000_000;
/// Longest `slow_call_duration_ms`.
pub const MAX_SLOW_CALL: Duration = Duration::from_secs(3600);
/// Longest open duration a policy may configure.
pub const MAX_OPEN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most probes a half-open circuit may have in flight, and most successful
/// probes a policy may ask for.
pub const MAX_PROBES: u32 = 1000;
/// Longest probe lease.
pub const MAX_PROBE_LEASE: Duration = Duration::from_secs(3600);
/// Longest expiry an override may be set with, and the horizon a restored
/// override expiry is capped at.
pub const MAX_OVERRIDE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest `open_backoff_multiplier`.
pub const MAX_BACKOFF_MULTIPLIER: f64 = 100.0;

fn refuse(field: &'static str, reason: String) -> Result<(), InvalidPolicy> {
    Err(InvalidPolicy::new(field, reason))
}

/// `v` within `lo..=hi`.
fn int(field: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), InvalidPolicy> {
    if (lo..=hi).contains(&v) {
        return Ok(());
    }
    refuse(field, format!("must be within {lo}..={hi}, not {v}"))
}

/// A duration in milliseconds within `1..=max`.
fn millis(field: &'static str, v: Duration, max: Duration) -> Result<(), InvalidPolicy> {
    let v = duration_ms(v);
    let max = duration_ms(max);
    if (1..=max).contains(&v) {
        return Ok(());
    }
    refuse(field, format!("must be within 1..={max} ms, not {v}"))
}

/// A finite `v` within `lo..=hi` (NaN is refused).
fn real(field: &'static str, v: f64, lo: f64, hi: f64, note: &str) -> Result<(), InvalidPolicy> {
    if (lo..=hi).contains(&v) {
        return Ok(());
    }
    refuse(field, format!("must be within {lo}..={hi}{note}, not {v}"))
}

/// Checks every field of `p` against its bound, in field order (but
/// `window_buckets` before `window_size`): a bound that depends on another
/// field (`window_size` of a time window on `window_buckets`,
/// `minimum_calls` and `quorum_nodes` of a count window on `window_size`,
/// `open_max_ms` on `open_base_ms`) is checked after that field, so the
/// range in the message is one that can be met. The first problem wins.
pub(crate) fn check(p: &Policy) -> Result<(), InvalidPolicy> {
    let count = p.window_kind == WindowKind::Count;
    if p.consecutive_failures > MAX_CONSECUTIVE_FAILURES {
        refuse(
            "consecutive_failures",
            format!(
                "must be 0 (off) or within 1..={MAX_CONSECUTIVE_FAILURES}, not {}",
                p.consecutive_failures
            ),
        )?;
    }
    // Checked for a count window too, which does not use it.
    int(
        "window_buckets",
        p.window_buckets.into(),
        1,
        MAX_WINDOW_BUCKETS.into(),
    )?;
    if count {
        int("window_size", p.window_size, 1, MAX_COUNT_WINDOW)?;
    } else {
        let (lo, hi) = (u64::from(p.window_buckets), duration_ms(MAX_TIME_WINDOW));
        if !(lo..=hi).contains(&p.window_size) {
            refuse(
                "window_size",
                format!(
                    "must be within {lo}..={hi} ms (a time window of {lo} buckets needs at least 1 ms per bucket), not {}",
                    p.window_size
                ),
            )?;
        }
    }
    // A count window never holds more calls, nor more distinct nodes, than
    // its size; a time window's capacity in calls is not known.
    let held = |max: u32| {
        if count && p.window_size < u64::from(max) {
            (
                p.window_size,
                format!(
                    " (a count window of {} calls never holds more)",
                    p.window_size
                ),
            )
        } else {
            (u64::from(max), String::new())
        }
    };
    let (hi, why) = held(MAX_MINIMUM_CALLS);
    if !(1..=hi).contains(&u64::from(p.minimum_calls)) {
        refuse(
            "minimum_calls",
            format!("must be within 1..={hi}{why}, not {}", p.minimum_calls),
        )?;
    }
    let off = " (0 disables)";
    real(
        "failure_rate_threshold",
        p.failure_rate_threshold,
        0.0,
        1.0,
        off,
    )?;
    real(
        "slow_call_rate_threshold",
        p.slow_call_rate_threshold,
        0.0,
        1.0,
        off,
    )?;
    millis("slow_call_duration_ms", p.slow_call_duration, MAX_SLOW_CALL)?;
    let (hi, why) = held(MAX_QUORUM_NODES);
    if u64::from(p.quorum_nodes) > hi {
        refuse(
            "quorum_nodes",
            format!(
                "must be within 0..={hi}{why} (0 and 1 disable), not {}",
                p.quorum_nodes
            ),
        )?;
    }
    millis("open_base_ms", p.open_base, MAX_OPEN)?;
    real(
        "open_backoff_multiplier",
        p.open_backoff_multiplier,
        1.0,
        MAX_BACKOFF_MULTIPLIER,
        "",
    )?;
    let (lo, hi) = (duration_ms(p.open_base), duration_ms(MAX_OPEN));
    if !(lo..=hi).contains(&duration_ms(p.open_max)) {
        refuse(
            "open_max_ms",
            format!(
                "must be within open_base_ms ({lo})..={hi} ms, not {}",
                duration_ms(p.open_max)
            ),
        )?;
    }
    real("open_jitter", p.open_jitter, 0.0, 1.0, "")?;
    int(
        "half_open_max_probes",
        p.half_open_max_probes.into(),
        1,
        MAX_PROBES.into(),
    )?;
    millis("probe_lease_ms", p.probe_lease, MAX_PROBE_LEASE)?;
    int(
        "successes_to_close",
        p.successes_to_close.into(),
        1,
        MAX_PROBES.into(),
    )?;
    if p.consecutive_failures == 0
        && p.failure_rate_threshold == 0.0
        && p.slow_call_rate_threshold == 0.0
    {
        refuse(
            "consecutive_failures",
            "every trip rule is disabled; set consecutive_failures, failure_rate_threshold or slow_call_rate_threshold (use a DISABLED override for shadow mode)".into(),
        )?;
    }
    Ok(())
}

/// What [`Persisted::cap_deadlines`] changed: for each capped deadline, how
/// far ahead of now it was stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CappedDeadlines {
    /// The open deadline, when it lay beyond the policy's longest open time.
    pub open_until: Option<Duration>,
    /// The override's expiry, when it lay beyond [`MAX_OVERRIDE_TTL`].
    pub override_expiry: Option<Duration>,
}

impl CappedDeadlines {
    /// Whether nothing was capped.
    pub fn is_empty(&self) -> bool {
        self.open_until.is_none() && self.override_expiry.is_none()
    }
}

impl Persisted {
    /// Brings deadlines restored from storage within what a running
    /// coordinator could have set at `now` (see the [module docs](self)):
    /// the open deadline within `policy`'s [longest open
    /// time](Policy::longest_open), an override's expiry within
    /// [`MAX_OVERRIDE_TTL`]. Returns what it capped; idempotent.
    pub fn cap_deadlines(&mut self, policy: &Policy, now: Instant) -> CappedDeadlines {
        let cap = |t: &mut Instant, horizon: Duration| {
            let ahead = t.saturating_duration_since(now);
            (ahead > horizon).then(|| {
                *t = now + horizon;
                ahead
            })
        };
        CappedDeadlines {
            open_until: self
                .open_until
                .as_mut()
                .and_then(|t| cap(t, policy.longest_open())),
            override_expiry: self
                .override_
                .as_mut()
                .and_then(|o| o.expires_at.as_mut())
                .and_then(|t| cap(t, MAX_OVERRIDE_TTL)),
        }
    }
}

#[cfg(test)]
mod tests;
