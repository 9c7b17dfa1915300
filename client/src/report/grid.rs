//! The flush grid: when the report task sends an open batch that is
//! neither full nor urgent.

use std::time::Duration;

use tokio::time::Instant;

/// When open batches go out: on ticks `interval` apart, offset by a random
/// phase per client.
///
/// A batch timed from its first outcome would keep nodes that started
/// together (the workers of one host, a simulated fleet) flushing in
/// lockstep for ever, since each opens its next batch right after the last
/// flush: their reports would reach the coordinator in bursts, and on a
/// shared core their flushes would stall the application's calls together.
/// A random phase spreads them out; an open batch still waits at most
/// `interval`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlushGrid {
    origin: Instant,
    interval: Duration,
}

impl FlushGrid {
    pub(super) fn new(now: Instant, interval: Duration) -> Self {
        let phase = interval.mul_f64(rand::random::<f64>());
        Self {
            origin: now + phase,
            interval,
        }
    }

    /// The first tick after `now` (at most `interval` later).
    pub(super) fn next_after(&self, now: Instant) -> Instant {
        let Some(since) = now.checked_duration_since(self.origin) else {
            return self.origin;
        };
        let step = self.interval.as_nanos().max(1);
        let ticks = since.as_nanos() / step + 1;
        let offset = u64::try_from(ticks * step).unwrap_or(u64::MAX);
        self.origin
            .checked_add(Duration::from_nanos(offset))
            .unwrap_or(now + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_fall_on_the_clients_grid_within_one_interval() {
        let interval = Duration::from_millis(10);
        let start = tokio::time::Instant::now();
        for _ in 0..50 {
            let grid = FlushGrid::new(start, interval);
            assert!(grid.origin >= start && grid.origin < start + interval);
            // Before the first tick: the first tick.
            assert_eq!(grid.next_after(start), grid.origin);
            for step_us in [0u64, 1, 2_500, 9_999, 10_000, 10_001, 123_456] {
                let now = grid.origin + Duration::from_micros(step_us);
                let at = grid.next_after(now);
                assert!(
                    at > now && at <= now + interval,
                    "{step_us}: {:?}",
                    at - now
                );
                let off = (at - grid.origin).as_nanos();
                assert_eq!(off % interval.as_nanos(), 0, "{step_us}: off the grid");
            }
        }
        // Clients started together get different phases.
        let phases: std::collections::HashSet<_> = (0..20)
            .map(|_| FlushGrid::new(start, interval).origin)
            .collect();
        assert!(phases.len() > 1);
    }
}
