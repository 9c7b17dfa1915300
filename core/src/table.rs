//! The circuit table: finding a circuit by name, creating it on first use
//! within the cap, running an operation under its lock and then telling
//! watchers, the store and the deadline driver what changed, removing and
//! evicting circuits, and applying deadlines as they fall due.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use breakerd_policy::{Breaker, NodeId};
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;

use crate::admission::{Admission, Refused};
use crate::circuit::{
    Before, Circuit, CircuitInner, CircuitKey, Fingerprint, record_of, snapshot_of,
};
use crate::circuit_name::CircuitName;
use crate::driver;
use crate::error::CoreError;
use crate::registry::{Registry, now};
use crate::types::CircuitSnapshot;

/// Who creates a circuit, for the cap: operators may use the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Creator {
    /// An admin call.
    Operator,
    /// Acquire or Watch.
    DataPlane,
}

impl Registry {
    pub(crate) fn touch(&self, circuit: &Circuit, now: Instant) {
        circuit
            .last_used
            .fetch_max(self.millis_since_epoch(now), Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Circuit>> {
        // Clone the Arc and drop the shard guard before anyone locks it.
        self.circuits.get(name).map(|e| e.key().0.clone())
    }

    /// Takes a place under the cap: the whole cap for operators, the cap
    /// less the operators' reserve for the data plane.
    pub(crate) fn reserve_slot(&self, by: Creator) -> Result<(), CoreError> {
        let limit = match by {
            Creator::Operator => self.config.max_circuits,
            Creator::DataPlane => self.config.data_plane_cap(),
        };
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| CoreError::TooManyCircuits { limit })
    }

    pub(crate) fn release_slot(&self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// The circuit `name` (already validated), created with its configured
    /// policy when missing, if `admission` admits it and the cap of `by`
    /// has room. The admission is asked only by the caller that inserts the
    /// circuit, under the shard lock, so a name is paid for once however
    /// many callers race to create it.
    pub(crate) fn get_or_create_by<A: Admission>(
        &self,
        name: &str,
        now: Instant,
        admission: &A,
        by: Creator,
    ) -> Result<Arc<Circuit>, Refused<A::Refusal>> {
        if let Some(c) = self.lookup(name) {
            return Ok(c);
        }
        let policy = self.resolver.resolve_shared(name);
        let seed = NodeId::from_name(name).0;
        // The map's key is the circuit itself, so it is built before the
        // shard is locked; its breaker is built again with the real
        // generation once the name is known to be free.
        let circuit = Arc::new(Circuit {
            name: CircuitName::new(name),
            inner: Mutex::new(CircuitInner::new(
                Breaker::new(Arc::clone(&policy), 0, seed, now),
                None,
            )),
            last_used: AtomicU64::new(self.millis_since_epoch(now)),
        });
        match self.circuits.entry(CircuitKey(Arc::clone(&circuit))) {
            Entry::Occupied(e) => Ok(e.key().0.clone()),
            Entry::Vacant(v) => {
                admission.admit(1).map_err(Refused::Admission)?;
                self.reserve_slot(by)?;
                let snapshot = {
                    let mut inner = circuit.inner.lock();
                    // Read under the shard lock, after any removal of this
                    // name: the new circuit starts above its generations.
                    inner.breaker = Breaker::new(policy, self.initial_generation(), seed, now);
                    snapshot_of(&circuit.name, &inner, now)
                };
                // Announced while the shard is still locked (the guard
                // `insert` returns holds it), so no other event of this
                // circuit can reach the hub before it. `publish` only sends
                // on the hub's channel: it never touches the map.
                let shard = v.insert(());
                self.publish(Arc::new(snapshot));
                drop(shard);
                self.stats.count_created();
                Ok(circuit)
            }
        }
    }

    /// Runs `f` on the existing circuit `name` (else `NotFound`): see
    /// [`with_found`](Self::with_found).
    pub(crate) fn with_existing<T>(
        &self,
        name: &str,
        now: Instant,
        f: impl FnOnce(&Arc<Circuit>, &mut CircuitInner) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let find = || {
            self.lookup(name).ok_or_else(|| CoreError::NotFound {
                name: name.to_owned(),
            })
        };
        self.with_found(now, find, f)
    }

    /// Runs `f` on the circuit `name`, created by an operator when missing
    /// if `admission` admits it: see [`with_found`](Self::with_found).
    pub(crate) fn with_created<T, A: Admission>(
        &self,
        name: &str,
        now: Instant,
        admission: &A,
        f: impl FnOnce(&Arc<Circuit>, &mut CircuitInner) -> Result<T, CoreError>,
    ) -> Result<T, Refused<A::Refusal>> {
        self.with_created_by(name, now, admission, Creator::Operator, f)
    }

    /// [`with_created`](Self::with_created), the circuit created by `by`.
    pub(crate) fn with_created_by<T, A: Admission>(
        &self,
        name: &str,
        now: Instant,
        admission: &A,
        by: Creator,
        f: impl FnOnce(&Arc<Circuit>, &mut CircuitInner) -> Result<T, CoreError>,
    ) -> Result<T, Refused<A::Refusal>> {
        self.with_found(now, || self.get_or_create_by(name, now, admission, by), f)
    }

    /// Runs `f` on the live circuit `find` returns, under its lock, then
    /// publishes and schedules whatever changed. Finds it again when it was
    /// removed between lookup and lock.
    fn with_found<T, E: From<CoreError>>(
        &self,
        now: Instant,
        mut find: impl FnMut() -> Result<Arc<Circuit>, E>,
        f: impl FnOnce(&Arc<Circuit>, &mut CircuitInner) -> Result<T, CoreError>,
    ) -> Result<T, E> {
        loop {
            let circuit = find()?;
            let mut inner = circuit.inner.lock();
            if inner.deleted {
                continue;
            }
            self.touch(&circuit, now);
            let before = Before::of(&inner.breaker);
            let result = f(&circuit, &mut inner);
            self.after_change(&circuit, &mut inner, before, now, now);
            return result.map_err(E::from);
        }
    }

    /// Counts, publishes and persists the circuit's new state if its
    /// generation, state, override or policy changed since `before`, and
    /// schedules its next deadline (never before `not_before`). Called with
    /// the circuit locked, so events of one circuit reach the hub and the
    /// store in order.
    pub(crate) fn after_change(
        &self,
        circuit: &Circuit,
        inner: &mut CircuitInner,
        before: Before,
        now: Instant,
        not_before: Instant,
    ) {
        self.stats.count_changes(&inner.breaker, &before);
        if Fingerprint::of(&inner.breaker) != before.fingerprint {
            self.publish(Arc::new(snapshot_of(&circuit.name, inner, now)));
            self.persist(circuit, inner, now);
        }
        self.schedule(circuit, inner, not_before);
    }

    /// Queues the circuit's durable state (not waiting for it to be
    /// durable; admin calls wait with [`durable`](Self::durable)).
    pub(crate) fn persist(&self, circuit: &Circuit, inner: &CircuitInner, now: Instant) {
        if let Some(durable) = &self.durable_state {
            durable.put(record_of(&circuit.name, inner, now));
        }
    }

    pub(crate) fn publish(&self, snapshot: Arc<CircuitSnapshot>) {
        // An error only means nobody is watching.
        let _ = self.hub.send(snapshot);
    }

    /// Hands the circuit's next deadline to the driver when it is earlier
    /// than what is already scheduled. Deadlines are never scheduled before
    /// `not_before`.
    pub(crate) fn schedule(
        &self,
        circuit: &Circuit,
        inner: &mut CircuitInner,
        not_before: Instant,
    ) {
        let Some(deadline) = inner.breaker.next_deadline() else {
            return;
        };
        let deadline = deadline.max(not_before);
        if inner.scheduled().is_none_or(|s| deadline < s) {
            inner.set_scheduled(Some(deadline));
            // Fails only when the driver has stopped (shutdown).
            let _ = self
                .timers
                .send((deadline, Arc::from(circuit.name.as_str())));
        }
    }

    /// Marks the locked circuit removed and takes it out of the map.
    /// Lock order is circuit, then map shard; the only path that takes them
    /// the other way round (eviction) uses `try_lock`.
    pub(crate) fn remove_locked(&self, circuit: &Arc<Circuit>, inner: &mut CircuitInner) {
        inner.deleted = true;
        self.removed_generation
            .fetch_max(inner.breaker.generation(), Ordering::AcqRel);
        if self
            .circuits
            .remove_if(circuit.name.as_str(), |key, ()| {
                Arc::ptr_eq(&key.0, circuit)
            })
            .is_some()
        {
            self.release_slot();
        }
    }

    /// Forgets every circuit that is evictable (closed, no override, no
    /// probe in flight), has no admin policy, and was not used for
    /// `idle_evict_after`. Being watched does not keep a circuit: its
    /// state is the default, and creating it again announces it to the
    /// watchers. Returns how many were evicted.
    pub fn evict_idle(&self) -> usize {
        let now_ms = self.millis_since_epoch(now());
        let idle_ms = u64::try_from(self.config.idle_evict_after.as_millis()).unwrap_or(u64::MAX);
        let mut evicted = 0;
        self.circuits.retain(|key, ()| {
            let circuit = &key.0;
            if now_ms.saturating_sub(circuit.last_used.load(Ordering::Relaxed)) < idle_ms {
                return true;
            }
            // Never wait for a circuit lock while holding a shard lock.
            let Some(mut inner) = circuit.inner.try_lock() else {
                return true;
            };
            if inner.deleted {
                return false;
            }
            if inner.admin_spec().is_some() || !inner.breaker.is_evictable() {
                return true;
            }
            inner.deleted = true;
            self.removed_generation
                .fetch_max(inner.breaker.generation(), Ordering::AcqRel);
            evicted += 1;
            false
        });
        for _ in 0..evicted {
            self.release_slot();
        }
        self.stats.count_evicted(evicted);
        evicted
    }

    /// Applies the deadlines of `name` that are due (called by the driver).
    pub(crate) fn fire_deadline(&self, name: &str, now: Instant) {
        let Some(circuit) = self.lookup(name) else {
            return;
        };
        let mut inner = circuit.inner.lock();
        if inner.deleted {
            return;
        }
        if inner.scheduled().is_some_and(|s| s <= now) {
            inner.set_scheduled(None);
        }
        let before = Before::of(&inner.breaker);
        inner.breaker.advance(now);
        // A deadline that `advance` left due must not spin the driver.
        self.after_change(
            &circuit,
            &mut inner,
            before,
            now,
            now + Duration::from_millis(1),
        );
    }

    /// Starts the background task: applies every circuit's deadlines when
    /// they fall due (open timers, probe leases, override expiry), publishing
    /// the transitions, and evicts idle circuits every `evict_interval`.
    /// Runs until `shutdown` completes or the registry is dropped. Returns
    /// `None` when it was already started.
    pub fn spawn_background<F>(self: &Arc<Self>, shutdown: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let rx = self.timer_rx.lock().take()?;
        Some(tokio::spawn(driver::run(
            Arc::downgrade(self),
            rx,
            self.config.evict_interval,
            shutdown,
        )))
    }
}
