//! Configuration: a TOML file (`--config PATH`), command-line flags and
//! `BREAKERD_*` environment variables, merged and checked once at start-up.
//!
//! This module owns every section; the modules that serve receive checked
//! values and never read the config themselves:
//!
//! | file | what |
//! |---|---|
//! | `cli.rs` | [`Cli`] (clap) and the token variables, [`EnvTokens`] |
//! | `file.rs` | [`FileConfig`] as written, `[server]`, `[limits]`, `[store]`, `[[circuits]]` |
//! | `error.rs` | [`ConfigError`], naming the offending key |
//! | `auth.rs` | `[auth]`, checked into the auth middleware's [`AuthConfig`](crate::middleware::auth::AuthConfig) |
//! | `tls.rs` | `[tls]`, read and checked into [`TlsConfig`] |
//! | `http.rs` | `[http]`, checked into the side port's [`HttpConfig`](crate::http::HttpConfig) |
//! | `log.rs` | `[log]`, the format and a filter checked to parse |
//! | `warnings.rs` | [`security_warnings`] about exposed listeners |
//! | `load.rs` | [`Config`], the checked whole: merges file and flags, checks `[server]` and `[limits]` |
//!
//! Precedence, highest first: flag or environment variable, then the file,
//! then the built-in defaults (so running with no file at all works). Every
//! table refuses unknown keys, and every value is checked before anything is
//! served: a bad config stops the start with a [`ConfigError`] that names the
//! offending key, e.g. `config error: circuits[1].policy.half_open_max_probes:
//! must be within 1..=1000, not 0`.

mod auth;
mod cli;
mod error;
mod file;
mod http;
mod load;
mod log;
mod tls;
mod warnings;

#[cfg(test)]
mod tests;

pub use auth::AuthSection;
pub use cli::{ADMIN_TOKEN_ENV, Cli, DATA_TOKEN_ENV, EnvTokens};
pub use error::ConfigError;
pub use file::{
    CircuitRule, DEFAULT_LISTEN, DEFAULT_STORE_PATH, FileConfig, LimitsSection, ServerSection,
    StoreSection,
};
pub use http::{DEFAULT_HTTP_LISTEN, DEFAULT_MAX_CIRCUIT_SERIES, HttpSection, MAX_CIRCUIT_SERIES};
pub use load::Config;
pub use log::LogSection;
pub use tls::{TLS_HANDSHAKE_TIMEOUT, TlsConfig, TlsSection};
pub use warnings::security_warnings;

pub use crate::telemetry::LogFormat;
