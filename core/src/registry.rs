//! The [`Registry`] itself: what it holds, and how it is built, empty or
//! restored from the store. Each concern adds its own `impl Registry` block
//! in its own file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use breakerd_policy::{Breaker, Generation, MAX_OVERRIDE_TTL, NodeId};
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use crate::circuit::{Circuit, CircuitInner, CircuitKey};
use crate::circuit_name::CircuitName;
use crate::durable::DurableState;
use crate::name;
use crate::resolver::PolicyResolver;
use crate::stats::Stats;
use crate::store::{Clocks, Loaded, generation_floor};
use crate::types::{CircuitSnapshot, RegistryConfig};

/// A deadline handed to the background driver: when, and which circuit.
pub(crate) type TimerEntry = (Instant, Arc<str>);

/// The coordinator's circuits. Share it as `Arc<Registry>`. No method
/// blocks for long: the async ones (admin changes, and reports) only wait,
/// after the change is made, until it is durable.
///
/// Its methods are grouped by concern, one `impl Registry` per file: the
/// circuit table (`table.rs`), the data plane (`data_plane.rs`), admin
/// changes and the wait for durability (`admin.rs`) and queries
/// (`query.rs`).
#[derive(Debug)]
pub struct Registry {
    pub(crate) config: RegistryConfig,
    pub(crate) resolver: PolicyResolver,
    pub(crate) circuits: DashMap<CircuitKey, ()>,
    /// Circuits held or being created: reserved before insertion, so the
    /// cap is exact under concurrency.
    pub(crate) reserved: AtomicUsize,
    /// Highest generation of any circuit removed so far: a circuit created
    /// again under the same name starts above it, so that its generations
    /// never go back.
    pub(crate) removed_generation: AtomicU64,
    pub(crate) hub: broadcast::Sender<Arc<CircuitSnapshot>>,
    pub(crate) timers: mpsc::UnboundedSender<TimerEntry>,
    pub(crate) timer_rx: Mutex<Option<mpsc::UnboundedReceiver<TimerEntry>>>,
    /// Bumped by the driver after every batch of deadlines it applied
    /// (lets tests wait for it instead of sleeping).
    pub(crate) driver_ticks: tokio::sync::watch::Sender<u64>,
    pub(crate) epoch: Instant,
    pub(crate) stats: Stats,
    /// Where durable state goes, through the durable-state seam; `None`
    /// runs in memory only.
    pub(crate) durable_state: Option<Box<dyn DurableState>>,
    /// Every generation handed out in this run is above this (see
    /// [`generation_floor`]), so generations never go back across restarts.
    pub(crate) generation_floor: Generation,
}

