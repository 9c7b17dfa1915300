//! Admin changes: per-circuit policies and overrides, reset and delete.
//! Each is checked (who and why), audited with the circuit's durable state
//! before and after, and published like any other change; and the wait for
//! durability that acknowledges them (undoing a change that did not become
//! durable).

use std::sync::Arc;
use std::time::Duration;

use breakerd_policy::{MAX_OVERRIDE_TTL, Override, OverrideKind, PolicySpec};

use crate::admission::{Admission, AdmitAll, Refused};
use crate::circuit::{record_of, snapshot_of};
use crate::error::CoreError;
use crate::name::validate_circuit_name;
use crate::registry::{Registry, now};
use crate::resolver::merge_spec;
use crate::rollback::Undo;
use crate::store::{AuditRecord, CircuitRecord, Clocks};
use crate::types::{CircuitDetail, MAX_ACTOR_LEN, MAX_REASON_LEN};

fn check_audit(actor: &str, reason: &str) -> Result<(), CoreError> {
    let field = |name: &str, value: &str, max: usize| {
        if value.trim().is_empty() {
            Err(CoreError::InvalidArgument(format!("{name} is required")))
        } else if value.len() > max {
            Err(CoreError::InvalidArgument(format!(
                "{name} has {} bytes; the limit is {max}",
                value.len()
            )))
        } else {
            Ok(())
        }
    };
    field("actor", actor, MAX_ACTOR_LEN)?;
    field("reason", reason, MAX_REASON_LEN)
}

/// Who changed what on which circuit, and why: the subject of an audit
/// record.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    actor: &'a str,
    action: &'a str,
    reason: &'a str,
    circuit: &'a str,
}

impl<'a> Change<'a> {
    fn new(actor: &'a str, action: &'a str, reason: &'a str, circuit: &'a str) -> Self {
        Self {
            actor,
            action,
            reason,
            circuit,
        }
    }
}

impl Registry {
    /// Waits until every change made so far is durable (a no-op without a
    /// store). Shutdown calls it so that transitions queued since reach
    /// the disk.
    pub async fn durable(&self) -> Result<(), CoreError> {
        self.durable_since(self.mark()).await
    }

    /// A position in the stream of changes queued for the store: see
    /// [`DurableState::mark`](crate::durable::DurableState::mark).
    pub(crate) fn mark(&self) -> u64 {
        self.durable_state.as_ref().map_or(0, |d| d.mark())
    }

    /// Waits until every change made so far is durable; fails if anything
    /// queued since `mark` was not made durable.
    pub(crate) async fn durable_since(&self, mark: u64) -> Result<(), CoreError> {
        match &self.durable_state {
            Some(durable) => durable
                .flush(mark)
                .await
                .map_err(|e| CoreError::Storage(e.to_string())),
            None => Ok(()),
        }
    }

    /// `change` (queued after `mark`), once it would survive a crash. A
    /// report batch that moved a circuit is answered through it. A failed
    /// wait is [`CoreError::Storage`]: the trip is in force in memory and
    /// is written again with the next commit.
    pub(crate) async fn acknowledge<T, E: From<CoreError>>(
        &self,
        mark: u64,
        change: Result<T, E>,
    ) -> Result<T, E> {
        let value = change?;
        self.durable_since(mark).await?;
        Ok(value)
    }

    /// An admin `change` (queued after `mark`), once it would survive a
    /// crash: the one wait for durability every admin change is answered
    /// through. When it is not durable, the change is undone before the
    /// caller hears [`CoreError::Storage`], so a refused change is never in
    /// effect (see `rollback.rs`).
    async fn acknowledge_admin<T, E: From<CoreError>>(
        &self,
        mark: u64,
        change: Result<(T, Undo), E>,
    ) -> Result<T, E> {
        let (value, undo) = change?;
        if let Err(e) = self.durable_since(mark).await {
            self.undo(undo);
            return Err(e.into());
        }
        Ok(value)
    }

    /// Changes the admin policy of `name` (creating the circuit): the set
    /// fields of `spec` are merged onto its current admin policy, and the
    /// result is layered over the configured policy. An invalid result
    /// changes nothing.
    ///
    /// Answered once the change is durable.
    pub async fn set_policy(
        &self,
        name: &str,
        spec: &PolicySpec,
        actor: &str,
        reason: &str,
    ) -> Result<CircuitDetail, CoreError> {
        self.set_policy_admitted(name, spec, actor, reason, &AdmitAll)
            .await
            .map_err(Refused::into_core)
    }

