//! The batch being filled: outcomes in, one `ReportStream` request out,
//! with the flushes that wait for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::codec::{Batch, Row};
use crate::shared::{Common, Inner, Item};

/// The flushes waiting for one batch.
pub(super) type Waiters = Vec<oneshot::Sender<bool>>;

/// Circuit names by registry index, shared with the batches in flight.
pub(super) type Names = Arc<Vec<Arc<str>>>;

/// The batch being filled: its outcomes, when each one's call completed
/// (same order), and the flushes waiting for it.
#[derive(Default)]
pub(super) struct OpenBatch {
    rows: Vec<Row>,
    completed: Vec<std::time::Instant>,
    waiters: Waiters,
}

impl OpenBatch {
    /// Outcomes in the batch.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Add an item; true when the batch must go out at once.
    pub(super) fn take(&mut self, inner: &Inner, names: &mut Names, item: Item) -> bool {
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
                q.is_urgent()
            }
        }
    }

    /// Send the batch (with its flush waiters). False when the stream is
    /// gone.
    pub(super) async fn send(
        &mut self,
        c: &Common,
        (tx, node_id, names): (&mpsc::Sender<Batch>, &Arc<str>, &Names),
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
        let req = Batch {
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
    pub(super) fn abandon(&mut self, c: &Common) {
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
    use std::time::{Duration, Instant};

    use breakerd_policy::Outcome;

    use super::*;

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
}
