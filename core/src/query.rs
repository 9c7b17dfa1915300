//! Reading the registry without changing it: one circuit in detail, pages
//! of circuits, snapshots for watchers, the audit log, and the totals for
//! metrics.

use std::sync::Arc;
use std::time::Instant;

use crate::circuit::{Circuit, CircuitInner, snapshot_of};
use crate::error::CoreError;
use crate::name::{self, validate_circuit_name};
use crate::registry::{Registry, now};
use crate::stats::{RegistryStats, TransitionCount};
use crate::store::AuditRecord;
use breakerd_policy::Counters;
use tokio::sync::broadcast;

use crate::types::{
    CircuitDetail, CircuitSnapshot, DEFAULT_PAGE_SIZE, ListQuery, MAX_PAGE_SIZE, Page,
    TransitionView,
};

impl Registry {
    /// One circuit in detail.
    pub fn get(&self, name: &str) -> Result<CircuitDetail, CoreError> {
        validate_circuit_name(name)?;
        let now = now();
        let circuit = self.lookup(name).ok_or_else(|| CoreError::NotFound {
            name: name.to_owned(),
        })?;
        let inner = circuit.inner.lock();
        if inner.deleted {
            return Err(CoreError::NotFound {
                name: name.to_owned(),
            });
        }
        Ok(self.detail_of(&circuit, &inner, now))
    }

    pub(crate) fn detail_of(
        &self,
        circuit: &Circuit,
        inner: &CircuitInner,
        now: Instant,
    ) -> CircuitDetail {
        CircuitDetail {
            snapshot: snapshot_of(&circuit.name, inner, now),
            counters: inner.breaker.counters(),
            history: inner
                .breaker
                .history()
                .take(self.config.history_len)
                .map(|t| TransitionView {
                    from: t.from,
                    to: t.to,
                    generation: t.generation,
                    age: now.saturating_duration_since(t.at),
                    cause: t.cause,
                })
                .collect(),
            admin_policy: inner.admin_spec().cloned(),
        }
    }

    /// The current snapshot of an existing circuit.
    pub(crate) fn snapshot(&self, name: &str, now: Instant) -> Option<Arc<CircuitSnapshot>> {
        let circuit = self.lookup(name)?;
        let inner = circuit.inner.lock();
        (!inner.deleted).then(|| Arc::new(snapshot_of(&circuit.name, &inner, now)))
    }

    /// Every live circuit's snapshot with its counters, ordered by name, in
    /// one pass: for a cache that many readers page through, instead of a
    /// scan each. Each circuit is locked alone, briefly; the whole is not
    /// one instant, but every circuit's row is consistent in itself.
    pub fn snapshot_rows(&self) -> Vec<(CircuitSnapshot, Counters)> {
        let now = now();
        // Collect first: no map guard may be held while a circuit is locked.
        let mut all: Vec<Arc<Circuit>> = self.circuits.iter().map(|e| e.key().0.clone()).collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all.iter()
            .filter_map(|c| {
                let inner = c.inner.lock();
                (!inner.deleted)
                    .then(|| (snapshot_of(&c.name, &inner, now), inner.breaker.counters()))
            })
            .collect()
    }

    /// Every change from now on, as the watch hub fans it out: a receiver
    /// that starts empty. Combined with [`snapshot_rows`](Self::snapshot_rows)
    /// taken after it, nothing falls between. A receiver that falls more
    /// than the watch buffer behind gets `Lagged` and must resynchronise.
    pub fn change_feed(&self) -> broadcast::Receiver<Arc<CircuitSnapshot>> {
        self.hub.subscribe()
    }

    /// Circuits filtered by prefix and state, ordered by name, one page at
    /// a time.
    pub fn list(&self, query: &ListQuery) -> Result<Page, CoreError> {
        if !query.page_token.is_empty() && name::name_problem(&query.page_token).is_some() {
            return Err(CoreError::InvalidArgument(format!(
                "invalid page token {:?}",
                query.page_token
            )));
        }
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let now = now();
        // Collect first: no map guard may be held while a circuit is locked.
        let candidates: Vec<Arc<Circuit>> = self
            .circuits
            .iter()
            .filter(|e| e.key().0.name.starts_with(query.prefix.as_str()))
            .map(|e| e.key().0.clone())
            .collect();
        let mut total_matching = 0u64;
        let mut after_token: Vec<Arc<Circuit>> = Vec::new();
        for c in candidates {
            if let Some(state) = query.state {
                let inner = c.inner.lock();
                if inner.deleted || inner.breaker.state() != state {
                    continue;
                }
            }
            total_matching += 1;
            if query.page_token.is_empty() || &*c.name > query.page_token.as_str() {
                after_token.push(c);
            }
        }
        let more = after_token.len() > page_size;
        if more {
            after_token.select_nth_unstable_by(page_size, |a, b| a.name.cmp(&b.name));
            after_token.truncate(page_size);
        }
        after_token.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let circuits: Vec<CircuitSnapshot> = after_token
            .iter()
            .filter_map(|c| {
                let inner = c.inner.lock();
                (!inner.deleted).then(|| snapshot_of(&c.name, &inner, now))
            })
            .collect();
        let next_page_token = match (more, after_token.last()) {
            (true, Some(last)) => last.name.to_string(),
            _ => String::new(),
        };
        Ok(Page {
            circuits,
            next_page_token,
            total_matching,
        })
    }

    /// The newest `limit` admin changes, newest first, optionally of one
    /// circuit only. Empty without a store.
    pub fn audit_log(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, CoreError> {
        if let Some(name) = circuit {
            validate_circuit_name(name)?;
        }
        match &self.durable_state {
            Some(durable) => durable
                .read_audit(circuit, limit)
                .map_err(|e| CoreError::Storage(e.to_string())),
            None => Ok(Vec::new()),
        }
    }

    /// Totals for metrics.
    pub fn stats(&self) -> RegistryStats {
        self.stats.totals(self.len())
    }

    /// Every kind of transition seen since the registry started, with its
    /// count, for metrics.
    pub fn transition_counts(&self) -> Vec<TransitionCount> {
        self.stats.transition_counts()
    }
}