    /// [`set_policy`](Self::set_policy), creating the circuit only if
    /// `admission` admits it.
    pub async fn set_policy_admitted<A: Admission>(
        &self,
        name: &str,
        spec: &PolicySpec,
        actor: &str,
        reason: &str,
        admission: &A,
    ) -> Result<CircuitDetail, Refused<A::Refusal>> {
        let mark = self.mark();
        let change = self.apply_set_policy(name, spec, actor, reason, admission);
        self.acknowledge_admin(mark, change).await
    }

    /// Sets an operator override on `name` (creating the circuit), lapsing
    /// after `expires_in` when given (1 ms up to [`MAX_OVERRIDE_TTL`], else
    /// `InvalidArgument` naming `expires_in_ms`).
    ///
    /// Answered once the change is durable.
    pub async fn set_override(
        &self,
        name: &str,
        kind: OverrideKind,
        actor: &str,
        reason: &str,
        expires_in: Option<Duration>,
    ) -> Result<CircuitDetail, CoreError> {
        self.set_override_admitted(name, kind, actor, reason, expires_in, &AdmitAll)
            .await
            .map_err(Refused::into_core)
    }

    /// [`set_override`](Self::set_override), creating the circuit only if
    /// `admission` admits it.
    pub async fn set_override_admitted<A: Admission>(
        &self,
        name: &str,
        kind: OverrideKind,
        actor: &str,
        reason: &str,
        expires_in: Option<Duration>,
        admission: &A,
    ) -> Result<CircuitDetail, Refused<A::Refusal>> {
        let mark = self.mark();
        let change = self.apply_set_override(name, kind, actor, reason, expires_in, admission);
        self.acknowledge_admin(mark, change).await
    }

