//! One circuit as the registry holds it: its breaker behind a small lock of
//! its own, the map key that finds it by name, what decides whether a change
//! must be told, and the views of it that leave the registry (snapshots for
//! watchers and callers, records for the store).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use breakerd_policy::{Breaker, Generation, OverrideKind, PolicySpec, State};
use parking_lot::Mutex;

use crate::circuit_name::CircuitName;
use crate::store::{CircuitRecord, Clocks};
use crate::types::{CircuitSnapshot, OverrideSnapshot};

/// One circuit: its breaker behind a small lock of its own.
///
/// The registry may hold a million (bench W6), most of them closed and
/// untouched by operators, so a circuit is one allocation (`Arc<Circuit>`,
/// with the name inline when short) plus one word in the map, and whatever
/// only some circuits need is boxed away (see `tests::a_circuit_is_small`).
#[derive(Debug)]
pub(crate) struct Circuit {
    pub(crate) name: CircuitName,
    pub(crate) inner: Mutex<CircuitInner>,
    /// Milliseconds since the registry's epoch of the latest use.
    pub(crate) last_used: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct CircuitInner {
    pub(crate) breaker: Breaker,
    /// Only while the circuit has an admin policy or a deadline scheduled.
    pub(crate) extra: Option<Box<CircuitExtra>>,
    /// Removed from the map (deleted or evicted): whoever still holds the
    /// `Arc` must look the name up again.
    pub(crate) deleted: bool,
}

/// The parts of a circuit that most circuits never need.
#[derive(Debug, Default)]
pub(crate) struct CircuitExtra {
    /// Admin policy changes, layered over the configured policy.
    pub(crate) admin_spec: Option<PolicySpec>,
    /// Earliest deadline handed to the background driver and not yet fired.
    pub(crate) scheduled: Option<Instant>,
}

impl CircuitInner {
    pub(crate) fn new(breaker: Breaker, admin_spec: Option<PolicySpec>) -> Self {
        Self {
            breaker,
            extra: admin_spec.map(|spec| {
                Box::new(CircuitExtra {
                    admin_spec: Some(spec),
                    scheduled: None,
                })
            }),
            deleted: false,
        }
    }

    pub(crate) fn admin_spec(&self) -> Option<&PolicySpec> {
        self.extra.as_ref().and_then(|e| e.admin_spec.as_ref())
    }

    pub(crate) fn set_admin_spec(&mut self, spec: PolicySpec) {
        self.extra.get_or_insert_with(Box::default).admin_spec = Some(spec);
    }

    /// Drops the admin policy (undoing a refused change).
    pub(crate) fn clear_admin_spec(&mut self) {
        if let Some(extra) = &mut self.extra {
            extra.admin_spec = None;
            if extra.scheduled.is_none() {
                self.extra = None;
            }
        }
    }

    pub(crate) fn scheduled(&self) -> Option<Instant> {
        self.extra.as_ref().and_then(|e| e.scheduled)
    }

    /// Notes the deadline handed to the driver, or (`None`) that it fired.
    pub(crate) fn set_scheduled(&mut self, at: Option<Instant>) {
        match (&mut self.extra, at) {
            (Some(extra), None) if extra.admin_spec.is_none() => self.extra = None,
            (Some(extra), at) => extra.scheduled = at,
            (None, None) => {}
            (None, Some(at)) => {
                self.extra = Some(Box::new(CircuitExtra {
                    admin_spec: None,
                    scheduled: Some(at),
                }));
            }
        }
    }
}

/// A key of the registry's map: the circuit itself, found by its name, so
/// that the map keeps no second copy of the name.
#[derive(Debug, Clone)]
pub(crate) struct CircuitKey(pub(crate) Arc<Circuit>);

impl Borrow<str> for CircuitKey {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// Hashes as the name's `str` does, as `Borrow<str>` requires.
impl Hash for CircuitKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.as_str().hash(state);
    }
}

impl PartialEq for CircuitKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for CircuitKey {}

/// What decides whether watchers must hear about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) generation: Generation,
    policy_version: u64,
    state: State,
    override_: Option<(OverrideKind, Option<Instant>)>,
}

impl Fingerprint {
    pub(crate) fn of(b: &Breaker) -> Self {
        Self {
            generation: b.generation(),
            policy_version: b.policy_version(),
            state: b.state(),
            override_: b.override_().map(|o| (o.kind, o.expires_at)),
        }
    }
}

/// A breaker before a change: what watchers know of it, and how many probe
/// leases it had taken back (the stats count the difference).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Before {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) leases_expired: u64,
}

impl Before {
    pub(crate) fn of(b: &Breaker) -> Self {
        Self {
            fingerprint: Fingerprint::of(b),
            leases_expired: b.leases_expired(),
        }
    }
}

/// What watchers and callers see of a circuit.
pub(crate) fn snapshot_of(name: &str, inner: &CircuitInner, now: Instant) -> CircuitSnapshot {
    let b = &inner.breaker;
    CircuitSnapshot {
        name: Arc::from(name),
        state: b.state(),
        generation: b.generation(),
        open_remaining: b.open_remaining(now),
        policy_version: b.policy_version(),
        policy: b.policy().clone(),
        override_: b.override_().map(|o| OverrideSnapshot {
            kind: o.kind,
            reason: o.reason.clone(),
            actor: o.actor.clone(),
            expires_in: o.expires_at.map(|t| t.saturating_duration_since(now)),
        }),
        deleted: inner.deleted,
    }
}

/// The durable state of a circuit, as the store keeps it.
pub(crate) fn record_of(name: &str, inner: &CircuitInner, now: Instant) -> CircuitRecord {
    let mut record = CircuitRecord::from_persisted(
        name,
        &inner.breaker.persisted(),
        inner.admin_spec().cloned(),
        Clocks::at(now),
    );
    record.policy_version = inner.breaker.policy_version();
    record
}
