//! The Watch task: one stream per coordinator, subscribed to every circuit
//! this node uses, keeping each circuit's cell up to date.
//!
//! When a circuit is used for the first time the stream is re-opened with
//! the full list of names; its first event carries a fresh snapshot of all
//! of them, so nothing pushed in between is lost. When the stream fails the
//! client switches to degraded mode, reconnects with exponential backoff and
//! full jitter, and the fresh snapshot replaces any local breaker state.

use std::sync::Arc;
use std::time::Duration;

use breakerd_policy::Policy;
use breakerd_proto::v1 as pb;

use crate::backoff::Backoff;
use crate::shared::{
    CircuitShared, Inner, Word, override_from_proto, spec_from_proto, state_from_proto,
};

enum End {
    /// The set of names changed (or a circuit was deleted): re-open now.
    Resubscribe,
    /// The stream failed: degraded mode, then back off.
    Lost,
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let c = Arc::clone(&inner.common);
    let mut version = inner.registry_version.subscribe();
    let mut attempt: u32 = 0;
    loop {
        version.borrow_and_update();
        let names: Vec<String> = inner
            .registry
            .read()
            .by_idx
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        if names.is_empty() {
            // An empty Watch means "every circuit": never send one.
            if version.changed().await.is_err() {
                return;
            }
            continue;
        }
        let req = tonic::Request::new(pb::WatchRequest {
            circuits: names,
            node_id: c.node_name.clone(),
        });
        let mut client = c.client.clone();
        let open_deadline = c.config.connect_timeout + c.config.rpc_timeout;
        let mut stream = match tokio::time::timeout(open_deadline, client.watch(req)).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) {
                    tracing::warn!(code = ?status.code(), msg = status.message(), "coordinator refused the client's credentials");
                } else {
                    tracing::debug!(code = ?status.code(), msg = status.message(), "watch failed to open");
                }
                c.mark_down_quiet();
                backoff(&c.config.backoff, &mut attempt).await;
                continue;
            }
            Err(_) => {
                tracing::debug!("watch timed out opening");
                c.mark_down_quiet();
                backoff(&c.config.backoff, &mut attempt).await;
                continue;
            }
        };
        c.stats
            .watch_connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(ev)) => {
                        let deleted = apply_event(&inner, &ev);
                        // A large snapshot comes in pages: up once it is
                        // whole.
                        if ev.initial && !ev.more {
                            c.mark_up();
                            attempt = 0;
                        }
                        if deleted {
                            break End::Resubscribe;
                        }
                    }
                    Ok(None) => {
                        tracing::debug!("watch stream ended");
                        break End::Lost;
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), msg = status.message(), "watch stream failed");
                        break End::Lost;
                    }
                },
                changed = version.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break End::Resubscribe;
                }
                () = c.kick.notified() => break End::Lost,
            }
        };
        if let End::Lost = end {
            c.mark_down_quiet();
            backoff(&c.config.backoff, &mut attempt).await;
        }
    }
}

async fn backoff(b: &Backoff, attempt: &mut u32) {
    let d = b.delay(*attempt);
    *attempt = attempt.saturating_add(1);
    tokio::time::sleep(d).await;
}

/// Apply one event to the cells it names. Returns true when a circuit was
/// deleted (its cell is reset; re-subscribing re-creates it on the
/// coordinator, as this node still uses it).
fn apply_event(inner: &Inner, ev: &pb::WatchEvent) -> bool {
    let mut deleted = false;
    for snap in &ev.circuits {
        let Some(shared) = inner.by_name(&snap.name) else {
            continue;
        };
        deleted |= snap.deleted;
        apply_snapshot(&shared, snap, ev.initial);
    }
    deleted
}

/// Fold one snapshot into a circuit's cell. Initial snapshots replace the
/// cell (and any local breaker) whatever their generation, since a restarted
/// coordinator is the authority; later pushes only move it forward.
pub(crate) fn apply_snapshot(s: &CircuitShared, snap: &pb::CircuitSnapshot, initial: bool) {
    let mut slow = s.slow.lock();
    if snap.deleted {
        slow.local = None;
        s.publish(&slow, Word::UNKNOWN, 0, 0);
        return;
    }
    let cur = s.load();
    if !initial && cur.state().is_some() && snap.generation < cur.generation() {
        return;
    }
    if let Some(p) = &snap.policy {
        match Policy::default().apply(&spec_from_proto(p)) {
            Ok(policy) => {
                slow.policy = policy;
                slow.policy_version = snap.policy_version;
            }
            Err(e) => {
                tracing::warn!(circuit = %s.name, error = %e, "ignoring unusable policy from coordinator")
            }
        }
    }
    if initial {
        slow.local = None;
    }
    let state = state_from_proto(snap.state);
    let ov = snap
        .r#override
        .as_ref()
        .and_then(|o| override_from_proto(o.kind));
    let open_until = if state == Some(breakerd_policy::State::Open) && snap.open_remaining_ms > 0 {
        s.common
            .nanos_after(Duration::from_millis(snap.open_remaining_ms))
    } else {
        0
    };
    let override_until = match &snap.r#override {
        Some(o) if o.expires_in_ms > 0 => {
            s.common.nanos_after(Duration::from_millis(o.expires_in_ms))
        }
        _ => 0,
    };
    let word = Word::new(state, snap.generation, ov, slow.policy.degraded_mode());
    s.publish(&slow, word, open_until, override_until);
}