    /// Removes the operator override of `name`, if any (a no-op when there
    /// is none).
    ///
    /// Answered once the change is durable.
    pub async fn clear_override(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<CircuitDetail, CoreError> {
        let mark = self.mark();
        let change = self.apply_clear_override(name, actor, reason);
        self.acknowledge_admin(mark, change).await
    }

    /// Puts `name` back to closed with fresh counters under a new
    /// generation; its override and policy stay.
    ///
    /// Answered once the change is durable.
    pub async fn reset(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<CircuitDetail, CoreError> {
        let mark = self.mark();
        let change = self.apply_reset(name, actor, reason);
        self.acknowledge_admin(mark, change).await
    }

    /// Forgets `name`, its override and its admin policy. Watchers receive a
    /// `deleted` snapshot.
    ///
    /// Answered once the change is durable.
    pub async fn delete(&self, name: &str, actor: &str, reason: &str) -> Result<(), CoreError> {
        let mark = self.mark();
        let change = self.apply_delete(name, actor, reason);
        self.acknowledge_admin(mark, change).await
    }
}

impl Registry {
    /// Records an admin change: a structured log line and, with a store, an
    /// audit record with the circuit's durable state before and after.
    fn audit(
        &self,
        change: Change<'_>,
        before: Option<CircuitRecord>,
        after: Option<CircuitRecord>,
    ) {
        let json = |r: &Option<CircuitRecord>| {
            r.as_ref()
                .and_then(|r| serde_json::to_string(r).ok())
                .unwrap_or_else(|| "null".to_owned())
        };
        tracing::info!(
            target: "breakerd::audit",
            actor = change.actor,
            action = change.action,
            reason = change.reason,
            circuit = change.circuit,
            before = %json(&before),
            after = %json(&after),
            "admin change"
        );
        if let Some(durable) = &self.durable_state {
            let at_ms = Clocks::now().unix_ms;
            durable.audit(AuditRecord {
                at_ms,
                actor: change.actor.to_owned(),
                action: change.action.to_owned(),
                circuit: change.circuit.to_owned(),
                reason: change.reason.to_owned(),
                before,
                after,
            });
        }
    }

    /// The change of [`set_policy`](Self::set_policy), made and queued for
    /// the store, not waiting for it to be durable.
    fn apply_set_policy<A: Admission>(
        &self,
        name: &str,
        spec: &PolicySpec,
        actor: &str,
        reason: &str,
        admission: &A,
    ) -> Result<(CircuitDetail, Undo), Refused<A::Refusal>> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let base = self.resolver.resolve_shared(name);
        // Refuse before creating anything when the change cannot be valid
        // even on a fresh circuit.
        if self.lookup(name).is_none() {
            base.apply(spec).map_err(CoreError::from)?;
        }
        let now = now();
        self.with_created(name, now, admission, |circuit, inner| {
            let merged = merge_spec(inner.admin_spec().unwrap_or(&PolicySpec::default()), spec);
            let policy = base.apply(&merged)?;
            let before = record_of(&circuit.name, inner, now);
            inner.set_admin_spec(merged);
            inner.breaker.set_policy(policy, now);
            let after = record_of(&circuit.name, inner, now);
            let undo = Undo::new(before.clone(), Some(after.clone()));
            self.audit(
                Change::new(actor, "set_policy", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok((self.detail_of(circuit, inner, now), undo))
        })
    }

    /// The change of [`set_override`](Self::set_override), made and queued
    /// for the store, not waiting for it to be durable.
    fn apply_set_override<A: Admission>(
        &self,
        name: &str,
        kind: OverrideKind,
        actor: &str,
        reason: &str,
        expires_in: Option<Duration>,
        admission: &A,
    ) -> Result<(CircuitDetail, Undo), Refused<A::Refusal>> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        let expires_at = match expires_in {
            None => None,
            Some(d) if d.is_zero() || d > MAX_OVERRIDE_TTL => {
                return Err(Refused::Core(CoreError::InvalidArgument(format!(
                    "expires_in_ms: must be within 1..={} (no expiry keeps the override until cleared), not {}",
                    MAX_OVERRIDE_TTL.as_millis(),
                    d.as_millis()
                ))));
            }
            Some(d) => Some(now + d),
        };
        self.with_created(name, now, admission, |circuit, inner| {
            let before = record_of(&circuit.name, inner, now);
            inner.breaker.set_override(
                Override {
                    kind,
                    reason: reason.to_owned(),
                    actor: actor.to_owned(),
                    expires_at,
                },
                now,
            );
            let after = record_of(&circuit.name, inner, now);
            let undo = Undo::new(before.clone(), Some(after.clone()));
            self.audit(
                Change::new(actor, "set_override", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok((self.detail_of(circuit, inner, now), undo))
        })
    }

    /// The change of [`clear_override`](Self::clear_override), made and
    /// queued for the store, not waiting for it to be durable.
    fn apply_clear_override(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(CircuitDetail, Undo), CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        self.with_existing(name, now, |circuit, inner| {
            let before = record_of(&circuit.name, inner, now);
            inner.breaker.clear_override(now);
            let after = record_of(&circuit.name, inner, now);
            let undo = Undo::new(before.clone(), Some(after.clone()));
            self.audit(
                Change::new(actor, "clear_override", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok((self.detail_of(circuit, inner, now), undo))
        })
    }

    /// The change of [`reset`](Self::reset), made and queued for the
    /// store, not waiting for it to be durable.
    fn apply_reset(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(CircuitDetail, Undo), CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        self.with_existing(name, now, |circuit, inner| {
            let before = record_of(&circuit.name, inner, now);
            inner.breaker.reset(now);
            let after = record_of(&circuit.name, inner, now);
            let undo = Undo::new(before.clone(), Some(after.clone()));
            self.audit(
                Change::new(actor, "reset", reason, &circuit.name),
                Some(before),
                Some(after),
            );
            Ok((self.detail_of(circuit, inner, now), undo))
        })
    }

    /// The change of [`delete`](Self::delete), made and queued for the
    /// store, not waiting for it to be durable.
    fn apply_delete(&self, name: &str, actor: &str, reason: &str) -> Result<((), Undo), CoreError> {
        validate_circuit_name(name)?;
        check_audit(actor, reason)?;
        let now = now();
        loop {
            let circuit = self.lookup(name).ok_or_else(|| CoreError::NotFound {
                name: name.to_owned(),
            })?;
            let mut inner = circuit.inner.lock();
            if inner.deleted {
                continue;
            }
            let before = record_of(&circuit.name, &inner, now);
            self.remove_locked(&circuit, &mut inner);
            if let Some(durable) = &self.durable_state {
                durable.forget(&circuit.name);
            }
            let undo = Undo::new(before.clone(), None);
            self.audit(
                Change::new(actor, "delete", reason, &circuit.name),
                Some(before),
                None,
            );
            self.publish(Arc::new(snapshot_of(&circuit.name, &inner, now)));
            return Ok(((), undo));
        }
    }
}
