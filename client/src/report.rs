//! The report task: outcomes from a bounded queue to one `ReportStream`.
//!
//! Permits put outcomes into a bounded `Queue` (a full queue drops the
//! outcome and counts it in `dropped_reports`; the caller never blocks).
//! This task sends them in order over one bidirectional stream per
//! coordinator, in batches: on the next tick of a per-client grid of
//! `flush_interval` (10 ms) ticks with a random phase, so at most 10 ms
//! after the first outcome of a batch (see `FlushGrid`); as soon as a batch
//! is full (512); and at once when a failure, a probe outcome or a `flush()`
//! arrives, so the fleet trips within one flush of the failure that crosses
//! the threshold and a returned probe lease is free again at once.
//!
//! Each outcome carries the instant its call completed (read by the permit
//! with the latency, so it costs no extra clock read); when its batch is sent
//! it goes out as `age_us`, the time it waited, so the coordinator counts
//! consecutive failures in completion order: a success batched before a
//! run of failures began cannot end that run by arriving after some of them.
//!
//! A batch names its circuits by index into a name table the report task
//! shares with the stream's encoder (see `wire.rs`), so an
//! outcome costs no `String` on its way out.
//!
//! While the stream is down, outcomes are dropped (counted in
//! `unsent_reports`): they feed the local breaker of degraded mode instead,
//! and by the time the coordinator is back they would mostly be stale.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use breakerd_policy::Outcome;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::coordinator::{Common, Inner};
use crate::wire::{self, Row};

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

/// What the queue carries.
pub(crate) enum Item {
    Report(Queued),
    /// Answer `true` once everything queued before has been acknowledged.
    Flush(oneshot::Sender<bool>),
}

type Waiters = Vec<oneshot::Sender<bool>>;

/// Circuit names by registry index, shared with the batches in flight.
type Names = Arc<Vec<Arc<str>>>;

/// Drop what is queued (the stream is down) and answer flushes with false.
fn discard(c: &Common, item: Item) {
    match item {
        Item::Report(_) => {
            c.stats.unsent_reports.fetch_add(1, Ordering::Relaxed);
        }
        Item::Flush(tx) => {
            let _ = tx.send(false);
        }
    }
}

