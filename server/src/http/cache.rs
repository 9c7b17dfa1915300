//! One shared, sorted copy of every circuit with its counters, taken at
//! most once per interval (`[http] list_cache_ms`): the list pages and the
//! `/events` snapshots are cut from it, so that readers, however many,
//! cost no scan of the registry each (issue 11: eight `GET /api/circuits`
//! loops at 100k circuits pushed gRPC Acquire p50 from 0.39 ms to 111 ms).
//!
//! A copy is taken on the blocking pool, one at a time (readers arriving
//! meanwhile wait for it instead of taking their own). Pages are found by
//! binary search: a name prefix is a contiguous run of the sorted rows, and
//! a per-state index keeps `state=` just as cheap.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use breakerd_core::{CircuitSnapshot, Registry};
use breakerd_policy::{Counters, State};
use tokio::time::Instant;

/// One circuit as the copy holds it.
#[derive(Debug)]
pub struct Row {
    pub snapshot: CircuitSnapshot,
    pub counters: Counters,
    /// The snapshot's `/events` JSON, made once for every stream (by
    /// `sse.rs`, for a row whose JSON does not change with time).
    pub text: OnceLock<Box<str>>,
    /// The same with its counters, as the list shows it (by `api.rs`).
    pub list_text: OnceLock<Box<str>>,
}

/// A copy of every circuit, ordered by name.
#[derive(Debug)]
pub struct Taken {
    rows: Vec<Row>,
    /// Indices into `rows` of the closed, open and half-open circuits.
    by_state: [Vec<u32>; 3],
    /// When the scan started: every change before it is in the copy.
    pub started: Instant,
}

fn state_slot(s: State) -> usize {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

/// What a page is asked for.
#[derive(Debug, Default)]
pub struct PageQuery<'a> {
    pub prefix: &'a str,
    pub state: Option<State>,
    /// Names after this one (empty: from the first).
    pub after: &'a str,
    pub limit: usize,
}

/// A page cut from a [`Taken`].
#[derive(Debug)]
pub struct PageOut<'a> {
    pub rows: Vec<&'a Row>,
    /// Name of the page's last row when more follow.
    pub next: Option<&'a str>,
    pub total_matching: usize,
}

impl Taken {
    fn new(rows: Vec<(CircuitSnapshot, Counters)>, started: Instant) -> Self {
        let mut by_state: [Vec<u32>; 3] = Default::default();
        let rows: Vec<Row> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (snapshot, counters))| {
                // At most `max_circuits` rows, far below u32::MAX.
                by_state[state_slot(snapshot.state)].push(i as u32);
                Row {
                    snapshot,
                    counters,
                    text: OnceLock::new(),
                    list_text: OnceLock::new(),
                }
            })
            .collect();
        Self {
            rows,
            by_state,
            started,
        }
    }

    /// How many circuits the copy holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// How old the copy is.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// `row`'s snapshot as of now: the copy's remaining times less its age.
    pub fn current(&self, row: &Row) -> CircuitSnapshot {
        let age = self.age();
        let mut s = row.snapshot.clone();
        s.open_remaining = s.open_remaining.saturating_sub(age);
        if let Some(o) = &mut s.override_ {
            o.expires_in = o.expires_in.map(|e| e.saturating_sub(age));
        }
        s
    }

    /// Whether `row`'s JSON is the same at any age (no remaining time in it).
    pub fn timeless(row: &Row) -> bool {
        row.snapshot.open_remaining.is_zero()
            && row
                .snapshot
                .override_
                .as_ref()
                .is_none_or(|o| o.expires_in.is_none())
    }

    /// The page `q` asks for, in O(log n + limit).
    pub fn page(&self, q: &PageQuery<'_>) -> PageOut<'_> {
        let name_at = |i: usize| -> &str {
            match q.state {
                None => &self.rows[i].snapshot.name,
                Some(s) => {
                    &self.rows[self.by_state[state_slot(s)][i] as usize]
                        .snapshot
                        .name
                }
            }
        };
        let len = match q.state {
            None => self.rows.len(),
            Some(s) => self.by_state[state_slot(s)].len(),
        };
        let lo = partition(len, |i| name_at(i) < q.prefix);
        let hi = lo + partition(len - lo, |i| name_at(lo + i).starts_with(q.prefix));
        let start = if q.after.is_empty() {
            lo
        } else {
            lo + partition(hi - lo, |i| name_at(lo + i) <= q.after)
        };
        let end = start.saturating_add(q.limit).min(hi);
        let row_at = |i: usize| -> &Row {
            match q.state {
                None => &self.rows[i],
                Some(s) => &self.rows[self.by_state[state_slot(s)][i] as usize],
            }
        };
        let rows: Vec<&Row> = (start..end).map(row_at).collect();
        let next = (end < hi && end > start).then(|| name_at(end - 1));
        PageOut {
            rows,
            next,
            total_matching: hi - lo,
        }
    }

    /// Up to `limit` rows after `after` (every state, no prefix), for the
    /// event stream's snapshot pages.
    pub fn after(&self, after: Option<&str>, limit: usize) -> &[Row] {
        let start = after.map_or(0, |a| self.rows.partition_point(|r| &*r.snapshot.name <= a));
        &self.rows[start..start.saturating_add(limit).min(self.rows.len())]
    }
}

