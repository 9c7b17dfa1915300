//! Exponential backoff with jitter, for both reconnecting to the
//! coordinator and retrying calls ([`crate::retry`]).
//!
//! The n-th retry (0-based) waits a random time below
//! `min(max_delay, base * multiplier^n)`; with full jitter (the default)
//! uniformly in `[0, that]`, so a fleet that lost its coordinator at the
//! same instant does not reconnect in lock-step. The arithmetic is a pure
//! function of the attempt and a random unit, so its bounds (minimum,
//! maximum, jitter range) are unit-tested directly rather than through
//! sleeps: min/max mix-ups are the classic backoff bug.

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

/// Parameters of an exponential backoff. A retry policy checks them when it
/// is built ([`RetryPolicyBuilder::build`](crate::retry::RetryPolicyBuilder::build));
/// [`Backoff::new`] makes the reconnect kind, doubling with full jitter.
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
    /// [`Backoff::RETRY`].
    fn default() -> Self {
        Self::RETRY
    }
}

impl Backoff {
    /// The retry default: 50 ms doubling up to 2 s, full jitter.
    pub const RETRY: Backoff = Backoff {
        base: Duration::from_millis(50),
        multiplier: 2.0,
        max_delay: Duration::from_secs(2),
        jitter: Jitter::Full,
    };

    /// The reconnect default: 50 ms doubling up to 5 s, full jitter.
    pub const RECONNECT: Backoff = Backoff {
        base: Duration::from_millis(50),
        multiplier: 2.0,
        max_delay: Duration::from_secs(5),
        jitter: Jitter::Full,
    };

