//! Reconnect delays: exponential backoff with full jitter.
//!
//! The n-th retry (0-based) waits a uniformly random time in
//! `[0, min(cap, base * 2^n)]` ("full jitter"), so a fleet that lost its
//! coordinator at the same instant does not reconnect in lock-step. The
//! arithmetic is a pure function of the attempt and a random unit so that
//! its bounds are unit-tested.

use std::time::Duration;

/// Exponential backoff with full jitter between `base` and `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff growing from `base` and never exceeding `cap`. A `cap`
    /// below `base` is raised to `base`; a zero `base` becomes 1 ms.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self {
            base,
            cap: cap.max(base),
        }
    }

    /// The first delay bound.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The upper bound of the delay before retry `attempt` (0-based):
    /// `min(cap, base * 2^attempt)`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^31 * base already exceeds any sensible cap; clamp the shift so
        // the multiplication cannot overflow.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before retry `attempt` for a random `unit` in `[0, 1)`:
    /// `ceiling(attempt) * unit` (full jitter). Out-of-range units are
    /// clamped, so the result always lies in `[0, ceiling(attempt)]`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.ceiling(attempt).mul_f64(unit)
    }

    /// The delay before retry `attempt`, with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

impl Default for Backoff {
    /// 50 ms base, 5 s cap.
    fn default() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceiling_grows_from_base_and_stops_at_cap() {
        let b = Backoff::default();
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
        let b = Backoff::default();
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
        let b = Backoff::default();
        assert_eq!(b.delay_with(0, -3.0), Duration::ZERO);
        assert_eq!(b.delay_with(0, 7.0), MS(50));
        assert_eq!(b.delay_with(0, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn random_delays_stay_within_bounds() {
        let b = Backoff::default();
        for attempt in 0..12 {
            for _ in 0..200 {
                let d = b.delay(attempt);
                assert!(
                    d <= b.ceiling(attempt),
                    "{d:?} > ceiling at attempt {attempt}"
                );
                assert!(d <= b.cap());
            }
        }
    }

    #[test]
    fn constructor_orders_base_and_cap() {
        let b = Backoff::new(MS(500), MS(100));
        assert_eq!(b.base(), MS(500));
        assert_eq!(
            b.cap(),
            MS(500),
            "a cap below base is raised, never below base"
        );
        let z = Backoff::new(Duration::ZERO, MS(10));
        assert_eq!(z.base(), MS(1));
    }
}
