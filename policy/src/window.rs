//! Sliding windows for the rate-based rules: the last N calls, or the last
//! T milliseconds kept in buckets. Memory is fixed when the window is built
//! (one byte per call, or one bucket per slice of time), so a circuit's
//! footprint does not grow with traffic.

use std::time::{Duration, Instant};

use crate::policy::{Policy, WindowKind};

/// Totals of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

impl Totals {
    fn add(&mut self, failure: bool, slow: bool, sign: i64) {
        let apply = |v: &mut u64, on: bool| {
            if on {
                *v = v.saturating_add_signed(sign);
            }
        };
        apply(&mut self.calls, true);
        apply(&mut self.failures, failure);
        apply(&mut self.slow, slow);
    }
}

const FAILURE: u8 = 1;
const SLOW: u8 = 2;

/// A window over the last `size` calls.
#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    len: usize,
    totals: Totals,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        Self {
            ring: vec![0; size.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Totals::default(),
        }
    }

    fn push(&mut self, failure: bool, slow: bool) {
        if self.len == self.ring.len() {
            let old = self.ring[self.next];
            self.totals.add(old & FAILURE != 0, old & SLOW != 0, -1);
        } else {
            self.len += 1;
        }
        self.ring[self.next] = (u8::from(failure) * FAILURE) | (u8::from(slow) * SLOW);
        self.totals.add(failure, slow, 1);
        self.next = (self.next + 1) % self.ring.len();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    totals: Totals,
}

/// A window over the last `span` of time, in `buckets` equal slices. A call
/// is forgotten when its whole bucket has left the window.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    origin: Instant,
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    fn new(span: Duration, buckets: u32, origin: Instant) -> Self {
        let n = buckets.max(1);
        let bucket_nanos = (span.as_nanos() / u128::from(n)).max(1);
        Self {
            origin,
            bucket_nanos: u64::try_from(bucket_nanos).unwrap_or(u64::MAX),
            // Epoch u64::MAX marks an unused bucket.
            buckets: vec![
                Bucket {
                    epoch: u64::MAX,
                    totals: Totals::default()
                };
                n as usize
            ]
            .into_boxed_slice(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX - 1)
    }

    fn push(&mut self, now: Instant, failure: bool, slow: bool) {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(epoch % n) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                totals: Totals::default(),
            };
        }
        bucket.totals.add(failure, slow, 1);
    }

    fn totals(&self, now: Instant) -> Totals {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let oldest = epoch.saturating_sub(n - 1);
        let mut t = Totals::default();
        for b in self
            .buckets
            .iter()
            .filter(|b| (oldest..=epoch).contains(&b.epoch))
        {
            t.calls += b.totals.calls;
            t.failures += b.totals.failures;
            t.slow += b.totals.slow;
        }
        t
    }
}

/// The window a policy asks for.
#[derive(Debug, Clone)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// The window `policy` asks for, or `None` when no rate rule is on.
    pub fn for_policy(policy: &Policy, now: Instant) -> Option<Self> {
        if !policy.uses_window() {
            return None;
        }
        Some(match policy.window_kind {
            WindowKind::Count => Window::Count(CountWindow::new(
                usize::try_from(policy.window_size).unwrap_or(1),
            )),
            WindowKind::Time => Window::Time(TimeWindow::new(
                Duration::from_millis(policy.window_size),
                policy.window_buckets,
                now,
            )),
        })
    }

    pub fn push(&mut self, now: Instant, failure: bool, slow: bool) {
        match self {
            Window::Count(w) => w.push(failure, slow),
            Window::Time(w) => w.push(now, failure, slow),
        }
    }

    pub fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count(w) => w.totals,
            Window::Time(w) => w.totals(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let mut w = CountWindow::new(3);
        w.push(true, false);
        w.push(false, true);
        w.push(false, false);
        assert_eq!(
            w.totals,
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.push(false, false);
        assert_eq!(
            w.totals,
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.push(true, true);
        assert_eq!(
            w.totals,
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn time_window_forgets_whole_buckets() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = TimeWindow::new(ms(1000), 10, t0);
        w.push(t0, true, false);
        w.push(t0 + ms(150), false, false);
        assert_eq!(w.totals(t0 + ms(950)).calls, 2);
        // The first bucket [0,100) leaves the window at 1000 ms.
        assert_eq!(
            w.totals(t0 + ms(1000)),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.totals(t0 + ms(1100)).calls, 0);
        // The slot of the first bucket is reused empty: its old failure is gone.
        w.push(t0 + ms(1010), true, false);
        assert_eq!(
            w.totals(t0 + ms(1010)),
            Totals {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
    }
}
