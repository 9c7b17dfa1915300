//! breakerd: the centralized circuit-breaker coordinator.
//!
//! - The core (every circuit's authoritative breaker, deadlines, watch
//!   fan-out and the store) is the `breakerd-core` crate; no transport in it.
//! - [`grpc`]: the `breakerd.v1` services over the core, the one mapping of
//!   core errors to gRPC codes, and per-request trace spans.
//! - [`config`]: TOML file, flags and `BREAKERD_*` variables, checked at
//!   start; owns every section (auth, TLS, HTTP, logging) and the start-up
//!   warnings. The modules that serve get checked values and never read it.
//! - [`token`]: the bearer-token type both ports compare against.
//! - [`shutdown`]: the signal that ends streams on both ports.
//! - [`telemetry`]: JSON or text logs.
//! - [`app`]: [`app::serve`], shared by the binary and the end-to-end tests.
//! - [`http`]: the operators' HTTP side port: `/metrics`, dashboard, JSON API.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod grpc;
pub mod http;
pub mod middleware;
pub mod shutdown;
pub mod telemetry;
pub mod token;
