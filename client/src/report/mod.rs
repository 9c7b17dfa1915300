//! The report task: outcomes from the bounded report queue to one
//! `ReportStream`.
//!
//! Permits put outcomes into the bounded queue of the shared state (a full
//! queue drops the outcome and counts it in `dropped_reports`; the caller
//! never blocks). This task sends them in order over one bidirectional
//! stream per coordinator, in batches: on the next tick of a per-client
//! grid of `flush_interval` (10 ms) ticks with a random phase, so at most
//! 10 ms after the first outcome of a batch (`grid.rs`); as soon as a batch
//! is full (512); and at once when an urgent outcome (a failure or a probe
//! outcome, see `Queued::is_urgent`) or a `flush()` arrives, so the fleet
//! trips within one flush of the failure that crosses the threshold and a
//! returned probe lease is free again at once.
//!
//! Each outcome carries the instant its call completed (read by the permit
//! with the latency, so it costs no extra clock read); when its batch is sent
//! it goes out as `age_us`, the time it waited, so the coordinator counts
//! consecutive failures in completion order: a success batched before a
//! run of failures began cannot end that run by arriving after some of them.
//!
//! A batch (`batch.rs`) names its circuits by index into a name table the
//! report task shares with the stream's encoder (`codec.rs`), so an
//! outcome costs no `String` on its way out.
//!
//! While the stream is down, outcomes are dropped (counted in
//! `unsent_reports`): they feed the local breaker of degraded mode instead,
//! and by the time the coordinator is back they would mostly be stale.
//!
//! This file holds the task's loop: connecting, backing off, and moving
//! items from the queue into batches.

mod batch;
mod codec;
mod grid;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::batch::{Names, OpenBatch, Waiters};
use self::codec::Batch;
use self::grid::FlushGrid;
use crate::shared::{Common, Inner, Item};

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
        let (tx, req_rx) = mpsc::channel::<Batch>(8);
        let mut client = c.report_rpc.clone();
        let deadline = c.config.connect_timeout + c.config.rpc_timeout;
        let opened =
            tokio::time::timeout(deadline, codec::report_stream(&mut client, req_rx)).await;
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
                        if open.len() >= c.config.batch_size
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
