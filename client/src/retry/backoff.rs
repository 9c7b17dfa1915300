//! Exponential backoff with jitter: the delay arithmetic, in one pure function.
//!
//! Everything here is deterministic given the random unit passed in, so the
//! bounds (minimum, maximum, jitter range) are unit-tested directly rather
//! than through sleeps. Min/max mix-ups are the classic backoff bug.

use std::time::Duration;

/// How the exponential delay is randomised.
///
/// With `cap = min(max_delay, base * multiplier^retry)`:
/// - [`Jitter::Full`]: uniform in `[0, cap]` (AWS "full jitter"; spreads a
///   synchronised fleet the most),
/// - [`Jitter::Equal`]: uniform in `[cap / 2, cap]` (keeps a floor, so a retry
///   never fires immediately),
/// - [`Jitter::None`]: exactly `cap` (deterministic; for tests and tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, cap]`.
    #[default]
    Full,
    /// Uniform in `[cap / 2, cap]`.
    Equal,
    /// Exactly `cap`.
    None,
}

/// Parameters of an exponential backoff. Checked by
/// [`RetryPolicyBuilder::build`](super::RetryPolicyBuilder::build).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Growth factor per retry (>= 1).
    pub multiplier: f64,
    /// Upper bound of any delay, jitter included.
    pub max_delay: Duration,
    /// How the delay is randomised.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            multiplier: 2.0,
            max_delay: Duration::from_secs(2),
            jitter: Jitter::Full,
        }
    }
}

/// The un-jittered delay before retry number `retry` (0 = the first retry):
/// `min(max_delay, base * multiplier^retry)`.
///
/// Computed in `f64` seconds and clamped *before* converting back, so a huge
/// exponent saturates at `max_delay` instead of overflowing or panicking.
pub fn capped_delay(backoff: &Backoff, retry: u32) -> Duration {
    let max = backoff.max_delay.as_secs_f64();
    let exp = i32::try_from(retry).unwrap_or(i32::MAX);
    let raw = backoff.base.as_secs_f64() * backoff.multiplier.powi(exp);
    // NaN (0 * inf) and +inf both fall back to the cap.
    let secs = if raw.is_finite() { raw.min(max) } else { max };
    Duration::from_secs_f64(secs.max(0.0))
}

/// The delay to sleep before retry number `retry` (0 = the first retry).
///
/// `unit` is a random number in `[0, 1]` (values outside are clamped), so
/// the function is pure and its bounds testable. The result always lies in
/// `[lower, cap]` with `cap = capped_delay(backoff, retry)` and `lower` = 0
/// for full jitter, `cap / 2` for equal jitter, `cap` with no jitter; it
/// never exceeds `max_delay`.
pub fn delay(backoff: &Backoff, retry: u32, unit: f64) -> Duration {
    let cap = capped_delay(backoff, retry);
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    match backoff.jitter {
        Jitter::None => cap,
        Jitter::Full => cap.mul_f64(unit),
        Jitter::Equal => {
            let half = cap / 2;
            // `cap - half` rather than `half` so an odd nanosecond count
            // still reaches `cap` at unit = 1.
            half + (cap - half).mul_f64(unit)
        }
    }
    .min(backoff.max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(base_ms: u64, mult: f64, max_ms: u64, jitter: Jitter) -> Backoff {
        Backoff {
            base: Duration::from_millis(base_ms),
            multiplier: mult,
            max_delay: Duration::from_millis(max_ms),
            jitter,
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn capped_delay_grows_exponentially_then_saturates() {
        let bo = b(100, 2.0, 1_000, Jitter::None);
        let got: Vec<_> = (0..6).map(|r| capped_delay(&bo, r)).collect();
        assert_eq!(
            got,
            [MS(100), MS(200), MS(400), MS(800), MS(1_000), MS(1_000)]
        );
    }

    #[test]
    fn capped_delay_never_overflows_on_huge_exponents() {
        let bo = b(100, 10.0, 5_000, Jitter::None);
        assert_eq!(capped_delay(&bo, u32::MAX), MS(5_000));
        let bo = b(0, f64::MAX, 5_000, Jitter::None);
        // 0 * inf = NaN: must still be bounded, not panic.
        assert!(capped_delay(&bo, 400) <= MS(5_000));
    }

    #[test]
    fn no_jitter_is_exactly_the_cap() {
        let bo = b(100, 2.0, 1_000, Jitter::None);
        for unit in [0.0, 0.3, 1.0] {
            assert_eq!(delay(&bo, 2, unit), MS(400));
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_cap() {
        let bo = b(100, 2.0, 1_000, Jitter::Full);
        assert_eq!(delay(&bo, 2, 0.0), Duration::ZERO, "minimum is zero");
        assert_eq!(delay(&bo, 2, 1.0), MS(400), "maximum is the cap");
        assert_eq!(delay(&bo, 2, 0.5), MS(200));
        // Past saturation the maximum is max_delay, never more.
        assert_eq!(delay(&bo, 10, 1.0), MS(1_000));
    }

    #[test]
    fn equal_jitter_spans_half_cap_to_cap() {
        let bo = b(100, 2.0, 1_000, Jitter::Equal);
        assert_eq!(delay(&bo, 2, 0.0), MS(200), "minimum is half the cap");
        assert_eq!(delay(&bo, 2, 1.0), MS(400), "maximum is the cap");
        assert_eq!(delay(&bo, 2, 0.5), MS(300));
        assert_eq!(delay(&bo, 10, 0.0), MS(500));
        assert_eq!(delay(&bo, 10, 1.0), MS(1_000));
        // Odd nanosecond counts still reach the cap.
        let odd = Backoff {
            base: Duration::from_nanos(3),
            ..bo
        };
        assert_eq!(delay(&odd, 0, 1.0), Duration::from_nanos(3));
    }

    #[test]
    fn out_of_range_units_are_clamped() {
        let bo = b(100, 2.0, 1_000, Jitter::Full);
        assert_eq!(delay(&bo, 0, -3.0), Duration::ZERO);
        assert_eq!(delay(&bo, 0, 7.0), MS(100));
        assert_eq!(delay(&bo, 0, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn every_delay_is_within_bounds_for_a_sweep() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
            let bo = b(37, 3.0, 2_500, jitter);
            for retry in 0..12 {
                let cap = capped_delay(&bo, retry);
                let lower = match jitter {
                    Jitter::Full => Duration::ZERO,
                    Jitter::Equal => cap / 2,
                    Jitter::None => cap,
                };
                for i in 0..=20 {
                    let d = delay(&bo, retry, f64::from(i) / 20.0);
                    assert!(d >= lower && d <= cap, "{jitter:?} retry {retry}: {d:?}");
                    assert!(d <= bo.max_delay);
                }
            }
        }
    }
}
