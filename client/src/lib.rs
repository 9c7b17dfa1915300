//! Rust client for breakerd, the centralized circuit-breaker coordinator.
//!
//! Ask before calling a dependency at the cost of a memory read, report how
//! the call went in batches, and keep working when the coordinator is gone.
//!
//! * **Decisions from pushed state.** One [`Coordinator`] keeps one Watch
//!   stream subscribed to every circuit this node uses. A `CLOSED` circuit
//!   is allowed by [`Circuit::acquire`] from an atomic read, with no network
//!   round trip; an `OPEN` one is rejected locally until its deadline; only
//!   half-open probes (and the very first use of a name) ask the coordinator,
//!   bounded by the RPC timeout (default 30 ms).
//! * **Batched reports.** A [`Permit`] records its outcome once, into a
//!   bounded queue (a full queue drops the outcome and counts it in
//!   [`Stats::dropped_reports`]; the caller never blocks). A background task
//!   sends outcomes in order over one `ReportStream`, in batches: at most
//!   `flush_interval` (10 ms) after the first outcome of a batch, on a
//!   per-client grid with a random phase so that nodes started together do
//!   not flush in lockstep; as soon as a batch is full (512); and at once
//!   for a failure, a probe outcome or a [`Coordinator::flush`], so the fleet
//!   trips within one flush of the failure that crosses the threshold. Each
//!   outcome says how long it waited in its batch, so the coordinator counts
//!   failures in completion order. While the stream is down outcomes are
//!   not sent (counted in [`Stats::unsent_reports`]).
//! * **Degraded mode, only on evidence.** The client takes the coordinator
//!   for gone only when the Watch stream breaks (or cannot be opened), an
//!   RPC's connection fails, or [`Builder::degrade_after_missed_deadlines`]
//!   (default 3) RPC deadlines are missed in a row; misses of RPCs that
//!   overlapped (one stall of the node) count once. One slow RPC is not
//!   evidence: a call never waits for it, but is decided from the last
//!   pushed state (a half-open probe request that missed its deadline gets
//!   no probe). While degraded, each circuit follows its [`DegradedMode`]
//!   from the last snapshot, with no network wait, **fail-static**: a
//!   pushed `OPEN` is honoured until its deadline, and a pushed
//!   `HALF_OPEN` (or an `OPEN` past its deadline) gives this node no probe
//!   until the coordinator answers again or one probe lease has passed.
//!   Then `LOCAL` (default) runs the very same [`breakerd_policy::Breaker`]
//!   the coordinator runs, built from the last known policy, fed this
//!   node's own outcomes and started in the state the node was following
//!   (closed, or half-open: never a fresh closed breaker in place of an
//!   open circuit; it can trip on its own, and is discarded when the
//!   coordinator is back); `FAIL_OPEN` allows what the fail-static rule
//!   does not refuse; `FAIL_CLOSED` refuses every call with
//!   [`Error::Unavailable`]. An operator override from the last snapshot
//!   still applies. Outcomes recorded while unreachable are not replayed
//!   later. The client reconnects with exponential backoff and full jitter
//!   ([`backoff`]).
//! * **Typed errors.** [`Error::Open`] ("circuit open, retry after …") and
//!   [`Error::Unavailable`] ("coordinator unreachable, failing closed") are
//!   distinct, and [`CallError`] separates them from the dependency's own
//!   error.
//!
//! ```no_run
//! # async fn fetch() -> Result<u32, std::io::Error> { Ok(1) }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use breakerd_client::{CallError, Coordinator};
//!
//! let coordinator = Coordinator::builder()
//!     .endpoint("http://127.0.0.1:50051")
//!     .node_id("web-1")
//!     .build()?;
//! let payments = coordinator.circuit("payments")?;
//! match payments.call(Duration::from_millis(500), || fetch()).await {
//!     Ok(v) => println!("got {v}"),
//!     Err(CallError::Rejected(e)) => println!("not calling: {e}"),
//!     Err(CallError::Timeout(d)) => println!("timed out after {d:?}"),
//!     Err(CallError::Inner(e)) => println!("payments failed: {e}"),
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

// Imports run one way: the public handles (coordinator, circuit, permit,
// builder) use the engine (report and watch tasks, degraded mode), which
// uses the shared state (`shared/`); error, backoff and trace are leaves
// any layer may use. retry, fallback and layer sit on top of the handles.
pub mod backoff;
mod builder;
mod circuit;
mod coordinator;
mod degraded;
mod error;
mod permit;
mod report;
mod shared;
pub mod trace;
mod watch;

pub mod fallback;
pub mod layer;
pub mod retry;

pub use breakerd_policy::MAX_NAME_LEN;
pub use breakerd_policy::{DegradedMode, Outcome, OverrideKind, RejectReason, State};
pub use builder::{
    Builder, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEGRADE_AFTER_MISSED,
    DEFAULT_FLUSH_INTERVAL, DEFAULT_QUEUE_CAPACITY, DEFAULT_RPC_TIMEOUT,
};
pub use circuit::{Circuit, validate_name};
pub use coordinator::{Coordinator, Stats};
pub use error::{CallError, Error, RefusalCode};
pub use permit::Permit;
pub use shared::{CircuitView, ClientTls};
pub use trace::with_trace;
