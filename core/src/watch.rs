//! Watch subscriptions: the current snapshots of some circuits, then every
//! later change to them, with a full resync when a watcher falls behind.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::admission::{Admission, AdmitAll, Refused};
use crate::circuit::snapshot_of;
use crate::registry::{Registry, now};
use crate::types::CircuitSnapshot;

/// Most changes handed out in one [`WatchUpdate::Changed`].
const MAX_CHANGES_PER_UPDATE: usize = 256;

/// One push to a watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    /// The full current state of every watched circuit: the first update of
    /// every subscription, and again after the watcher fell behind and
    /// missed changes. Circuits that no longer exist are absent.
    Resync(Vec<Arc<CircuitSnapshot>>),
    /// Snapshots of circuits that changed, oldest first (a circuit may
    /// appear more than once; the last one is current).
    Changed(Vec<Arc<CircuitSnapshot>>),
}

/// A live watch. Dropping it ends the watch.
#[derive(Debug)]
pub struct Subscription {
    registry: Weak<Registry>,
    /// `None`: every circuit.
    names: Option<HashSet<Arc<str>>>,
    /// Ordered copy of `names`, for resyncs.
    ordered: Vec<Arc<str>>,
    initial: Option<Vec<Arc<CircuitSnapshot>>>,
    rx: broadcast::Receiver<Arc<CircuitSnapshot>>,
}

pub(crate) fn subscribe<A: Admission>(
    registry: &Arc<Registry>,
    names: &[String],
    admission: &A,
) -> Result<Subscription, Refused<A::Refusal>> {
    let mut ordered: Vec<Arc<str>> = names.iter().map(|n| Arc::from(n.as_str())).collect();
    ordered.sort_unstable();
    ordered.dedup();
    let set = (!ordered.is_empty()).then(|| ordered.iter().cloned().collect::<HashSet<_>>());
    // Count as a watcher before the circuits are created, so that the
    // eviction pass cannot take one before the snapshot (dropping `sub` on
    // an error undoes the counts). Create, then subscribe to the hub, then
    // take the snapshots: no change can fall between a snapshot and the
    // first event, and the creations themselves are not echoed.
    for n in &ordered {
        *registry.watched.entry(n.clone()).or_insert(0) += 1;
    }
    let mut sub = Subscription {
        registry: Arc::downgrade(registry),
        names: set,
        ordered,
        initial: None,
        rx: registry.hub.subscribe(),
    };
    let now = now();
    // Paid for all at once, before any is created, so that a refused watch
    // creates nothing. A name created by someone else meanwhile is paid
    // for anyway, and one evicted meanwhile is created again unpaid.
    let missing = sub
        .ordered
        .iter()
        .filter(|n| registry.lookup(n).is_none())
        .count();
    if missing > 0 {
        admission.admit(missing).map_err(Refused::Admission)?;
    }
    for n in &sub.ordered {
        registry
            .get_or_create(n, now, &AdmitAll)
            .map_err(Refused::into_core)?;
    }
    sub.rx = registry.hub.subscribe();
    let initial = if sub.names.is_none() {
        registry.snapshot_all(now)
    } else {
        let mut snaps = Vec::with_capacity(sub.ordered.len());
        for n in &sub.ordered {
            let snapshot = registry.with_created(n, now, &AdmitAll, |c, inner| {
                Ok(Arc::new(snapshot_of(&c.name, inner, now)))
            });
            snaps.push(snapshot.map_err(Refused::into_core)?);
        }
        snaps
    };
    sub.initial = Some(initial);
    Ok(sub)
}

impl Subscription {
    /// The circuits watched, ordered by name (empty: every circuit).
    pub fn circuits(&self) -> &[Arc<str>] {
        &self.ordered
    }

    fn wants(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|set| set.contains(name))
    }

    /// The next update: first the initial [`WatchUpdate::Resync`], then
    /// changes as they happen. `None` once the registry is gone.
    pub async fn next(&mut self) -> Option<WatchUpdate> {
        if let Some(initial) = self.initial.take() {
            return Some(WatchUpdate::Resync(initial));
        }
        loop {
            let first = match self.rx.recv().await {
                Ok(s) => s,
                Err(RecvError::Lagged(_)) => return self.resync(),
                Err(RecvError::Closed) => return None,
            };
            if !self.wants(&first.name) {
                continue;
            }
            let mut changed = vec![first];
            // Hand out whatever else is already queued in the same update.
            while changed.len() < MAX_CHANGES_PER_UPDATE {
                match self.rx.try_recv() {
                    Ok(s) if self.wants(&s.name) => changed.push(s),
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(_)) => return self.resync(),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            return Some(WatchUpdate::Changed(changed));
        }
    }

    /// Fresh snapshots of everything watched, after missed events.
    fn resync(&mut self) -> Option<WatchUpdate> {
        let registry = self.registry.upgrade()?;
        // Skip what is still queued: the snapshots below are newer.
        self.rx = self.rx.resubscribe();
        registry.stats.count_resync();
        let now = now();
        let snaps = if self.names.is_none() {
            registry.snapshot_all(now)
        } else {
            self.ordered
                .iter()
                .filter_map(|n| registry.snapshot(n, now))
                .collect()
        };
        Some(WatchUpdate::Resync(snaps))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        for n in &self.ordered {
            if let dashmap::mapref::entry::Entry::Occupied(mut e) =
                registry.watched.entry(n.clone())
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}