    /// A backoff doubling from `base`, never exceeding `cap`, with full
    /// jitter. A `cap` below `base` is raised to `base`; a zero `base`
    /// becomes 1 ms.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self {
            base,
            multiplier: 2.0,
            max_delay: cap.max(base),
            jitter: Jitter::Full,
        }
    }

    /// The un-jittered delay before retry `attempt` (0 = the first retry):
    /// `min(max_delay, base * multiplier^attempt)`.
    ///
    /// Computed in `f64` seconds and clamped *before* converting back, so a
    /// huge exponent saturates at `max_delay` instead of overflowing or
    /// panicking.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let max = self.max_delay.as_secs_f64();
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let raw = self.base.as_secs_f64() * self.multiplier.powi(exp);
        // NaN (0 * inf) and +inf both fall back to the cap.
        let secs = if raw.is_finite() { raw.min(max) } else { max };
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay to sleep before retry `attempt` (0 = the first retry) for
    /// a random `unit` in `[0, 1]` (values outside are clamped, NaN is 0),
    /// so the function is pure and its bounds testable. The result always
    /// lies in `[lower, cap]` with `cap = ceiling(attempt)` and `lower` = 0
    /// for full jitter, `cap / 2` for equal jitter, `cap` with no jitter;
    /// it never exceeds `max_delay`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let cap = self.ceiling(attempt);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => cap.mul_f64(unit),
            Jitter::Equal => {
                let half = cap / 2;
                // `cap - half` rather than `half` so an odd nanosecond count
                // still reaches `cap` at unit = 1.
                half + (cap - half).mul_f64(unit)
            }
        }
        .min(self.max_delay)
    }

    /// The delay before retry `attempt`, with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The reconnect backoff: [`Backoff::new`] and [`Backoff::RECONNECT`].
    mod reconnect {
        use super::*;

        #[test]
        fn ceiling_grows_from_base_and_stops_at_cap() {
            let b = Backoff::RECONNECT;
            assert_eq!(
                b.ceiling(0),
                MS(50),
                "first retry is bounded by base, not cap"
            );
            assert_eq!(b.ceiling(1), MS(100));
            assert_eq!(b.ceiling(2), MS(200));
            assert_eq!(b.ceiling(6), MS(3200));
            assert_eq!(b.ceiling(7), MS(5000), "capped, not 6400 ms");
            assert_eq!(b.ceiling(40), MS(5000), "no overflow on large attempts");
            assert_eq!(b.ceiling(u32::MAX), MS(5000));
        }

        #[test]
        fn full_jitter_spans_zero_to_ceiling() {
            let b = Backoff::RECONNECT;
            assert_eq!(b.delay_with(3, 0.0), Duration::ZERO, "minimum is zero");
            assert_eq!(b.delay_with(3, 1.0), MS(400), "maximum is the ceiling");
            assert_eq!(b.delay_with(3, 0.5), MS(200));
            assert_eq!(
                b.delay_with(20, 0.5),
                MS(2500),
                "jitter applies to the capped value"
            );
        }

        #[test]
        fn out_of_range_units_are_clamped() {
            let b = Backoff::RECONNECT;
            assert_eq!(b.delay_with(0, -3.0), Duration::ZERO);
            assert_eq!(b.delay_with(0, 7.0), MS(50));
            assert_eq!(b.delay_with(0, f64::NAN), Duration::ZERO);
        }

        #[test]
        fn random_delays_stay_within_bounds() {
            let b = Backoff::RECONNECT;
            for attempt in 0..12 {
                for _ in 0..200 {
                    let d = b.delay(attempt);
                    assert!(
                        d <= b.ceiling(attempt),
                        "{d:?} > ceiling at attempt {attempt}"
                    );
                    assert!(d <= b.max_delay);
                }
            }
        }

        #[test]
        fn constructor_orders_base_and_cap() {
            let b = Backoff::new(MS(500), MS(100));
            assert_eq!(b.base, MS(500));
            assert_eq!(
                b.max_delay,
                MS(500),
                "a cap below base is raised, never below base"
            );
            let z = Backoff::new(Duration::ZERO, MS(10));
            assert_eq!(z.base, MS(1));
        }

        #[test]
        fn the_default_is_new_with_50_ms_and_5_s() {
            assert_eq!(
                Backoff::new(MS(50), Duration::from_secs(5)),
                Backoff::RECONNECT
            );
        }
    }

    /// The retry backoff: every jitter kind, any multiplier.
    mod retry {
        use super::*;

        #[test]
        fn the_default_is_the_retry_backoff() {
            let d = Backoff::default();
            assert_eq!(d, Backoff::RETRY);
            assert_eq!(d.base, MS(50));
            assert_eq!(d.multiplier, 2.0);
            assert_eq!(d.max_delay, Duration::from_secs(2));
            assert_eq!(d.jitter, Jitter::Full);
        }

        fn b(base_ms: u64, mult: f64, max_ms: u64, jitter: Jitter) -> Backoff {
            Backoff {
                base: Duration::from_millis(base_ms),
                multiplier: mult,
                max_delay: Duration::from_millis(max_ms),
                jitter,
            }
        }

        #[test]
        fn capped_delay_grows_exponentially_then_saturates() {
            let bo = b(100, 2.0, 1_000, Jitter::None);
            let got: Vec<_> = (0..6).map(|r| bo.ceiling(r)).collect();
            assert_eq!(
                got,
                [MS(100), MS(200), MS(400), MS(800), MS(1_000), MS(1_000)]
            );
        }

        #[test]
        fn capped_delay_never_overflows_on_huge_exponents() {
            let bo = b(100, 10.0, 5_000, Jitter::None);
            assert_eq!(bo.ceiling(u32::MAX), MS(5_000));
            let bo = b(0, f64::MAX, 5_000, Jitter::None);
            // 0 * inf = NaN: must still be bounded, not panic.
            assert!(bo.ceiling(400) <= MS(5_000));
        }

        #[test]
        fn no_jitter_is_exactly_the_cap() {
            let bo = b(100, 2.0, 1_000, Jitter::None);
            for unit in [0.0, 0.3, 1.0] {
                assert_eq!(bo.delay_with(2, unit), MS(400));
            }
        }

        #[test]
        fn full_jitter_spans_zero_to_cap() {
            let bo = b(100, 2.0, 1_000, Jitter::Full);
            assert_eq!(bo.delay_with(2, 0.0), Duration::ZERO, "minimum is zero");
            assert_eq!(bo.delay_with(2, 1.0), MS(400), "maximum is the cap");
            assert_eq!(bo.delay_with(2, 0.5), MS(200));
            // Past saturation the maximum is max_delay, never more.
            assert_eq!(bo.delay_with(10, 1.0), MS(1_000));
        }

        #[test]
        fn equal_jitter_spans_half_cap_to_cap() {
            let bo = b(100, 2.0, 1_000, Jitter::Equal);
            assert_eq!(bo.delay_with(2, 0.0), MS(200), "minimum is half the cap");
            assert_eq!(bo.delay_with(2, 1.0), MS(400), "maximum is the cap");
            assert_eq!(bo.delay_with(2, 0.5), MS(300));
            assert_eq!(bo.delay_with(10, 0.0), MS(500));
            assert_eq!(bo.delay_with(10, 1.0), MS(1_000));
            // Odd nanosecond counts still reach the cap.
            let odd = Backoff {
                base: Duration::from_nanos(3),
                ..bo
            };
            assert_eq!(odd.delay_with(0, 1.0), Duration::from_nanos(3));
        }

        #[test]
        fn out_of_range_units_are_clamped() {
            let bo = b(100, 2.0, 1_000, Jitter::Full);
            assert_eq!(bo.delay_with(0, -3.0), Duration::ZERO);
            assert_eq!(bo.delay_with(0, 7.0), MS(100));
            assert_eq!(bo.delay_with(0, f64::NAN), Duration::ZERO);
        }

        #[test]
        fn every_delay_is_within_bounds_for_a_sweep() {
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
                let bo = b(37, 3.0, 2_500, jitter);
                for retry in 0..12 {
                    let cap = bo.ceiling(retry);
                    let lower = match jitter {
                        Jitter::Full => Duration::ZERO,
                        Jitter::Equal => cap / 2,
                        Jitter::None => cap,
                    };
                    for i in 0..=20 {
                        let d = bo.delay_with(retry, f64::from(i) / 20.0);
                        assert!(d >= lower && d <= cap, "{jitter:?} retry {retry}: {d:?}");
                        assert!(d <= bo.max_delay);
                    }
                }
            }
        }
    }
}
