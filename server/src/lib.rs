//! breakerd: the centralized circuit-breaker coordinator.
//!
//! - The core (every circuit's authoritative breaker, deadlines, watch
//!   fan-out and the store) is the `breakerd-core` crate; no transport in it.
//! - [`grpc`]: the `breakerd.v1` services over the core; [`grpc::convert`]
//!   is the one place for proto conversions and the mapping of core errors
//!   to gRPC codes.
//! - [`middleware`]: the gRPC server's tower layers, one folder each in
//!   tower's layout: [`middleware::trace`] (trace ids and spans),
//!   [`middleware::metrics`] (per-method latency and in-flight calls),
//!   [`middleware::auth`] (bearer tokens).
//! - [`http`]: the operators' HTTP side port on axum: `/metrics`,
//!   dashboard, JSON API.
//! - [`config`]: TOML file, flags and `BREAKERD_*` variables, checked at
//!   start; owns every section (CLI, file, auth, TLS, HTTP, logging) and
//!   the start-up warnings. The modules that serve get checked values and
//!   never read it.
//! - [`listener`]: the gRPC port's accept loop: connection cap, preface
//!   timeout, back-off on accept errors.
//! - [`token`]: the bearer-token type both ports compare against.
//! - [`shutdown`]: the signal that ends streams and tasks on both ports.
//! - [`telemetry`]: JSON or text logs.
//! - [`app`]: [`app::serve`], shared by the binary and the end-to-end
//!   tests: wires all of the above together.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod middleware;
pub mod shutdown;
pub mod telemetry;
pub mod token;
