//! Figures gathered while the suite runs: how long every application call
//! waited for its breaker decision, how the calls were decided, and how the
//! legitimate probe fared, per phase. Pure data; no I/O.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How one application call was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Allowed from the coordinator's state (pushed, or a unary Acquire).
    Coordinated,
    /// Allowed by degraded mode while the coordinator was unreachable.
    Degraded,
    /// Rejected: the circuit is open (or forced open, or probes taken).
    Open,
    /// Rejected: unreachable and failing closed.
    Unavailable,
    /// The coordinator answered with an error (e.g. RESOURCE_EXHAUSTED).
    Refused,
}

/// Decisions of one phase.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// Wait per decision (acquire + report enqueue), microseconds.
    pub wait_us: Histogram<u64>,
    /// Longest single wait, microseconds.
    pub max_wait_us: u64,
    /// Decisions that waited longer than the limit.
    pub over_limit: u64,
    /// Allowed from coordinator state.
    pub coordinated: u64,
    /// Allowed by degraded mode.
    pub degraded: u64,
    /// Rejected as open.
    pub open: u64,
    /// Rejected as unavailable.
    pub unavailable: u64,
    /// Refused by the coordinator.
    pub refused: u64,
    /// Decisions over the limit; at most [`MAX_OVERRUNS`].
    pub overruns: Vec<Overrun>,
    /// Calls allowed by degraded mode: (node, when); at most
    /// [`MAX_OVERRUNS`].
    pub degraded_calls: Vec<(usize, Instant)>,
}

/// One decision that waited longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// When it started.
    pub start: Instant,
    /// How long it waited.
    pub wait: Duration,
    /// Whether it made a unary RPC (rather than deciding from pushed state
    /// or locally).
    pub rpc: bool,
    /// How it was decided.
    pub decided: Decided,
}

/// Overruns kept per phase and node.
pub const MAX_OVERRUNS: usize = 10_000;

impl Default for Decisions {
    fn default() -> Self {
        Self {
            // 1 us .. 10 min at 3 significant digits: recording never fails
            // for a wait this process can observe.
            wait_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds")),
            max_wait_us: 0,
            over_limit: 0,
            coordinated: 0,
            degraded: 0,
            open: 0,
            unavailable: 0,
            refused: 0,
            overruns: Vec::new(),
            degraded_calls: Vec::new(),
        }
    }
}

impl Decisions {
    /// Count one decision that started at `start` and took `wait`; `limit`
    /// is the most a decision may wait.
    #[cfg(test)]
    pub fn record(&mut self, decided: Decided, start: Instant, wait: Duration, limit: Duration) {
        self.record_call(decided, start, wait, limit, false);
    }

    /// [`record`](Self::record), saying whether the call made an RPC.
    pub fn record_call(
        &mut self,
        decided: Decided,
        start: Instant,
        wait: Duration,
        limit: Duration,
        rpc: bool,
    ) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        let _ = self.wait_us.record(us.clamp(1, 600_000_000));
        self.max_wait_us = self.max_wait_us.max(us);
        if wait > limit {
            self.over_limit += 1;
            if self.overruns.len() < MAX_OVERRUNS {
                self.overruns.push(Overrun {
                    start,
                    wait,
                    rpc,
                    decided,
                });
            }
        }
        match decided {
            Decided::Coordinated => self.coordinated += 1,
            Decided::Degraded => self.degraded += 1,
            Decided::Open => self.open += 1,
            Decided::Unavailable => self.unavailable += 1,
            Decided::Refused => self.refused += 1,
        }
    }

    /// Note that node `node` made a call allowed by degraded mode at `at`
    /// (after [`record_call`](Self::record_call) counted it).
    pub fn note_degraded(&mut self, node: usize, at: Instant) {
        if self.degraded_calls.len() < MAX_OVERRUNS {
            self.degraded_calls.push((node, at));
        }
    }

    /// Every decision of this phase.
    pub fn total(&self) -> u64 {
        self.coordinated + self.degraded + self.open + self.unavailable + self.refused
    }

    /// Allowed decisions made from coordinator state, as a share of all
    /// allowed ones (1 when none were allowed).
    pub fn coordinated_share(&self) -> f64 {
        ratio(self.coordinated, self.coordinated + self.degraded)
    }

    /// Wait at quantile `q` (0..=1), microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.wait_us.is_empty() {
            0
        } else {
            self.wait_us.value_at_quantile(q)
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Decisions) {
        let _ = self.wait_us.add(&other.wait_us);
        self.max_wait_us = self.max_wait_us.max(other.max_wait_us);
        self.over_limit += other.over_limit;
        self.coordinated += other.coordinated;
        self.degraded += other.degraded;
        self.open += other.open;
        self.unavailable += other.unavailable;
        self.refused += other.refused;
        self.overruns.extend_from_slice(&other.overruns);
        self.degraded_calls.extend_from_slice(&other.degraded_calls);
    }
}

/// How late the suite's independent timer thread woke: (when, how late).
pub type LagEvent = (Instant, Duration);

/// The legitimate probe of one phase: unary Acquires of an existing circuit
/// with the client deadline, on a connection of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// Answered within the deadline.
    pub ok: u64,
    /// Failed or timed out.
    pub failed: u64,
    /// When each failed probe was sent, its status code, and whether the
    /// suite's own timer ran out first (at most 10 000).
    pub failures: Vec<(Instant, Option<tonic::Code>, bool)>,
    /// Longest wait for an answered probe.
    pub slowest: Duration,
}

impl Probes {
    /// Share answered (1 when none were sent).
    pub fn success_rate(&self) -> f64 {
        ratio(self.ok, self.ok + self.failed)
    }
}

/// `num / den`, or 1 when `den` is 0 (nothing asked, nothing failed).
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_count_waits_and_kinds() {
        let limit = Duration::from_millis(35);
        let t = Instant::now();
        let mut d = Decisions::default();
        d.record(Decided::Coordinated, t, Duration::from_micros(20), limit);
        d.record(Decided::Degraded, t, Duration::from_millis(31), limit);
        d.record(Decided::Open, t, Duration::from_millis(36), limit);
        assert_eq!(
            d.overruns,
            vec![Overrun {
                start: t,
                wait: Duration::from_millis(36),
                rpc: false,
                decided: Decided::Open,
            }]
        );
        assert_eq!(d.total(), 3);
        assert_eq!(d.over_limit, 1);
        assert_eq!(d.max_wait_us, 36_000);
        assert!((d.coordinated_share() - 0.5).abs() < 1e-9);
        let mut all = Decisions::default();
        all.merge(&d);
        all.merge(&d);
        assert_eq!(all.total(), 6);
        assert_eq!(all.over_limit, 2);
        assert_eq!(all.overruns.len(), 2);
        assert_eq!(all.max_wait_us, 36_000);
        assert!(all.quantile_us(1.0) >= 35_900);
    }

    #[test]
    fn empty_rates_are_one() {
        assert_eq!(Probes::default().success_rate(), 1.0);
        assert_eq!(Decisions::default().coordinated_share(), 1.0);
        assert_eq!(Decisions::default().quantile_us(0.99), 0);
        let p = Probes {
            ok: 3,
            failed: 1,
            ..Default::default()
        };
        assert!((p.success_rate() - 0.75).abs() < 1e-9);
    }
}
