//! Watch subscriptions: the current snapshots of some circuits, then every
//! later change to them, with a full resync when a watcher falls behind.
//!
//! A snapshot (the first one, and every resync) is taken lazily, one page
//! at a time, as the watcher asks for it ([`Subscription::next_page`]): a
//! watcher that does not read holds a list of the circuits still to send
//! (one pointer each) and never a copy of their state, and a transport can
//! bound every message it sends. Changes made while a snapshot is paged
//! out are queued on the hub and handed out after its last page, so none is
//! lost; a watcher that falls more than the hub's buffer behind is
//! resynchronised instead of buffering without bound.
//!
//! Watching a circuit does not keep it: an idle circuit that nothing else
//! holds is evicted like any other (its state is the default one, so a
//! watcher loses nothing), and it is announced to watchers again when
//! something creates it anew.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::admission::{Admission, AdmitAll, Refused};
use crate::circuit::{Circuit, snapshot_of};
use crate::registry::{Registry, now};
use crate::table::Creator;
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

/// One page of a watch: see [`Subscription::next_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct WatchPage {
    /// A page of a snapshot ([`WatchUpdate::Resync`]) or some changes.
    pub update: WatchUpdate,
    /// False on every page of a snapshot but its last: the snapshot goes on
    /// in the next page. Always true for changes.
    pub last: bool,
}

/// What is left to send of the snapshot being paged out.
#[derive(Debug)]
enum Pending {
    /// Every circuit that existed when the snapshot began, ordered by name.
    All(Vec<Arc<Circuit>>, usize),
    /// The watched names, from this index on.
    Named(usize),
}

/// A live watch. Dropping it ends the watch.
#[derive(Debug)]
pub struct Subscription {
    registry: Weak<Registry>,
    /// `None`: every circuit.
    names: Option<HashSet<Arc<str>>>,
    /// Ordered copy of `names`, for snapshots.
    ordered: Vec<Arc<str>>,
    /// The snapshot being paged out, if any.
    pending: Option<Pending>,
    rx: broadcast::Receiver<Arc<CircuitSnapshot>>,
}

/// Most circuits [`Subscription::next`] puts in one page while it gathers
/// a whole snapshot.
const GATHER_PAGE: usize = 1024;

pub(crate) fn subscribe<A: Admission>(
    registry: &Arc<Registry>,
    names: &[String],
    admission: &A,
) -> Result<Subscription, Refused<A::Refusal>> {
    let mut ordered: Vec<Arc<str>> = names.iter().map(|n| Arc::from(n.as_str())).collect();
    ordered.sort_unstable();
    ordered.dedup();
    let set = (!ordered.is_empty()).then(|| ordered.iter().cloned().collect::<HashSet<_>>());
    let now = now();
    // Paid for all at once, before any is created, so that a refused watch
    // creates nothing. A name created by someone else meanwhile is paid
    // for anyway, and one evicted meanwhile is created again unpaid.
    let missing = ordered
        .iter()
        .filter(|n| registry.lookup(n).is_none())
        .count();
    if missing > 0 {
        admission.admit(missing).map_err(Refused::Admission)?;
    }
    for n in &ordered {
        registry
            .get_or_create_by(n, now, &AdmitAll, Creator::DataPlane)
            .map_err(Refused::into_core)?;
    }
    // Subscribe to the hub before the snapshot is taken: no change can fall
    // between a snapshot and the first change after it, and the creations
    // above are not echoed.
    let mut sub = Subscription {
        registry: Arc::downgrade(registry),
        names: set,
        ordered,
        pending: None,
        rx: registry.hub.subscribe(),
    };
    sub.pending = Some(sub.start_snapshot(registry));
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

    fn start_snapshot(&self, registry: &Registry) -> Pending {
        if self.names.is_some() {
            return Pending::Named(0);
        }
        let mut all: Vec<Arc<Circuit>> = registry
            .circuits
            .iter()
            .map(|e| e.key().0.clone())
            .collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Pending::All(all, 0)
    }

    /// The next page of the snapshot being paged out: at most `max` (at
    /// least 1) circuits, read now.
    fn snapshot_page(&mut self, max: usize) -> Option<WatchPage> {
        let registry = self.registry.upgrade()?;
        let max = max.max(1);
        let now = now();
        let mut page = Vec::new();
        let last = match self.pending.as_mut()? {
            Pending::All(all, pos) => {
                while page.len() < max && *pos < all.len() {
                    let c = &all[*pos];
                    *pos += 1;
                    let inner = c.inner.lock();
                    if !inner.deleted {
                        page.push(Arc::new(snapshot_of(&c.name, &inner, now)));
                    }
                }
                *pos == all.len()
            }
            Pending::Named(pos) => {
                while page.len() < max && *pos < self.ordered.len() {
                    let name = &self.ordered[*pos];
                    *pos += 1;
                    // Absent: evicted or deleted since; announced again
                    // when it is created.
                    if let Some(s) = registry.snapshot(name, now) {
                        page.push(s);
                    }
                }
                *pos == self.ordered.len()
            }
        };
        if last {
            self.pending = None;
        }
        Some(WatchPage {
            update: WatchUpdate::Resync(page),
            last,
        })
    }

    /// The next page: the pages of the first snapshot (at most `max`
    /// circuits each; the last one has [`WatchPage::last`] set), then
    /// changes as they happen (at most [`MAX_CHANGES_PER_UPDATE`] at a
    /// time), and the pages of a fresh snapshot again whenever the watcher
    /// fell behind. `None` once the registry is gone.
    pub async fn next_page(&mut self, max: usize) -> Option<WatchPage> {
        if self.pending.is_some() {
            return self.snapshot_page(max);
        }
        loop {
            let first = match self.rx.recv().await {
                Ok(s) => s,
                Err(RecvError::Lagged(_)) => return self.resync(max),
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
                    Err(TryRecvError::Lagged(_)) => return self.resync(max),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            return Some(WatchPage {
                update: WatchUpdate::Changed(changed),
                last: true,
            });
        }
    }

    /// The next update, a snapshot gathered whole: first the initial
    /// [`WatchUpdate::Resync`], then changes as they happen. `None` once
    /// the registry is gone. A transport that must bound its messages uses
    /// [`next_page`](Self::next_page) instead.
    pub async fn next(&mut self) -> Option<WatchUpdate> {
        let page = self.next_page(GATHER_PAGE).await?;
        let WatchUpdate::Resync(mut all) = page.update else {
            return Some(page.update);
        };
        let mut last = page.last;
        while !last {
            let page = self.snapshot_page(GATHER_PAGE)?;
            last = page.last;
            if let WatchUpdate::Resync(more) = page.update {
                all.extend(more);
            }
        }
        Some(WatchUpdate::Resync(all))
    }

    /// Starts a fresh snapshot after missed events, and returns its first
    /// page.
    fn resync(&mut self, max: usize) -> Option<WatchPage> {
        let registry = self.registry.upgrade()?;
        // Skip what is still queued: the snapshot is newer.
        self.rx = self.rx.resubscribe();
        registry.stats.count_resync();
        self.pending = Some(self.start_snapshot(&registry));
        self.snapshot_page(max)
    }
}