/// Closes the queue when the task ends (aborted with its coordinator), so
/// flushes waiting on it answer false instead of hanging.
struct CloseOnDrop(Arc<Common>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.reports.close();
    }
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let c = Arc::clone(&inner.common);
    let _close = CloseOnDrop(Arc::clone(&c));
    let mut names: Names = Arc::default();
    let node_id: Arc<str> = Arc::from(c.node_name.as_str());
    let mut attempt: u32 = 0;
    let grid = FlushGrid::new(Instant::now(), c.config.flush_interval);
    // Items taken from the queue, in order, not handled yet. What a lost
    // stream left here goes out first on the next one.
    let mut inbox: Vec<Item> = Vec::new();
    loop {
        // Connect only once there is something to send.
        if inbox.is_empty() {
            c.reports.next(&mut inbox).await;
        }
        let (tx, req_rx) = mpsc::channel::<wire::Batch>(8);
        let mut client = c.report_rpc.clone();
        let deadline = c.config.connect_timeout + c.config.rpc_timeout;
        let opened = tokio::time::timeout(deadline, wire::report_stream(&mut client, req_rx)).await;
        let mut responses = match opened {
            Ok(Ok(r)) => r.into_inner(),
            _ => {
                for item in inbox.drain(..) {
                    discard(&c, item);
                }
                let d = c.config.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                // Keep draining while backing off: nothing may pile up
                // behind a dead stream.
                let until = Instant::now() + d;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        () = c.reports.next(&mut inbox) => {
                            for item in inbox.drain(..) {
                                discard(&c, item);
                            }
                        }
                    }
                }
                continue;
            }
        };
        attempt = 0;
        // Waiters of each batch in flight, in send order; the coordinator
        // answers batches in order.
        let pending: Arc<Mutex<VecDeque<Waiters>>> = Arc::default();
        let reader = {
            let pending = Arc::clone(&pending);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                while let Ok(Some(r)) = responses.message().await {
                    c.stats
                        .applied_reports
                        .fetch_add(u64::from(r.applied), Ordering::Relaxed);
                    c.stats
                        .stale_reports
                        .fetch_add(u64::from(r.stale), Ordering::Relaxed);
                    if let Some(ws) = pending.lock().pop_front() {
                        for w in ws {
                            let _ = w.send(true);
                        }
                    }
                }
                for ws in pending.lock().drain(..) {
                    for w in ws {
                        let _ = w.send(false);
                    }
                }
            })
        };
        let mut reader = reader;
        let mut open = OpenBatch::default();
        // Ends only when the stream is lost.
        'stream: loop {
            // Idle: wait for the first outcome of a batch. This is the only
            // wake-up a success costs; while a batch is open, successes are
            // queued without waking anyone, and failures and probe outcomes
            // wake the task through `urgent`.
            if inbox.is_empty() {
                tokio::select! {
                    biased;
                    _ = &mut reader => break 'stream,
                    () = c.reports.next(&mut inbox) => {}
                }
            }
            let mut urgent = false;
            let flush_at = grid.next_after(Instant::now());
            loop {
                // Handle what was taken, then what came meanwhile, until the
                // queue is empty.
                loop {
                    let mut chunk = std::mem::take(&mut inbox);
                    let mut items = chunk.drain(..);
                    while let Some(item) = items.next() {
                        urgent |= open.take(&inner, &mut names, item);
                        if open.rows.len() >= c.config.batch_size
                            && !open.send(&c, (&tx, &node_id, &names), &pending).await
                        {
                            inbox.extend(items);
                            break 'stream;
                        }
                    }
                    drop(items);
                    // Both buffers keep their capacity: no allocation per
                    // batch once they have grown.
                    inbox = chunk;
                    if !c.reports.take_now(&mut inbox) {
                        break;
                    }
                }
                if urgent || Instant::now() >= flush_at {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = &mut reader => break 'stream,
                    () = c.urgent.notified() => urgent = true,
                    () = tokio::time::sleep_until(flush_at) => {}
                }
            }
            if !open.send(&c, (&tx, &node_id, &names), &pending).await {
                break;
            }
        }
        drop(tx);
        reader.abort();
        open.abandon(&c);
        for ws in pending.lock().drain(..) {
            for w in ws {
                let _ = w.send(false);
            }
        }
        tracing::debug!("report stream lost; reconnecting");
    }
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
    fn take_now(&self, into: &mut Vec<Item>) -> bool {
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
    async fn next(&self, into: &mut Vec<Item>) {
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
    fn close(&self) {
        let items = {
            let mut s = self.state.lock();
            s.closed = true;
            std::mem::take(&mut s.items)
        };
        drop(items);
    }
}

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
struct FlushGrid {
    origin: Instant,
    interval: std::time::Duration,
}

impl FlushGrid {
    fn new(now: Instant, interval: std::time::Duration) -> Self {
        let phase = interval.mul_f64(rand::random::<f64>());
        Self {
            origin: now + phase,
            interval,
        }
    }

    /// The first tick after `now` (at most `interval` later).
    fn next_after(&self, now: Instant) -> Instant {
        let Some(since) = now.checked_duration_since(self.origin) else {
            return self.origin;
        };
        let step = self.interval.as_nanos().max(1);
        let ticks = since.as_nanos() / step + 1;
        let offset = u64::try_from(ticks * step).unwrap_or(u64::MAX);
        self.origin
            .checked_add(std::time::Duration::from_nanos(offset))
            .unwrap_or(now + self.interval)
    }
}

/// The batch being filled: its outcomes, when each one's call completed
/// (same order), and the flushes waiting for it.
#[derive(Default)]
struct OpenBatch {
    rows: Vec<Row>,
    completed: Vec<std::time::Instant>,
    waiters: Waiters,
}

impl OpenBatch {
    /// Add an item; true when the batch must go out at once.
    fn take(&mut self, inner: &Inner, names: &mut Names, item: Item) -> bool {
        match item {
            Item::Flush(w) => {
                self.waiters.push(w);
                true
            }
            Item::Report(q) => {
                let idx = q.idx as usize;
                if names.len() <= idx {
                    // A circuit first used since the last batch. Batches in
                    // flight keep the old table; this copies it at most once
                    // per new circuit.
                    let table = Arc::make_mut(names);
                    while table.len() <= idx {
                        match inner.circuit_at(table.len() as u32) {
                            Some(s) => table.push(Arc::clone(&s.name)),
                            None => return false,
                        }
                    }
                }
                self.rows.push(Row {
                    idx: q.idx,
                    generation: q.generation,
                    lease: q.lease,
                    outcome: q.outcome,
                    latency_us: q.latency_us,
                    // Filled in when the batch is sent.
                    age_us: 0,
                });
                self.completed.push(q.completed);
                q.outcome == Outcome::Failure || q.lease != 0
            }
        }
    }

    /// Send the batch (with its flush waiters). False when the stream is
    /// gone.
    async fn send(
        &mut self,
        c: &Common,
        (tx, node_id, names): (&mpsc::Sender<wire::Batch>, &Arc<str>, &Names),
        pending: &Mutex<VecDeque<Waiters>>,
    ) -> bool {
        if self.rows.is_empty() {
            if self.waiters.is_empty() {
                return true;
            }
            // Nothing new to send: the flush completes with the last batch in
            // flight, or at once when none is.
            let mut p = pending.lock();
            match p.back_mut() {
                Some(last) => last.append(&mut self.waiters),
                None => {
                    for w in self.waiters.drain(..) {
                        let _ = w.send(true);
                    }
                }
            }
            return true;
        }
        let n = self.rows.len() as u64;
        stamp_ages(&mut self.rows, &self.completed, std::time::Instant::now());
        self.completed.clear();
        // The batch leaves with the request; the next one is probably about as
        // large. (A full-size Vec per batch was a 40 KB allocation every flush.)
        let next = Vec::with_capacity(self.rows.len());
        let rows = std::mem::replace(&mut self.rows, next);
        pending.lock().push_back(std::mem::take(&mut self.waiters));
        let req = wire::Batch {
            node_id: Arc::clone(node_id),
            names: Arc::clone(names),
            rows,
        };
        if tx.send(req).await.is_err() {
            c.stats.unsent_reports.fetch_add(n, Ordering::Relaxed);
            return false;
        }
        c.stats.sent_reports.fetch_add(n, Ordering::Relaxed);
        c.stats.sent_batches.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The stream is gone: count what was not sent and answer its flushes.
    fn abandon(&mut self, c: &Common) {
        c.stats
            .unsent_reports
            .fetch_add(self.rows.len() as u64, Ordering::Relaxed);
        self.rows.clear();
        self.completed.clear();
        for w in self.waiters.drain(..) {
            let _ = w.send(false);
        }
    }
}

/// Stamp each outcome with the time from its completion to `sent`.
fn stamp_ages(batch: &mut [Row], completed: &[std::time::Instant], sent: std::time::Instant) {
    for (o, &done) in batch.iter_mut().zip(completed) {
        let age = sent.saturating_duration_since(done);
        o.age_us = u64::try_from(age.as_micros()).unwrap_or(u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

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
    fn ages_are_the_wait_from_completion_to_send() {
        let sent = Instant::now() + Duration::from_secs(1);
        let completed = [
            sent - Duration::from_micros(9_750),
            sent,
            // A completion read after the send instant is just now.
            sent + Duration::from_millis(1),
        ];
        let row = Row {
            idx: 0,
            generation: 1,
            lease: 0,
            outcome: Outcome::Success,
            latency_us: 0,
            age_us: 0,
        };
        let mut batch = vec![row; 3];
        stamp_ages(&mut batch, &completed, sent);
        let ages: Vec<u64> = batch.iter().map(|o| o.age_us).collect();
        assert_eq!(ages, [9_750, 0, 0]);
    }

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
