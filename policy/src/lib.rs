//! The breakerd policy engine: a pure circuit-breaker state machine.
//!
//! No I/O, no clock of its own, no randomness of its own: every method takes
//! `now`, and jitter comes from a per-circuit seed. The coordinator runs it
//! for every circuit, and the client runs the very same code in `LOCAL`
//! degraded mode, so local and central decisions cannot drift apart.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use breakerd_policy::{Breaker, NodeId, Outcome, Policy, Report, State};
//!
//! let t0 = Instant::now();
//! let mut b = Breaker::new(Policy::default(), 1, 42, t0);
//! for _ in 0..5 {
//!     let d = b.acquire(NodeId(1), t0);
//!     b.record(&Report { generation: d.generation(), lease: None, outcome: Outcome::Failure,
//!                        latency: Duration::ZERO, node: NodeId(1), completed_at: None }, t0);
//! }
//! assert_eq!(b.state(), State::Open);
//! assert!(!b.acquire(NodeId(1), t0 + Duration::from_secs(59)).is_allowed());
//! ```

#![forbid(unsafe_code)]

pub mod bounds;
mod breaker;
mod name;
mod policy;
mod quorum;
mod types;
mod window;

pub use bounds::{
    CappedDeadlines, MAX_BACKOFF_MULTIPLIER, MAX_CONSECUTIVE_FAILURES, MAX_COUNT_WINDOW,
    MAX_MINIMUM_CALLS, MAX_OPEN, MAX_OVERRIDE_TTL, MAX_PROBE_LEASE, MAX_PROBES, MAX_QUORUM_NODES,
    MAX_SLOW_CALL, MAX_TIME_WINDOW, MAX_WINDOW_BUCKETS,
};
pub use breaker::{Breaker, HISTORY_LEN};
pub use name::{MAX_NAME_LEN, NameProblem, name_problem};
pub use policy::{DegradedMode, InvalidPolicy, Policy, PolicySpec, WindowKind};
pub use types::{
    Counters, Decision, Generation, Lease, LeaseId, NodeId, Outcome, Override, OverrideKind,
    Persisted, Recorded, RejectReason, Report, State, Transition, TransitionCause,
};
