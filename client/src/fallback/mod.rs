//! Fallback tiers: what to answer when the dependency cannot.
//!
//! When the primary call fails (or the circuit rejects it), [`Fallback`]
//! tries its tiers from the most faithful answer to the least:
//!
//! 1. **last known good**: the primary's own latest answer for the same key,
//!    if it is younger than the TTL (free, and a real answer, only stale);
//! 2. **alternative path**: another way to compute the answer (a replica, a
//!    slower service, a degraded computation); it costs a call, so it comes
//!    after the free cache;
//! 3. **static value**: always available, so it comes last (a tier after it
//!    could never run).
//!
//! Every answer says which tier produced it ([`Source`]), so the caller can
//! log it, mark the response as degraded, or skip caching it downstream.
//! Every success of the primary refreshes the cache. The cache is bounded
//! (`max_entries`, expired then oldest entries evicted first).
//!
//! Composed with a circuit ([`Fallback::call`]), a rejected call goes
//! straight to the tiers without running the primary at all.

mod cache;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cache::LastKnownGood;

use crate::{CallError, Circuit};

/// Default bound of the last-known-good cache.
pub const DEFAULT_MAX_ENTRIES: usize = 1024;

/// Which tier produced an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The primary call succeeded.
    Primary,
    /// The primary's last good answer for this key, this old.
    LastKnownGood {
        /// Time since the primary produced it.
        age: Duration,
    },
    /// The alternative path.
    Alternative,
    /// The configured static value.
    Static,
}

impl Source {
    /// True unless the primary answered.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, Source::Primary)
    }

    /// A short name for logs and headers: `primary`, `last_known_good`,
    /// `alternative`, `static`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Primary => "primary",
            Source::LastKnownGood { .. } => "last_known_good",
            Source::Alternative => "alternative",
            Source::Static => "static",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxFuture<V> = Pin<Box<dyn Future<Output = Option<V>> + Send>>;
type AltFn<K, V> = Arc<dyn Fn(K) -> BoxFuture<V> + Send + Sync>;

/// Fallback tiers for one kind of answer. Cheap to clone: clones share the
/// cache.
///
/// ```
/// # use std::time::Duration;
/// # use breakerd_client::fallback::{Fallback, Source};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fallback = Fallback::new()
///     .last_known_good(Duration::from_secs(60))
///     .static_value(0.0_f64);
/// let (v, src) = fallback.run("EURUSD", async { Ok::<_, std::io::Error>(1.08) }).await.unwrap();
/// assert_eq!((v, src), (1.08, Source::Primary));
/// let down = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let (v, src) = fallback.run("EURUSD", async { Err(down) }).await.unwrap();
/// assert_eq!(v, 1.08);
/// assert!(matches!(src, Source::LastKnownGood { .. }));
/// # }
/// ```
pub struct Fallback<K, V> {
    cache: Option<Arc<LastKnownGood<K, V>>>,
    ttl: Option<Duration>,
    max_entries: usize,
    alternative: Option<AltFn<K, V>>,
    static_value: Option<V>,
}

impl<K, V: Clone> Clone for Fallback<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            ttl: self.ttl,
            max_entries: self.max_entries,
            alternative: self.alternative.clone(),
            static_value: self.static_value.clone(),
        }
    }
}

impl<K, V: fmt::Debug> fmt::Debug for Fallback<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("last_known_good_ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("alternative", &self.alternative.is_some())
            .field("static_value", &self.static_value)
            .finish()
    }
}

impl<K, V> Default for Fallback<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Fallback<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// No tiers yet: a failed primary is returned as is.
    pub fn new() -> Self {
        Self {
            cache: None,
            ttl: None,
            max_entries: DEFAULT_MAX_ENTRIES,
            alternative: None,
            static_value: None,
        }
    }

    /// Serve the primary's last good answer for a key while it is younger
    /// than `ttl`.
    pub fn last_known_good(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self.cache = Some(Arc::new(LastKnownGood::new(ttl, self.max_entries)));
        self
    }

    /// Bound the last-known-good cache to `max` keys (default
    /// [`DEFAULT_MAX_ENTRIES`]; 0 is treated as 1).
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        if let Some(ttl) = self.ttl {
            self.cache = Some(Arc::new(LastKnownGood::new(ttl, self.max_entries)));
        }
        self
    }

    /// Answer `value` when nothing better is available.
    pub fn static_value(mut self, value: V) -> Self {
        self.static_value = Some(value);
        self
    }

    /// Try `f(key)` when the primary failed and the cache has nothing fresh.
    /// Its errors are logged (at `warn`) and fall through to the static
    /// value.
    pub fn alternative<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: fmt::Display,
    {
        self.alternative = Some(Arc::new(move |key: K| {
            let fut = f(key);
            Box::pin(async move {
                match fut.await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "fallback: alternative path failed");
                        None
                    }
                }
            })
        }));
        self
    }

    /// Await `primary`; on success cache and return its value, on failure
    /// answer from the first tier that can. Returns the primary's error
    /// when no tier can answer.
    pub async fn run<E, Fut>(&self, key: K, primary: Fut) -> Result<(V, Source), E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        match primary.await {
            Ok(v) => {
                self.remember(key, &v);
                Ok((v, Source::Primary))
            }
            Err(e) => self.tiers(key).await.ok_or(e),
        }
    }

    /// Call `op` through `circuit` under `timeout` (see
    /// [`Circuit::call`]); when the circuit rejects the call, `op` is not
    /// run and the tiers answer at once. To retry before falling back, pass
    /// a [`RetryPolicy::run`](crate::retry::RetryPolicy::run) future to
    /// [`run`](Self::run) instead.
    pub async fn call<E, F, Fut>(
        &self,
        circuit: &Circuit,
        key: K,
        timeout: Duration,
        op: F,
    ) -> Result<(V, Source), CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.run(key, circuit.call(timeout, op)).await
    }

    /// Answer from the fallback tiers alone, as when the primary failed.
    /// `None` when no tier can answer.
    pub async fn tiers(&self, key: K) -> Option<(V, Source)> {
        if let Some((v, age)) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Some((v, Source::LastKnownGood { age }));
        }
        if let Some(alt) = &self.alternative
            && let Some(v) = alt(key).await
        {
            return Some((v, Source::Alternative));
        }
        self.static_value.clone().map(|v| (v, Source::Static))
    }

    /// Record `value` as the last known good answer for `key` (what a primary
    /// success does).
    pub fn remember(&self, key: K, value: &V) {
        if let Some(cache) = &self.cache {
            cache.put(key, value.clone());
        }
    }
}
