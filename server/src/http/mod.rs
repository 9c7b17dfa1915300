//! The operators' HTTP side port: Prometheus metrics, a live dashboard and
//! a small JSON API, on its own address (`[http] listen`, default
//! `127.0.0.1:9464`), next to the gRPC port.
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//! | `GET /` | the dashboard page ([`dashboard`]) |
//! | `GET /events` | Server-Sent Events: circuit snapshots, live ([`sse`]) |
//! | `GET /api/circuits` | JSON list, paginated, from a cached copy ([`api`]) |
//! | `GET /api/circuits/{name}` | one circuit with counters and history |
//! | `POST /api/circuits/{name}/override` | set an override (admin token) |
//! | `DELETE /api/circuits/{name}/override` | clear it (admin token) |
//!
//! HTTP/1.1 on hyper, routed by axum ([`router`]): its routes, `Path` and
//! `Query` extractors and percent-decoding, already compiled in through
//! tonic. Every request is bounded (header and handler timeouts, a 16 KiB
//! body limit, a connection cap in total and per peer; see `server.rs`),
//! a request for a `Host` not ours is refused (421, against DNS rebinding;
//! `hosts.rs`) and no input can panic a handler. Errors are
//! `{"error": message}` JSON, 404 and 405 included.
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | [`serve`]: accept loop, connection cap, timeouts, drain |
//! | `router.rs` | [`router`]: the table above, and the 404/405 answers |
//! | `state.rs` | [`HttpState`], [`HttpConfig`], [`HttpLimits`] and the request limits |
//! | `hosts.rs` | [`AllowedHosts`]: the `Host` check |
//! | `cache.rs` | the shared, sorted copy of the circuits lists and snapshots are cut from |
//! | `response.rs` | uncached, typed responses and JSON errors |
//! | `api.rs`, `sse.rs`, `dashboard.rs`, `metrics.rs` | the handlers |

pub mod api;
mod cache;
pub mod dashboard;
mod hosts;
pub mod metrics;
mod response;
mod router;
mod server;
pub mod sse;
mod state;

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod tests;

pub use hosts::AllowedHosts;
pub use response::{error, json, method_not_allowed, not_found, respond};
pub use router::router;
pub use server::{Connection, HEADER_TIMEOUT, MAX_CONNECTIONS, REQUEST_TIMEOUT, serve};
pub use state::{AdminToken, HttpConfig, HttpLimits, HttpState, MAX_BODY_BYTES, MAX_SSE_CLIENTS};

/// The types [`HttpState::new`] takes besides the registry.
pub use crate::{middleware::metrics::RpcMetrics, shutdown::ShutdownSignal};
