//! The bounded last-known-good cache behind the fallback's middle tier.
//!
//! A value is only useful as a fallback while it is fresh enough, so every
//! entry carries the instant it was stored and is served only within the
//! TTL. Memory is bounded by `max_entries`: inserting into a full cache first
//! drops expired entries, then the oldest one. Time is
//! `tokio::time::Instant`, so a paused clock drives expiry in tests.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A bounded, TTL'd map from key to the last value the primary returned.
#[derive(Debug)]
pub(crate) struct LastKnownGood<K, V> {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Insertion order: (stored_at, seq) -> key. The first entry is the
    /// oldest, so both expiry sweeps and eviction start at the front.
    order: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    stored: (Instant, u64),
}

impl<K: Eq + Hash + Clone, V: Clone> LastKnownGood<K, V> {
    /// An empty cache. `max_entries` of 0 is treated as 1.
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                seq: 0,
            }),
        }
    }

    /// Store (or refresh) the value for `key`.
    pub(crate) fn put(&self, key: K, value: V) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let seq = inner.seq;
        inner.seq = inner.seq.wrapping_add(1);
        let stored = (now, seq);
        if let Some(old) = inner.entries.insert(key.clone(), Entry { value, stored }) {
            inner.order.remove(&old.stored);
        } else if inner.entries.len() > self.max_entries {
            self.purge_expired(&mut inner, now);
            while inner.entries.len() > self.max_entries {
                let Some((_, oldest)) = inner.order.pop_first() else {
                    break;
                };
                inner.entries.remove(&oldest);
            }
        }
        inner.order.insert(stored, key);
    }

    /// The value for `key` and its age, if stored within the TTL.
    pub(crate) fn get(&self, key: &K) -> Option<(V, Duration)> {
        let now = Instant::now();
        let inner = self.inner.lock();
        let entry = inner.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored.0);
        (age <= self.ttl).then(|| (entry.value.clone(), age))
    }

    /// Number of entries, expired ones included until they are purged.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    fn purge_expired(&self, inner: &mut Inner<K, V>, now: Instant) {
        while let Some(entry) = inner.order.first_entry() {
            if now.saturating_duration_since(entry.key().0) <= self.ttl {
                break;
            }
            let key = entry.remove();
            inner.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn serves_within_ttl_only() {
        let c = LastKnownGood::new(Duration::from_secs(30), 8);
        c.put("a", 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.get(&"a"), Some((1, Duration::from_secs(30))));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(c.get(&"a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_restarts_the_ttl_and_keeps_one_entry() {
        let c = LastKnownGood::new(Duration::from_secs(10), 8);
        c.put("a", 1);
        tokio::time::advance(Duration::from_secs(8)).await;
        c.put("a", 2);
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(c.get(&"a").map(|(v, _)| v), Some(2));
        assert_eq!(c.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn full_cache_evicts_expired_first_then_oldest() {
        let c = LastKnownGood::new(Duration::from_secs(10), 2);
        c.put("old", 0);
        tokio::time::advance(Duration::from_secs(11)).await;
        c.put("a", 1);
        c.put("b", 2); // full: "old" is expired and goes first
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"a").map(|(v, _)| v), Some(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        c.put("a", 10); // refresh: "b" is now the oldest
        c.put("c", 3); // full, nothing expired: evict the oldest ("b")
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a").map(|(v, _)| v), Some(10));
        assert_eq!(c.get(&"c").map(|(v, _)| v), Some(3));
    }
}
