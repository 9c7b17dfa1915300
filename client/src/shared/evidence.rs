//! Evidence that the coordinator is gone, from missed RPC deadlines.
//!
//! One slow or timed-out RPC says nothing about the coordinator: a node
//! stalled for 20-50 ms (CPU throttling, a noisy neighbour, a GC pause)
//! misses every deadline that falls inside the stall. So a missed deadline
//! only counts as evidence once several are missed *in a row*: the count
//! goes back to zero on any answer, and a miss of an RPC that started
//! before the previous counted miss happened (it overlapped it, so the same
//! stall explains both) is not counted again. Only when
//! `degrade_after_missed_deadlines` misses (default 3) are counted in a row
//! does the client switch to degraded mode.
//!
//! The other evidence, a broken Watch stream or a failed connection, needs
//! no counting: it switches at once (see `common.rs`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The run of missed deadlines. Times are nanoseconds since the client's
/// clock epoch.
#[derive(Debug, Default)]
pub(crate) struct MissedDeadlines {
    /// Misses counted in a row since the last answer.
    in_a_row: AtomicU32,
    /// When the last counted miss was recorded (0: none since the last
    /// answer).
    last_counted: AtomicU64,
}

impl MissedDeadlines {
    /// The coordinator answered (with anything): the run is over.
    pub(crate) fn answered(&self) {
        self.last_counted.store(0, Ordering::Relaxed);
        self.in_a_row.store(0, Ordering::Relaxed);
    }

    /// An RPC started at `started` missed its deadline, noticed at `now`.
    /// Returns the length of the run, or `None` when this miss overlapped
    /// the last counted one and so is not counted.
    pub(crate) fn missed(&self, started: u64, now: u64) -> Option<u32> {
        let last = self.last_counted.load(Ordering::Relaxed);
        if last != 0 && started < last {
            return None;
        }
        // Two misses racing here may both count; both RPCs then started
        // after the previous counted miss, so neither overlaps it.
        self.last_counted.store(now.max(1), Ordering::Relaxed);
        Some(
            self.in_a_row
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1),
        )
    }

    /// Misses counted in a row so far.
    #[cfg(test)]
    pub(crate) fn in_a_row(&self) -> u32 {
        self.in_a_row.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn sequential_misses_count_and_an_answer_resets_them() {
        let m = MissedDeadlines::default();
        assert_eq!(m.missed(10 * MS, 40 * MS), Some(1));
        assert_eq!(m.missed(41 * MS, 71 * MS), Some(2));
        m.answered();
        assert_eq!(m.in_a_row(), 0);
        assert_eq!(m.missed(80 * MS, 110 * MS), Some(1));
        assert_eq!(m.missed(111 * MS, 141 * MS), Some(2));
        assert_eq!(m.missed(142 * MS, 172 * MS), Some(3));
    }

    #[test]
    fn misses_of_one_stall_count_once() {
        let m = MissedDeadlines::default();
        // Twenty RPCs in flight when the node stalls: all miss, one counts.
        assert_eq!(m.missed(10 * MS, 60 * MS), Some(1));
        for i in 0..19 {
            assert_eq!(m.missed(10 * MS + i, 60 * MS + i), None);
        }
        assert_eq!(m.in_a_row(), 1);
        // An RPC started after that miss was seen counts again.
        assert_eq!(m.missed(61 * MS, 91 * MS), Some(2));
    }
}
