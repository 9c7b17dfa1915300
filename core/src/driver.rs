//! The background driver: one task that applies every circuit's deadlines
//! when they fall due and periodically evicts idle circuits.
//!
//! Operations hand it `(deadline, circuit)` pairs through a channel whenever
//! a circuit's next deadline becomes earlier than what is already
//! scheduled; it keeps them in a min-heap and sleeps until the earliest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::registry::{Registry, TimerEntry, now};

/// Most queued schedule requests taken in one go before timers are checked
/// again, so a flood of requests cannot starve the deadlines.
const MAX_INTAKE: usize = 1024;

pub(crate) async fn run(
    registry: Weak<Registry>,
    mut rx: mpsc::UnboundedReceiver<TimerEntry>,
    evict_every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut heap: BinaryHeap<Reverse<TimerEntry>> = BinaryHeap::new();
    let evict_every = evict_every.max(Duration::from_millis(1));
    let mut evict =
        tokio::time::interval_at(tokio::time::Instant::now() + evict_every, evict_every);
    evict.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        let due = async {
            match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = due => {
                let Some(registry) = registry.upgrade() else { return };
                let now = now();
                let mut names: Vec<Arc<str>> = Vec::new();
                while let Some(Reverse((t, _))) = heap.peek() {
                    if *t > now {
                        break;
                    }
                    if let Some(Reverse((_, name))) = heap.pop() {
                        names.push(name);
                    }
                }
                names.sort_unstable();
                names.dedup();
                for name in &names {
                    registry.fire_deadline(name, now);
                }
                registry.driver_ticks.send_modify(|n| *n += 1);
            }
            msg = rx.recv() => {
                let Some(entry) = msg else { return };
                heap.push(Reverse(entry));
                for _ in 0..MAX_INTAKE {
                    match rx.try_recv() {
                        Ok(entry) => heap.push(Reverse(entry)),
                        Err(_) => break,
                    }
                }
            }
            _ = evict.tick() => {
                let Some(registry) = registry.upgrade() else { return };
                let n = registry.evict_idle();
                if n > 0 {
                    tracing::debug!(evicted = n, circuits = registry.len(), "evicted idle circuits");
                }
            }
        }
    }
}
