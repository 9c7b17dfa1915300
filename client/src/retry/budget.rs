//! A retry budget: a token bucket over a sliding window, as in Finagle and
//! linkerd.
//!
//! Per-call backoff alone does not stop a retry storm: when a dependency
//! degrades, every caller retries and the load multiplies by the number of
//! attempts. A budget bounds the *fleet-visible* extra load instead: every
//! call deposits `ratio` of a token, every retry withdraws a whole one, and a
//! small floor (`min_per_sec`) lets a quiet service still retry. Over any
//! window of `ttl`, retries stay below `ratio * calls + min_per_sec * ttl`.
//!
//! The window is kept in ten buckets on `tokio::time::Instant`, so tests
//! drive it with a paused clock.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Fixed-point scale: one retry costs `SCALE` units, so ratios have a
/// resolution of 1/1000.
const SCALE: i64 = 1_000;
/// Buckets in the sliding window.
const BUCKETS: usize = 10;

/// Why a retry budget could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBudget {
    /// `ratio` must be finite and within `0.0..=10.0`.
    #[error("retry budget ratio must be within 0.0..=10.0, got {0}")]
    Ratio(f64),
    /// `ttl` must be within 1 s..=60 s.
    #[error("retry budget ttl must be within 1s..=60s, got {0:?}")]
    Ttl(Duration),
    /// `min_per_sec` must be at most 1000.
    #[error("retry budget min_per_sec must be at most 1000, got {0}")]
    MinPerSec(u32),
}

/// A shared retry budget. Share one per dependency (wrap in an `Arc`, or use
/// it through a cloned [`RetryPolicy`](super::RetryPolicy)).
#[derive(Debug)]
pub struct RetryBudget {
    ttl: Duration,
    deposit: i64,
    reserve: i64,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// Index (since `start`) of the bucket written last.
    head: u64,
    buckets: [i64; BUCKETS],
}

impl RetryBudget {
    /// The default budget: retries up to 20% of calls, plus 10 per second,
    /// over a 10 s window (linkerd's defaults).
    pub fn default_budget() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10)).unwrap_or_else(|_| unreachable!())
    }

    /// A budget allowing `ratio` retries per call plus `min_per_sec` retries
    /// per second, measured over a sliding window of `ttl`.
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Result<Self, InvalidBudget> {
        if !(0.0..=10.0).contains(&ratio) {
            return Err(InvalidBudget::Ratio(ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(InvalidBudget::Ttl(ttl));
        }
        if min_per_sec > 1_000 {
            return Err(InvalidBudget::MinPerSec(min_per_sec));
        }
        // Both bounded above, so neither product overflows.
        let deposit = (ratio * SCALE as f64).round() as i64;
        let reserve = (f64::from(min_per_sec) * ttl.as_secs_f64() * SCALE as f64).round() as i64;
        Ok(Self {
            ttl,
            deposit,
            reserve,
            window: Mutex::new(Window {
                start: Instant::now(),
                head: 0,
                buckets: [0; BUCKETS],
            }),
        })
    }

    /// Record a call (one per logical operation, not per attempt).
    pub fn deposit(&self) {
        let mut w = self.window.lock();
        let idx = self.roll(&mut w, Instant::now());
        w.buckets[idx] = w.buckets[idx].saturating_add(self.deposit);
    }

    /// Take the budget for one retry. `false` means the budget is spent and
    /// the caller must not retry.
    pub fn try_withdraw(&self) -> bool {
        let mut w = self.window.lock();
        let idx = self.roll(&mut w, Instant::now());
        let balance = self.reserve.saturating_add(w.buckets.iter().sum::<i64>());
        if balance < SCALE {
            return false;
        }
        w.buckets[idx] -= SCALE;
        true
    }

    /// How many retries the budget would allow right now.
    pub fn remaining(&self) -> u64 {
        let mut w = self.window.lock();
        self.roll(&mut w, Instant::now());
        let balance = self.reserve.saturating_add(w.buckets.iter().sum::<i64>());
        u64::try_from(balance / SCALE).unwrap_or(0)
    }

    /// Advance the ring to `now`, clearing buckets that left the window, and
    /// return the index of the current bucket.
    fn roll(&self, w: &mut Window, now: Instant) -> usize {
        let width = self.ttl.as_nanos() / BUCKETS as u128;
        let elapsed = now.saturating_duration_since(w.start).as_nanos();
        let current = u64::try_from(elapsed / width.max(1)).unwrap_or(u64::MAX);
        let stale = current.saturating_sub(w.head).min(BUCKETS as u64);
        for i in 1..=stale {
            w.buckets[((w.head + i) % BUCKETS as u64) as usize] = 0;
        }
        w.head = w.head.max(current);
        (w.head % BUCKETS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_parameters() {
        assert!(matches!(
            RetryBudget::new(-0.1, 0, Duration::from_secs(10)),
            Err(InvalidBudget::Ratio(_))
        ));
        assert!(matches!(
            RetryBudget::new(f64::NAN, 0, Duration::from_secs(10)),
            Err(InvalidBudget::Ratio(_))
        ));
        assert!(matches!(
            RetryBudget::new(0.2, 0, Duration::ZERO),
            Err(InvalidBudget::Ttl(_))
        ));
        assert!(matches!(
            RetryBudget::new(0.2, 5_000, Duration::from_secs(10)),
            Err(InvalidBudget::MinPerSec(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_ratio_of_calls() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10)).unwrap();
        assert!(
            !budget.try_withdraw(),
            "no calls yet, no floor: nothing to spend"
        );
        for _ in 0..100 {
            budget.deposit();
        }
        let allowed = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(allowed, 20, "20% of 100 calls");
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10)).unwrap();
        assert_eq!(budget.remaining(), 10);
        let allowed = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(allowed, 10, "1 per second over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_with_the_window() {
        let budget = RetryBudget::new(0.5, 0, Duration::from_secs(10)).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.remaining(), 5, "still inside the window");
        assert!(budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(6)).await;
        // The deposits (t=0) left the window; the withdrawal (t=5) has not.
        assert_eq!(budget.remaining(), 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..2 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 1, "a fresh window");
    }
}
