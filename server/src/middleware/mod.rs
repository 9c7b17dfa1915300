//! The gRPC server's tower middleware, one folder each in tower's layout
//! (`mod.rs` the service, `layer.rs` the layer, `future.rs` and `error.rs`
//! where it has a future or an error of its own). [`crate::app`] stacks
//! them outermost first:
//!
//! - [`trace`]: one span per request with the caller's trace id, echoed in
//!   `x-trace-id`;
//! - [`metrics`]: per-method latency and calls in flight, for `/metrics`;
//! - [`auth`]: bearer tokens; innermost, so refusals are traced and counted
//!   like any answer, and answered before a handler could change anything.

pub mod auth;
pub mod metrics;
pub mod trace;
