//! The circuit cell: the latest state the coordinator pushed for one
//! circuit, shared by every handle and permit of it.
//!
//! Readers (the hot path) load the packed [`Word`] and the deadlines with
//! atomic loads and never lock. Writers (the watch task and Acquire
//! answers) serialise on the small per-circuit `slow` mutex, then publish
//! the new word and tell the circuit's subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use breakerd_policy::{Breaker, DegradedMode, NodeId, OverrideKind, Policy, RejectReason, State};
use breakerd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::common::Common;
use super::convert::state_from_proto;
use super::word::Word;
use crate::error::Error;

/// What this node currently knows about a circuit (see
/// [`Circuit::view`](crate::Circuit::view) and
/// [`Circuit::subscribe`](crate::Circuit::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitView {
    /// Last known breaker state; `None` until the coordinator has told.
    pub state: Option<State>,
    /// Generation of that state.
    pub generation: u64,
    /// Operator override in force, if any.
    pub override_kind: Option<OverrideKind>,
    /// What the client does for this circuit while the coordinator is
    /// unreachable.
    pub degraded_mode: DegradedMode,
    /// While open: when the coordinator will move it to half-open, on this
    /// node's clock.
    pub open_until: Option<Instant>,
    /// Version of the circuit's policy.
    pub policy_version: u64,
}

impl CircuitView {
    fn unknown() -> Self {
        Self {
            state: None,
            generation: 0,
            override_kind: None,
            degraded_mode: DegradedMode::Local,
            open_until: None,
            policy_version: 0,
        }
    }

    /// True when calls are rejected without asking: open, or forced open.
    pub fn is_rejecting(&self) -> bool {
        self.override_kind == Some(OverrideKind::ForcedOpen)
            || (self.override_kind.is_none() && self.state == Some(State::Open))
    }
}

/// The part of a circuit only writers touch.
pub(crate) struct Slow {
    /// Last policy the coordinator sent (defaults until then).
    pub(crate) policy: Policy,
    pub(crate) policy_version: u64,
    /// The local breaker of `LOCAL` degraded mode; exists only while the
    /// coordinator is unreachable and is dropped on the next snapshot.
    pub(crate) local: Option<Breaker>,
}

/// Shared by every handle and permit of one circuit.
pub(crate) struct CircuitShared {
    pub(crate) name: Arc<str>,
    /// Index in the coordinator's registry (reports carry it, not the name).
    pub(crate) idx: u32,
    pub(crate) word: AtomicU64,
    /// Open deadline, in nanoseconds since `Common::epoch` (0: none).
    pub(crate) open_until: AtomicU64,
    /// Override expiry, in nanoseconds since `Common::epoch` (0: none).
    pub(crate) override_until: AtomicU64,
    pub(crate) slow: Mutex<Slow>,
    pub(crate) view: watch::Sender<CircuitView>,
    pub(crate) common: Arc<Common>,
}

impl CircuitShared {
    pub(crate) fn new(name: Arc<str>, idx: u32, common: Arc<Common>) -> Self {
        Self {
            name,
            idx,
            word: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            override_until: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                policy: Policy::default(),
                policy_version: 0,
                local: None,
            }),
            view: watch::Sender::new(CircuitView::unknown()),
            common,
        }
    }

    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// Time left until `deadline` (nanoseconds since the epoch), if any.
    pub(crate) fn remaining(&self, deadline: u64) -> Option<Duration> {
        let now = self.common.now_nanos();
        (deadline > now).then(|| Duration::from_nanos(deadline - now))
    }

    /// The seed of the local breaker's jitter: stable per circuit name.
    pub(crate) fn seed(&self) -> u64 {
        NodeId::from_name(&self.name).0
    }

    /// Publish a new word (and deadlines) under the writer lock, and tell
    /// subscribers.
    pub(crate) fn publish(&self, slow: &Slow, word: Word, open_until: u64, override_until: u64) {
        self.open_until.store(open_until, Ordering::Release);
        self.override_until.store(override_until, Ordering::Release);
        self.word.store(word.0, Ordering::Release);
        let view = CircuitView {
            state: word.state(),
            generation: word.generation(),
            override_kind: word.override_kind(),
            degraded_mode: word.degraded_mode(),
            open_until: (open_until != 0).then(|| self.common.instant_at(open_until)),
            policy_version: slow.policy_version,
        };
        self.view.send_if_modified(|v| {
            if *v == view {
                false
            } else {
                *v = view;
                true
            }
        });
    }

    /// Fold a unary Acquire answer into the cell: it seeds an unknown cell
    /// and moves a known one forward, never back.
    pub(crate) fn absorb(&self, r: &pb::AcquireResponse) {
        let Some(state) = state_from_proto(r.state) else {
            return;
        };
        let slow = self.slow.lock();
        let cur = self.load();
        if cur.state().is_some() && r.generation <= cur.generation() {
            return;
        }
        let open_until = if state == State::Open && r.retry_after_ms > 0 {
            self.common
                .nanos_after(Duration::from_millis(r.retry_after_ms))
        } else {
            0
        };
        let word = Word::new(
            Some(state),
            r.generation,
            cur.override_kind(),
            cur.degraded_mode(),
        );
        let ov_until = self.override_until.load(Ordering::Acquire);
        self.publish(&slow, word, open_until, ov_until);
    }

    pub(crate) fn open_error(
        &self,
        state: State,
        reason: RejectReason,
        retry_after: Duration,
    ) -> Error {
        Error::Open {
            circuit: Arc::clone(&self.name),
            state,
            reason,
            retry_after,
        }
    }

    /// The rejection for a circuit an operator forced open.
    pub(crate) fn forced_open(&self, w: Word) -> Error {
        let retry_after = self
            .remaining(self.override_until.load(Ordering::Acquire))
            .unwrap_or(FORCED_OPEN_RETRY);
        self.open_error(
            w.state().unwrap_or(State::Open),
            RejectReason::ForcedOpen,
            retry_after,
        )
    }
}

/// `retry_after` of a forced-open circuit whose override never lapses: the
/// next check is worthwhile once a watch push could have cleared it.
const FORCED_OPEN_RETRY: Duration = Duration::from_secs(1);
