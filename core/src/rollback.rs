//! Undoing an admin change whose commit failed, so that what is in effect
//! is what was acknowledged: a caller answered with a storage error finds
//! the circuit as it was, and a restart finds the same.
//!
//! Only what the refused change set is undone, and only where it is still
//! what that change left: a later change of the same field (acknowledged or
//! not) is kept. The circuit's state itself goes back only if nothing moved
//! it since (same generation and policy version). A deleted circuit comes
//! back when nothing took its name since. The undone state is published and
//! queued for the store like any other change, under a new generation (so
//! it never goes back).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use breakerd_policy::{Breaker, NodeId};
use dashmap::mapref::entry::Entry;

use crate::circuit::{Before, CircuitKey, record_of, snapshot_of};
use crate::registry::{Registry, now};
use crate::store::{CircuitRecord, Clocks, OverrideRecord};

/// What a refused admin change needs to be undone: the circuit's durable
/// state before it, and after it (`None`: it deleted the circuit).
#[derive(Debug, Clone)]
pub(crate) struct Undo {
    before: CircuitRecord,
    after: Option<CircuitRecord>,
}

impl Undo {
    pub(crate) fn new(before: CircuitRecord, after: Option<CircuitRecord>) -> Self {
        Self { before, after }
    }
}

/// Overrides compare by what they are, not by their expiry, which moves a
/// millisecond between two conversions of the same instant.
fn same_override(a: Option<&OverrideRecord>, b: Option<&OverrideRecord>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.kind == b.kind && a.reason == b.reason && a.actor == b.actor,
        _ => false,
    }
}

/// The record `current` with the refused change (`before` → `after`)
/// taken out where it is still in place.
fn undone(
    current: &CircuitRecord,
    before: &CircuitRecord,
    after: Option<&CircuitRecord>,
) -> CircuitRecord {
    let after_override = after.and_then(|a| a.override_.as_ref());
    let after_policy = after.and_then(|a| a.admin_policy.as_ref());
    let untouched_since = after.is_some_and(|a| {
        a.generation == current.generation && a.policy_version == current.policy_version
    });
    let mut target = current.clone();
    if untouched_since {
        target.state = before.state;
        target.open_until_ms = before.open_until_ms;
        target.consecutive_trips = before.consecutive_trips;
    }
    if !same_override(before.override_.as_ref(), after_override)
        && same_override(current.override_.as_ref(), after_override)
    {
        target.override_ = before.override_.clone();
    }
    if before.admin_policy.as_ref() != after_policy && current.admin_policy.as_ref() == after_policy
    {
        target.admin_policy = before.admin_policy.clone();
    }
    target
}

impl Registry {
    /// Undoes the refused admin change `undo` (see the module docs).
    pub(crate) fn undo(&self, undo: Undo) {
        let name = undo.before.name.as_str();
        loop {
            let Some(circuit) = self.lookup(name) else {
                if undo.after.is_none() && self.bring_back(&undo.before) {
                    return;
                }
                if undo.after.is_some() {
                    // Deleted since: nothing of the refused change is left.
                    return;
                }
                continue;
            };
            let mut inner = circuit.inner.lock();
            if inner.deleted {
                continue;
            }
            let now = now();
            let current = record_of(name, &inner, now);
            let target = undone(&current, &undo.before, undo.after.as_ref());
            let same = target.state == current.state
                && target.open_until_ms == current.open_until_ms
                && target.consecutive_trips == current.consecutive_trips
                && same_override(target.override_.as_ref(), current.override_.as_ref())
                && target.admin_policy == current.admin_policy;
            if same {
                return;
            }
            let (policy, spec, _) = self.policy_of(&target);
            let mut saved = target.to_persisted(Clocks::at(now));
            saved.override_ = match (&target.override_, inner.breaker.override_()) {
                // Keep the exact expiry instant of an override kept as is.
                (Some(t), Some(cur)) if same_override(Some(t), current.override_.as_ref()) => {
                    Some(cur.clone())
                }
                _ => saved.override_,
            };
            saved.generation = current.generation + 1;
            let before = Before::of(&inner.breaker);
            let version = inner.breaker.policy_version() + 1;
            let mut breaker = Breaker::restore(policy, NodeId::from_name(name).0, saved, now);
            breaker.raise_policy_version(version);
            inner.breaker = breaker;
            match spec {
                Some(spec) => inner.set_admin_spec(spec),
                None => inner.clear_admin_spec(),
            }
            tracing::warn!(circuit = name, "admin change not durable: undone");
            self.after_change(&circuit, &mut inner, before, now, now);
            return;
        }
    }

    /// Puts back a circuit a refused delete removed, unless its name was
    /// taken since (then `false`: undo on the circuit holding it).
    fn bring_back(&self, before: &CircuitRecord) -> bool {
        let clocks = Clocks::now();
        let floor = self
            .removed_generation
            .load(Ordering::Acquire)
            .max(before.generation)
            + 1;
        let Some((circuit, _capped)) = self.circuit_from_record(before, clocks, floor) else {
            return true;
        };
        match self.circuits.entry(CircuitKey(Arc::clone(&circuit))) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                // It held a slot before the refused delete: it gets it back
                // whatever the cap, as restored circuits do.
                self.reserved.fetch_add(1, Ordering::AcqRel);
                let mut inner = circuit.inner.lock();
                let shard = v.insert(());
                self.publish(Arc::new(snapshot_of(&circuit.name, &inner, clocks.mono)));
                drop(shard);
                self.persist(&circuit, &inner, clocks.mono);
                self.schedule(&circuit, &mut inner, clocks.mono);
                tracing::warn!(circuit = %circuit.name.as_str(), "delete not durable: circuit restored");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use breakerd_policy::{OverrideKind, PolicySpec, State};

    use super::*;

    fn rec(generation: u64, version: u64) -> CircuitRecord {
        CircuitRecord {
            name: "c".into(),
            state: State::Closed,
            generation,
            open_until_ms: None,
            consecutive_trips: 0,
            admin_policy: None,
            override_: None,
            policy_version: version,
        }
    }

    fn forced() -> Option<OverrideRecord> {
        Some(OverrideRecord {
            kind: OverrideKind::ForcedOpen,
            reason: "r".into(),
            actor: "a".into(),
            expires_at_ms: None,
        })
    }

    #[test]
    fn only_what_the_refused_change_set_is_undone() {
        let before = rec(1, 1);
        let mut after = rec(2, 1);
        after.state = State::Open;
        after.override_ = forced();
        // Nothing since: all of it goes back.
        let t = undone(&after, &before, Some(&after));
        assert_eq!((t.state, t.override_.is_none()), (State::Closed, true));
        // A later policy change is kept, and the state it moved stays.
        let mut later = after.clone();
        later.policy_version = 2;
        later.admin_policy = Some(PolicySpec {
            consecutive_failures: Some(4),
            ..Default::default()
        });
        let t = undone(&later, &before, Some(&after));
        assert!(t.override_.is_none(), "the refused override goes");
        assert_eq!(t.admin_policy, later.admin_policy, "the later policy stays");
        assert_eq!(t.state, State::Open, "the state moved since: not reverted");
        // A later override replaces the refused one: it stays.
        let mut replaced = after.clone();
        replaced.generation = 3;
        replaced.override_.as_mut().unwrap().reason = "other".into();
        let t = undone(&replaced, &before, Some(&after));
        assert_eq!(t.override_, replaced.override_);
    }
}
