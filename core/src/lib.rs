//! breakerd-core: the coordinator's core, every circuit's authoritative
//! breaker, with no transport in it. The gRPC and HTTP adapters of the
//! `breakerd` crate check requests, hand the core plain calls and map its
//! [`CoreError`]s to their own codes.
//!
//! [`Registry`] holds the circuits (a `DashMap` of small per-circuit locks),
//! answers acquire / report / watch / admin calls, publishes every change of
//! a circuit to watchers through one broadcast hub, and runs one background
//! task ([`Registry::spawn_background`]) that applies deadlines (open
//! timers, probe leases, override expiry) and evicts idle circuits. It
//! persists through one seam, [`DurableState`], and answers a change that
//! must survive a crash (an admin change, a trip) only once it is durable.
//! A transport that limits how many circuits a caller may create hands it
//! an [`Admission`], charged where circuits are created.
//!
//! Time comes from `tokio::time::Instant::now()`, so tests drive it with a
//! paused clock.
//!
//! One file per concern; each uses only files listed before it:
//! - `error`, `name`: why a call is refused; the naming rule.
//! - `glob`, `resolver`: the configured policy of a new circuit.
//! - [`store`]: the embedded store, what must survive a crash and restart.
//! - `durable`: the durable-state seam, [`DurableState`]: the one interface
//!   through which the registry persists (the store sits behind it; a
//!   replicated one will).
//! - `admission`: the hook a transport hands the registry to limit how many
//!   circuits a caller may create ([`Admission`]).
//! - `types`: what goes into and comes out of the registry.
//! - `circuit_name`, `circuit`: one circuit, its key, its snapshots and
//!   records.
//! - `stats`: the counters for metrics.
//! - `registry`: the [`Registry`] struct, built empty or restored.
//! - `driver`: the background task (deadlines, eviction).
//! - `table`: the circuit table: lookup, create, eviction, deadlines.
//! - `watch`: watch subscriptions and resyncs.
//! - `data_plane`: acquire, report, watch.
//! - `admin`: overrides, policies, reset, delete, and the wait for
//!   durability.
//! - `query`: get, list, the audit log, stats.

#![forbid(unsafe_code)]

pub mod store;

mod admin;
mod admission;
mod circuit;
mod circuit_name;
mod data_plane;
mod driver;
mod durable;
mod error;
mod glob;
mod name;
mod query;
mod registry;
mod resolver;
mod rollback;
mod stats;
mod table;
mod types;
mod watch;

#[cfg(test)]
mod tests;

pub use admission::{Admission, AdmitAll, Refused};
pub use durable::{DurableState, Flush};
pub use error::CoreError;
pub use glob::glob_match;
pub use name::{MAX_NAME_LEN, NameProblem, validate_circuit_name, validate_node_id};
pub use registry::Registry;
pub use resolver::{PolicyResolver, ResolverError, merge_spec};
pub use stats::{RegistryStats, TransitionCount};
pub use types::{
    AcquireOutcome, CircuitDetail, CircuitSnapshot, DEFAULT_PAGE_SIZE, ListQuery, MAX_ACTOR_LEN,
    MAX_OUTCOME_AGE, MAX_PAGE_SIZE, MAX_REASON_LEN, OutcomeIn, OverrideSnapshot, Page,
    RegistryConfig, ReportSummary, TransitionView,
};
pub use watch::{Subscription, WatchPage, WatchUpdate};