/// The current instant on tokio's clock (paused in tests).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Registry {
    /// An empty registry. Call [`spawn_background`](Self::spawn_background)
    /// on it to run deadlines and eviction.
    pub fn new(config: RegistryConfig, resolver: PolicyResolver) -> Arc<Self> {
        Arc::new(Self::build(config, resolver, None, 0))
    }

    /// A registry backed by `store` (the embedded
    /// [`Store`](crate::store::Store), or anything else behind the
    /// [`DurableState`] seam), holding every circuit `loaded` from it:
    /// overrides, admin policies, backoff memory, and open circuits until
    /// their original deadline (downtime counted). Every generation of this
    /// run is above those of earlier runs. A stored deadline further ahead
    /// than a running coordinator could have set is capped, with a warning:
    /// an open deadline at the policy's longest open time from now, an
    /// override expiry at [`MAX_OVERRIDE_TTL`] (see
    /// [`breakerd_policy::bounds`]).
    pub fn restore(
        config: RegistryConfig,
        resolver: PolicyResolver,
        store: impl DurableState + 'static,
        loaded: Loaded,
    ) -> Arc<Self> {
        let floor = generation_floor(loaded.epoch);
        let registry = Self::build(config, resolver, Some(Box::new(store)), floor);
        let clocks = Clocks::now();
        let now = clocks.mono;
        for record in loaded.circuits {
            let Some((circuit, capped)) = registry.circuit_from_record(&record, clocks, floor)
            else {
                continue;
            };
            // What restoring changed is mostly not written back: a deadline
            // that passed and the new generation floor are derived again the
            // same way on the next start, and later changes are persisted as
            // they happen. A capped deadline is written back: the cap counts
            // from this start, so restarts in a row must not each grant a
            // fresh longest open time to a deadline from the far future.
            let mut inner = circuit.inner.lock();
            if capped {
                registry.persist(&circuit, &inner, now);
            }
            registry.schedule(&circuit, &mut inner, now);
            drop(inner);
            // Durable state is never dropped for the cap: restored circuits
            // count against it but are all kept.
            registry.reserved.fetch_add(1, Ordering::AcqRel);
            registry.circuits.insert(CircuitKey(circuit), ());
        }
        tracing::info!(
            circuits = registry.len(),
            epoch = loaded.epoch,
            "state restored"
        );
        Arc::new(registry)
    }

    /// A circuit rebuilt from its durable `record` (its admin policy over
    /// the configured one, deadlines moved onto `clocks`, its generation at
    /// least `floor`, its policy version kept); `None` for an invalid name.
    pub(crate) fn circuit_from_record(
        &self,
        record: &crate::store::CircuitRecord,
        clocks: Clocks,
        floor: Generation,
    ) -> Option<(Arc<Circuit>, bool)> {
        if let Some(problem) = name::name_problem(&record.name) {
            tracing::error!(circuit = %record.name, %problem, "store holds an invalid circuit name; skipped");
            return None;
        }
        let (policy, admin_spec, changed) = self.policy_of(record);
        let mut saved = record.to_persisted(clocks);
        saved.generation = saved.generation.max(floor);
        // Deadlines are stored in wall-clock time: one written while the
        // wall clock ran ahead lies far in the future. It is capped at what
        // this policy could set now (`Breaker::restore` applies the same
        // cap; here it is reported).
        let capped = saved.cap_deadlines(&policy, clocks.mono);
        if let Some(ahead) = capped.open_until {
            tracing::warn!(circuit = %record.name, stored_ahead_ms = ahead.as_millis() as u64, cap_ms = policy.longest_open().as_millis() as u64, "stored open deadline lies beyond the policy's longest open time (did the wall clock run ahead?); capped");
        }
        if let Some(ahead) = capped.override_expiry {
            tracing::warn!(circuit = %record.name, stored_ahead_ms = ahead.as_millis() as u64, cap_ms = MAX_OVERRIDE_TTL.as_millis() as u64, "stored override expiry lies beyond the override horizon (did the wall clock run ahead?); capped");
        }
        let mut breaker = Breaker::restore(
            policy,
            NodeId::from_name(&record.name).0,
            saved,
            clocks.mono,
        );
        breaker.raise_policy_version(record.policy_version + u64::from(changed));
        let circuit = Arc::new(Circuit {
            name: CircuitName::new(&record.name),
            inner: Mutex::new(CircuitInner::new(breaker, admin_spec)),
            last_used: AtomicU64::new(0),
        });
        Some((circuit, !capped.is_empty()))
    }

    /// The policy a stored record runs with: its admin policy over the
    /// configured one, or the configured one when that is no longer valid
    /// (then `true`: the policy changed).
    pub(crate) fn policy_of(
        &self,
        record: &crate::store::CircuitRecord,
    ) -> (
        Arc<breakerd_policy::Policy>,
        Option<breakerd_policy::PolicySpec>,
        bool,
    ) {
        let configured = self.resolver.resolve_shared(&record.name);
        match &record.admin_policy {
            None => (configured, None, false),
            Some(spec) => match configured.apply(spec) {
                Ok(p) => (Arc::new(p), Some(spec.clone()), false),
                Err(e) => {
                    tracing::error!(circuit = %record.name, error = %e, "stored admin policy no longer valid over the configured policy; using the configured policy");
                    (configured, None, true)
                }
            },
        }
    }

    pub(crate) fn build(
        config: RegistryConfig,
        resolver: PolicyResolver,
        durable_state: Option<Box<dyn DurableState>>,
        generation_floor: Generation,
    ) -> Self {
        let (hub, _) = broadcast::channel(config.watch_buffer.max(1));
        let (timers, timer_rx) = mpsc::unbounded_channel();
        Self {
            config,
            resolver,
            circuits: DashMap::new(),
            reserved: AtomicUsize::new(0),
            removed_generation: AtomicU64::new(0),
            hub,
            timers,
            timer_rx: Mutex::new(Some(timer_rx)),
            driver_ticks: tokio::sync::watch::channel(0).0,
            epoch: now(),
            stats: Stats::default(),
            durable_state,
            generation_floor,
        }
    }

    /// The configuration this registry runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Circuits held now.
    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    /// Whether no circuit is held.
    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// The generation a newly created circuit starts at: above every
    /// generation of a removed circuit and of earlier runs.
    pub(crate) fn initial_generation(&self) -> Generation {
        self.removed_generation
            .load(Ordering::Acquire)
            .max(self.generation_floor)
            + 1
    }

    pub(crate) fn millis_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}