/// The first index in `0..len` where `pred` is false (`pred` is true on a
/// prefix of the range).
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The shared copy and the rule for retaking it.
#[derive(Debug)]
pub struct SnapshotCache {
    registry: Arc<Registry>,
    /// Readers accept a copy this old; copies start at least this far apart
    /// for the readers that need a newer one.
    interval: Duration,
    /// Shared with the timer that forgets a copy nobody asked for lately.
    current: Arc<Mutex<Option<Arc<Taken>>>>,
    /// Held while a copy is taken: one scan at a time.
    taking: tokio::sync::Mutex<()>,
}

impl SnapshotCache {
    pub fn new(registry: Arc<Registry>, interval: Duration) -> Self {
        Self {
            registry,
            interval,
            current: Arc::new(Mutex::new(None)),
            taking: tokio::sync::Mutex::new(()),
        }
    }

    fn held(&self) -> Option<Arc<Taken>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy at most one interval old.
    pub async fn fresh(&self) -> Arc<Taken> {
        let ok = |t: &Taken| t.age() < self.interval;
        if let Some(t) = self.held().filter(|t| ok(t)) {
            return t;
        }
        let _taking = self.taking.lock().await;
        if let Some(t) = self.held().filter(|t| ok(t)) {
            return t;
        }
        self.take().await
    }

    /// A copy whose scan started at or after `since`; copies taken for this
    /// start at least one interval apart, so new event streams, however
    /// many, cost at most one scan per interval.
    pub async fn since(&self, since: Instant) -> Arc<Taken> {
        loop {
            let held = self.held();
            if let Some(t) = held.as_ref().filter(|t| t.started >= since) {
                return t.clone();
            }
            // Wait for the interval without the lock, so that list readers
            // are not held up by streams waiting their turn.
            if let Some(t) = &held {
                tokio::time::sleep_until(t.started + self.interval).await;
            }
            let _taking = self.taking.lock().await;
            match self.held() {
                Some(t) if t.started >= since => return t,
                // Another copy was taken meanwhile: wait its interval.
                Some(t) if t.started + self.interval > Instant::now() => continue,
                _ => return self.take().await,
            }
        }
    }

