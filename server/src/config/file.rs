//! The config file as written: [`FileConfig`] and its tables, every key
//! optional (the defaults fill in), unknown keys refused. Parsing only; the
//! values are checked by [`Config::from_file`](super::Config::from_file).

use std::path::Path;

use breakerd_policy::PolicySpec;
use serde::{Deserialize, Serialize};

use super::{
    auth::AuthSection, error::ConfigError, http::HttpSection, log::LogSection, tls::TlsSection,
};

/// Default listen address: loopback only, so an unconfigured coordinator is
/// never reachable from the network by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The config file as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`: transport settings.
    pub server: ServerSection,
    /// `[limits]`: memory and request bounds.
    pub limits: LimitsSection,
    /// `[log]`: logging.
    pub log: LogSection,
    /// `[http]`: the operators' HTTP side port (metrics, dashboard).
    pub http: HttpSection,
    /// `[store]`: where durable state lives.
    pub store: StoreSection,
    /// `[auth]`: bearer tokens of the gRPC API.
    pub auth: AuthSection,
    /// `[tls]`: TLS, and mutual TLS, of the gRPC port.
    pub tls: TlsSection,
    /// `[defaults]`: policy fields applied to every circuit.
    pub defaults: PolicySpec,
    /// `[[circuits]]`: per-name-pattern policies; every match applies, in
    /// order, later ones winning field by field.
    pub circuits: Vec<CircuitRule>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    pub listen: String,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: u64,
    /// HTTP/2 streams one connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings; 0 disables them.
    pub http2_keepalive_interval_ms: u64,
    /// A keepalive ping not answered within this closes the connection.
    pub http2_keepalive_timeout_ms: u64,
    /// Largest header list (all request headers, decoded) accepted, in
    /// bytes; a larger one is refused.
    pub http2_max_header_list_size: u32,
    /// Streams a client may open and reset before the server accepted them
    /// (the "rapid reset" attack) before the connection is closed.
    pub http2_max_pending_accept_reset_streams: u32,
    /// Streams the server may have to reset for a client's protocol errors
    /// ("MadeYouReset") before the connection is closed.
    pub http2_max_local_error_reset_streams: u32,
    /// Connections are asked to go away (GOAWAY) after this long, so that
    /// clients spread over new replicas; 0 keeps them for ever.
    pub max_connection_age_ms: u64,
    /// After `max_connection_age_ms`, in-flight calls and streams get this
    /// long before the connection is closed anyway.
    pub max_connection_age_grace_ms: u64,
    /// Deadline of a unary call (streams are not cut by it).
    pub request_timeout_ms: u64,
    /// Set `TCP_NODELAY` on accepted connections.
    pub tcp_nodelay: bool,
    /// Connections open at once on the gRPC port; one more is closed as
    /// soon as it is accepted.
    pub max_connections: u64,
    /// A new connection that has not sent the HTTP/2 preface (or its TLS
    /// hello) within this is closed.
    pub preface_timeout_ms: u64,
    /// On shutdown, how long in-flight calls and streams may take to finish
    /// before the process exits anyway.
    pub shutdown_drain_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            max_message_bytes: 4 * 1024 * 1024,
            http2_max_concurrent_streams: 1024,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            http2_max_header_list_size: 16 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
            max_connection_age_ms: 0,
            max_connection_age_grace_ms: 30_000,
            request_timeout_ms: 10_000,
            tcp_nodelay: true,
            max_connections: 4096,
            preface_timeout_ms: 10_000,
            shutdown_drain_ms: 5_000,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Most circuits held at once; creating one more is RESOURCE_EXHAUSTED.
    pub max_circuits: u64,
    /// Of `max_circuits`, how many only admin calls may create, so that
    /// clients filling the cap cannot lock operators out (at most a tenth
    /// of the cap is reserved).
    pub operator_reserved_circuits: u64,
    /// Idle CLOSED circuits without an override are forgotten after this.
    pub idle_evict_after_ms: u64,
    /// Most outcomes in one Report batch.
    pub max_report_batch: u64,
    /// Most circuit names in one Watch request.
    pub max_watch_names: u64,
    /// Watch streams open at once, all clients together; 0: no cap.
    pub max_watch_streams: u64,
    /// Watch streams open at once per client (client certificate, else
    /// peer IP); 0: no cap.
    pub max_watch_streams_per_client: u64,
    /// Streams watching every circuit open at once, all clients together;
    /// 0: no cap.
    pub max_watch_all_streams: u64,
    /// Requests per second one client (node id, else peer IP) may make,
    /// in bursts of twice this; 0: unlimited.
    pub client_requests_per_second: u64,
    /// Circuits one client may create per minute; 0: unlimited.
    pub client_new_circuits_per_minute: u64,
    /// Most clients tracked by node id (and, apart, by IP) for the two
    /// limits above.
    pub max_tracked_clients: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_circuits: 100_000,
            operator_reserved_circuits: 1_000,
            idle_evict_after_ms: 600_000,
            max_report_batch: 10_000,
            max_watch_names: 10_000,
            max_watch_streams: 1024,
            max_watch_streams_per_client: 64,
            max_watch_all_streams: 32,
            client_requests_per_second: 10_000,
            client_new_circuits_per_minute: 600,
            max_tracked_clients: 10_000,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Directory of the embedded store, created when missing; `none` keeps
    /// everything in memory (nothing survives a restart).
    pub path: String,
}

/// Where the store lives when nothing says otherwise: beside the process.
pub const DEFAULT_STORE_PATH: &str = "breakerd-data";

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            path: DEFAULT_STORE_PATH.to_owned(),
        }
    }
}

/// One `[[circuits]]` entry: a name pattern and the policy fields for the
/// circuits it matches.
///
/// The policy sits in its own `policy` table rather than being flattened
/// into the entry, because serde's `flatten` disables `deny_unknown_fields`:
/// this way a misspelt field is still refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitRule {
    /// A circuit name in which `*` matches any run of characters and `?`
    /// any one character, e.g. `payments*` or `*:v2`.
    pub pattern: String,
    /// Policy fields for matching circuits, applied on top of `[defaults]`.
    #[serde(default)]
    pub policy: PolicySpec,
}

impl FileConfig {
    /// Reads and parses a config file (unknown keys are an error).
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.key = format!("{}: {}", path.display(), e.key);
            e
        })
    }

    /// Parses config file text.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let line = text
                        .get(..span.start)
                        .map_or(0, |t| t.matches('\n').count())
                        + 1;
                    format!("line {line}")
                }
                None => "toml".to_owned(),
            };
            ConfigError::new(at, e.message().trim().to_owned())
        })
    }
}
