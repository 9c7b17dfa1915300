//! The bounded queue from permits to the report task, and what it carries.
//!
//! It sits with the shared state rather than in the report task because a
//! permit pushes into it through the common handle: the task only drains
//! it. Whether an outcome must go out at once (`Queued::is_urgent`) is
//! decided here, once, for both sides.

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use breakerd_policy::Outcome;

/// One outcome waiting to be sent: the circuit by registry index, so that
/// queueing it copies 48 bytes and allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued {
    pub(crate) idx: u32,
    pub(crate) generation: u64,
    pub(crate) lease: u64,
    pub(crate) outcome: Outcome,
    pub(crate) latency_us: u64,
    /// When the call completed (the permit's clock: std, never paused).
    pub(crate) completed: std::time::Instant,
}

impl Queued {
    /// Failures and probe outcomes are sent at once rather than on the
    /// next flush tick, so the fleet trips within one flush of the failure
    /// that crosses the threshold and a returned probe lease is free again
    /// at once.
    #[inline]
    pub(crate) fn is_urgent(&self) -> bool {
        self.outcome == Outcome::Failure || self.lease != 0
    }
}

/// What the queue carries.
pub(crate) enum Item {
    /// An outcome to send.
    Report(Queued),
    /// Answer `true` once everything queued before has been acknowledged.
    Flush(oneshot::Sender<bool>),
}

/// The bounded queue from permits to the report task.
///
/// A lock around a `Vec` the task swaps for an empty one: an outcome costs
/// an uncontended lock and a push (a tokio mpsc cost several times that in
/// block bookkeeping and semaphore permits, per outcome). The task is woken
/// for the first item after it went idle; urgent outcomes wake it through
/// `Common::urgent`.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the idle task (see `QueueState::idle`).
    first: Notify,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    items: Vec<Item>,
    /// The task found the queue empty and waits on `first`: the next push
    /// must wake it.
    idle: bool,
    /// The task is gone: refuse everything.
    closed: bool,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            first: Notify::new(),
            capacity,
        }
    }

    /// Queue an outcome; false (and nothing queued) when the queue is full
    /// or closed. Never blocks beyond a short lock.
    pub(crate) fn push_report(&self, q: Queued) -> bool {
        self.push(Item::Report(q), true)
    }

    /// Queue a flush request behind everything queued so far (a request is
    /// queued even when the queue is full: its caller waits for the
    /// answer); false when closed.
    pub(crate) fn push_flush(&self, tx: oneshot::Sender<bool>) -> bool {
        self.push(Item::Flush(tx), false)
    }

    /// Queue `item` (refused when closed, or full and `bounded`), waking
    /// the task if it was idle.
    fn push(&self, item: Item, bounded: bool) -> bool {
        let wake = {
            let mut s = self.state.lock();
            if s.closed || (bounded && s.items.len() >= self.capacity) {
                return false;
            }
            s.items.push(item);
            std::mem::take(&mut s.idle)
        };
        if wake {
            self.first.notify_one();
        }
        true
    }

    /// Move everything queued into the empty `into`; false when nothing was.
    pub(crate) fn take_now(&self, into: &mut Vec<Item>) -> bool {
        debug_assert!(into.is_empty());
        let mut s = self.state.lock();
        if s.items.is_empty() {
            return false;
        }
        std::mem::swap(&mut s.items, into);
        true
    }

    /// Wait until something is queued, then move it all into the empty
    /// `into`. Cancel-safe: nothing is taken unless it completes.
    pub(crate) async fn next(&self, into: &mut Vec<Item>) {
        loop {
            {
                let mut s = self.state.lock();
                if !s.items.is_empty() {
                    s.idle = false;
                    std::mem::swap(&mut s.items, into);
                    return;
                }
                s.idle = true;
            }
            // A push between the unlock and here stores a permit in
            // `first`, so this returns at once: no wake-up is lost.
            self.first.notified().await;
        }
    }

    /// Refuse everything from now on and drop what is queued (flush
    /// waiters then see false).
    pub(crate) fn close(&self) {
        let items = {
            let mut s = self.state.lock();
            s.closed = true;
            std::mem::take(&mut s.items)
        };
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Instant;

    use super::*;

    fn queued(generation: u64) -> Queued {
        Queued {
            idx: 0,
            generation,
            lease: 0,
            outcome: Outcome::Success,
            latency_us: 1,
            completed: Instant::now(),
        }
    }

    fn generations(items: &[Item]) -> Vec<Option<u64>> {
        items
            .iter()
            .map(|i| match i {
                Item::Report(q) => Some(q.generation),
                Item::Flush(_) => None,
            })
            .collect()
    }

    /// A waker that records whether it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_full_queue_refuses_outcomes_but_queues_flushes_in_order() {
        let q = Queue::new(2);
        assert!(q.push_report(queued(1)));
        assert!(q.push_report(queued(2)));
        assert!(!q.push_report(queued(3)), "beyond capacity");
        let (tx, _rx) = oneshot::channel();
        assert!(q.push_flush(tx), "a flush waits for no room");
        let mut into = Vec::new();
        assert!(q.take_now(&mut into));
        assert_eq!(generations(&into), [Some(1), Some(2), None]);
        // Taking frees the room.
        assert!(q.push_report(queued(4)));
        let mut rest = Vec::new();
        assert!(q.take_now(&mut rest));
        assert_eq!(generations(&rest), [Some(4)]);
        assert!(!q.take_now(&mut Vec::new()), "empty");
    }

    #[test]
    fn a_closed_queue_refuses_everything_and_fails_waiting_flushes() {
        let q = Queue::new(8);
        let (tx, mut rx) = oneshot::channel();
        assert!(q.push_flush(tx));
        q.close();
        assert!(
            rx.try_recv().is_err(),
            "the waiter is told (sender dropped)"
        );
        assert!(!q.push_report(queued(1)));
        let (tx, _rx) = oneshot::channel();
        assert!(!q.push_flush(tx));
    }

    #[test]
    fn the_idle_task_is_woken_by_the_first_push_only() {
        let q = Queue::new(8);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut into = Vec::new();
        {
            let mut next = pin!(q.next(&mut into));
            assert!(next.as_mut().poll(&mut cx).is_pending(), "nothing queued");
            assert!(!flag.0.load(Ordering::SeqCst));
            assert!(q.push_report(queued(1)));
            assert!(flag.0.load(Ordering::SeqCst), "first push wakes");
            assert!(next.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(generations(&into), [Some(1)]);
        // Busy (not idle): pushes do not wake anyone.
        assert!(q.push_report(queued(2)));
        assert!(!q.state.lock().idle);
        into.clear();
        let mut next = pin!(q.next(&mut into));
        assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn failures_and_probe_outcomes_are_urgent() {
        let q = |outcome, lease| Queued {
            outcome,
            lease,
            ..queued(1)
        };
        assert!(!q(Outcome::Success, 0).is_urgent());
        assert!(!q(Outcome::Ignored, 0).is_urgent());
        assert!(q(Outcome::Failure, 0).is_urgent());
        assert!(q(Outcome::Success, 7).is_urgent(), "a probe's outcome");
        assert!(q(Outcome::Ignored, 7).is_urgent(), "a returned probe lease");
    }
}
