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
//! * **Batched reports.** A [`Permit`] records its outcome once; outcomes
//!   travel in batches over one `ReportStream` (see [`report`]).
//! * **Degraded mode.** While the coordinator is unreachable each circuit
//!   follows its degraded mode (`LOCAL` breaker, `FAIL_OPEN`,
//!   `FAIL_CLOSED`) with no network wait (see [`degraded`]); the client
//!   reconnects with exponential backoff and full jitter ([`backoff`]).
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

pub mod backoff;
mod builder;
mod circuit;
mod coordinator;
pub mod degraded;
mod error;
mod permit;
pub mod report;
pub mod trace;
mod watch;
mod wire;

pub mod fallback;
pub mod layer;
pub mod retry;

pub use breakerd_policy::MAX_NAME_LEN;
pub use breakerd_policy::{DegradedMode, Outcome, OverrideKind, RejectReason, State};
pub use builder::{
    Builder, ClientTls, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_RPC_TIMEOUT,
};
pub use circuit::{Circuit, CircuitView, validate_name};
pub use coordinator::{Coordinator, Stats};
pub use error::{CallError, Error};
pub use permit::Permit;
pub use trace::with_trace;

pub(crate) use coordinator::TaskGuard;