    /// Forgets the copy (after a write through this port: its writer reads
    /// it back at once).
    pub fn invalidate(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Takes a new copy; the caller holds `taking`.
    async fn take(&self) -> Arc<Taken> {
        // Let the old copy go first (once no stream holds it): at most one
        // copy while readers come and go.
        self.invalidate();
        let registry = self.registry.clone();
        let started = Instant::now();
        let rows = tokio::task::spawn_blocking(move || registry.snapshot_rows())
            .await
            // The scan does not panic; if it ever did, serve an empty copy
            // rather than take the port down.
            .unwrap_or_default();
        let taken = Arc::new(Taken::new(rows, started));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(taken.clone());
        // A copy outlives its use by little: once no reader could take it,
        // it is forgotten, so memory returns when the readers go.
        let current = Arc::downgrade(&self.current);
        let mine = Arc::downgrade(&taken);
        let keep = self.interval.max(Duration::from_millis(100)) * 2;
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            if let Some(current) = current.upgrade() {
                let mut held = current.lock().unwrap_or_else(|e| e.into_inner());
                if held
                    .as_ref()
                    .is_some_and(|t| Arc::as_ptr(t) == mine.as_ptr())
                {
                    *held = None;
                }
            }
        });
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakerd_core::{PolicyResolver, RegistryConfig};

    #[tokio::test]
    async fn pages_by_prefix_state_and_cursor() {
        let r = Registry::new(RegistryConfig::default(), PolicyResolver::default());
        for n in ["a/1", "a/2", "a/3", "b/1", "c"] {
            r.acquire(n, "n").unwrap();
        }
        r.set_override(
            "a/2",
            breakerd_policy::OverrideKind::ForcedOpen,
            "ops",
            "why",
            None,
        )
        .await
        .unwrap();
        let cache = SnapshotCache::new(r.clone(), Duration::from_secs(60));
        let t = cache.fresh().await;
        assert_eq!(t.len(), 5);
        let names = |p: &PageOut<'_>| -> Vec<String> {
            p.rows.iter().map(|r| r.snapshot.name.to_string()).collect()
        };
        let q = PageQuery {
            prefix: "a/",
            limit: 2,
            ..Default::default()
        };
        let p = t.page(&q);
        assert_eq!(
            (names(&p), p.next, p.total_matching),
            (vec!["a/1".into(), "a/2".into()], Some("a/2"), 3)
        );
        let p = t.page(&PageQuery { after: "a/2", ..q });
        assert_eq!((names(&p), p.next), (vec!["a/3".to_string()], None));
        let p = t.page(&PageQuery {
            state: Some(State::Open),
            limit: 10,
            ..Default::default()
        });
        assert_eq!((names(&p), p.total_matching), (vec!["a/2".to_string()], 1));
        let p = t.page(&PageQuery {
            state: Some(State::Closed),
            after: "a/3",
            limit: 10,
            ..Default::default()
        });
        assert_eq!(names(&p), vec!["b/1", "c"]);
        let p = t.page(&PageQuery {
            prefix: "zz",
            limit: 10,
            ..Default::default()
        });
        assert_eq!((p.rows.len(), p.total_matching), (0, 0));
        assert_eq!(t.after(Some("a/3"), 1)[0].snapshot.name.as_ref(), "b/1");
        assert!(t.after(Some("c"), 5).is_empty());
        // Within the interval the same copy serves; a new circuit shows
        // once the copy is forgotten.
        r.acquire("d", "n").unwrap();
        assert!(Arc::ptr_eq(&t, &cache.fresh().await));
        cache.invalidate();
        assert_eq!(cache.fresh().await.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn copies_for_new_streams_start_an_interval_apart() {
        let r = Registry::new(RegistryConfig::default(), PolicyResolver::default());
        let cache = SnapshotCache::new(r.clone(), Duration::from_secs(1));
        let first = cache.since(Instant::now()).await;
        r.acquire("x", "n").unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        let asked = Instant::now();
        let second = cache.since(asked).await;
        assert!(second.started >= first.started + Duration::from_secs(1));
        assert!(second.started >= asked);
        assert_eq!(second.len(), 1, "the later copy has the new circuit");
        // One asked for before the copy started is served by it.
        assert!(Arc::ptr_eq(&second, &cache.since(asked).await));
    }
}
