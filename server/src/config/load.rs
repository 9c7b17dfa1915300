//! [`Config`]: the file and the flags merged and checked as a whole. The
//! tables with a file of their own (`[auth]`, `[tls]`, `[http]`, `[log]`)
//! check themselves; `[server]`, `[limits]`, `[store]` and the policies are
//! checked here.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use breakerd_policy::InvalidPolicy;

use super::{
    cli::Cli,
    error::{ConfigError, ms_within, within},
    file::FileConfig,
    tls::TlsConfig,
};
use breakerd_core::{PolicyResolver, RegistryConfig, ResolverError};

use crate::{
    grpc::{ClientLimitsConfig, ManualClock, WatchLimits},
    http::HttpConfig,
    listener::ConnectionLimits,
    middleware::auth::AuthConfig,
    telemetry::LogFormat,
};

/// A configuration that has been merged and fully checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`main` binds it; tests pass their own listener).
    pub listen: SocketAddr,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval (`None`: off).
    pub http2_keepalive_interval: Option<Duration>,
    /// HTTP/2 keepalive ping timeout.
    pub http2_keepalive_timeout: Duration,
    /// Largest request header list, in bytes.
    pub http2_max_header_list_size: u32,
    /// Client-reset streams tolerated before they were accepted.
    pub http2_max_pending_accept_reset_streams: usize,
    /// Server-reset streams tolerated for a client's errors.
    pub http2_max_local_error_reset_streams: usize,
    /// Connection age before GOAWAY (`None`: unbounded).
    pub max_connection_age: Option<Duration>,
    /// Grace after `max_connection_age` before a forced close.
    pub max_connection_age_grace: Duration,
    /// Per-client request-rate and new-circuit limits.
    pub client_limits: ClientLimitsConfig,
    /// A hand-driven clock for those limits instead of tokio's; never set
    /// from a file or flag, only by tests that must not depend on how fast
    /// the machine runs their requests.
    pub client_limits_clock: Option<ManualClock>,
    /// Deadline of a unary call.
    pub request_timeout: Duration,
    /// `TCP_NODELAY` on accepted connections.
    pub tcp_nodelay: bool,
    /// The connection cap and preface timeout of the gRPC port.
    pub connections: ConnectionLimits,
    /// Bound of the graceful drain on shutdown.
    pub shutdown_drain: Duration,
    /// Most circuits held at once.
    pub max_circuits: usize,
    /// Circuits of the cap only admin calls may create.
    pub operator_reserved_circuits: usize,
    /// Idle closed circuits are evicted after this.
    pub idle_evict_after: Duration,
    /// Most outcomes per Report batch.
    pub max_report_batch: usize,
    /// Most names per Watch request.
    pub max_watch_names: usize,
    /// Caps on open Watch streams.
    pub watch_limits: WatchLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directives (already checked to parse).
    pub log_level: String,
    /// The configured policy of every circuit name: `[defaults]` and the
    /// `[[circuits]]` rules, checked.
    pub resolver: PolicyResolver,
    /// The HTTP side port.
    pub http: HttpConfig,
    /// Directory of the embedded store; `None` runs in memory only.
    pub store: Option<PathBuf>,
    /// Bearer tokens of the gRPC API (none: no authentication).
    pub auth: AuthConfig,
    /// TLS of the gRPC port (`None`: plaintext h2c).
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        // The built-in defaults are checked by a unit test.
        Self::from_file(FileConfig::default(), &Cli::default()).unwrap_or_else(|_| unreachable!())
    }
}

impl Config {
    /// Reads the file named by `cli` (if any), applies the flag and
    /// environment overrides, and checks the result.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Self::from_file(file, cli)
    }

    /// Checks `file` with the overrides of `cli` applied.
    pub fn from_file(file: FileConfig, cli: &Cli) -> Result<Config, ConfigError> {
        let s = &file.server;
        let l = &file.limits;
        let listen = match cli.listen {
            Some(addr) => addr,
            None => s.listen.parse().map_err(|e| {
                ConfigError::new(
                    "server.listen",
                    format!("{:?} is not an IP:port address ({e})", s.listen),
                )
            })?,
        };
        let max_message_bytes = within(
            "server.max_message_bytes",
            s.max_message_bytes,
            1024,
            256 * 1024 * 1024,
        )?;
        let http2_max_concurrent_streams = within(
            "server.http2_max_concurrent_streams",
            u64::from(s.http2_max_concurrent_streams),
            1,
            1_000_000,
        )? as u32;
        let http2_keepalive_interval = match s.http2_keepalive_interval_ms {
            0 => None,
            ms => Some(ms_within(
                "server.http2_keepalive_interval_ms",
                ms,
                100,
                3_600_000,
            )?),
        };
        let http2_keepalive_timeout = ms_within(
            "server.http2_keepalive_timeout_ms",
            s.http2_keepalive_timeout_ms,
            100,
            600_000,
        )?;
        let http2_max_header_list_size = within(
            "server.http2_max_header_list_size",
            u64::from(s.http2_max_header_list_size),
            1024,
            1024 * 1024,
        )? as u32;
        let http2_max_pending_accept_reset_streams = within(
            "server.http2_max_pending_accept_reset_streams",
            u64::from(s.http2_max_pending_accept_reset_streams),
            1,
            100_000,
        )?;
        let http2_max_local_error_reset_streams = within(
            "server.http2_max_local_error_reset_streams",
            u64::from(s.http2_max_local_error_reset_streams),
            1,
            100_000,
        )?;
        let max_connection_age = match s.max_connection_age_ms {
            0 => None,
            ms => Some(ms_within(
                "server.max_connection_age_ms",
                ms,
                1_000,
                30 * 24 * 3_600_000,
            )?),
        };
        let max_connection_age_grace = ms_within(
            "server.max_connection_age_grace_ms",
            s.max_connection_age_grace_ms,
            0,
            24 * 3_600_000,
        )?;
        let request_timeout = ms_within(
            "server.request_timeout_ms",
            s.request_timeout_ms,
            1,
            3_600_000,
        )?;
        let connections = ConnectionLimits {
            max_connections: within("server.max_connections", s.max_connections, 1, 1_000_000)?,
            preface_timeout: ms_within(
                "server.preface_timeout_ms",
                s.preface_timeout_ms,
                100,
                600_000,
            )?,
            tcp_nodelay: s.tcp_nodelay,
        };
        let shutdown_drain = ms_within(
            "server.shutdown_drain_ms",
            s.shutdown_drain_ms,
            0,
            3_600_000,
        )?;

        let max_circuits = match cli.max_circuits {
            Some(n) => within("--max-circuits", n, 1, 100_000_000)?,
            None => within("limits.max_circuits", l.max_circuits, 1, 100_000_000)?,
        };
        let operator_reserved_circuits = within(
            "limits.operator_reserved_circuits",
            l.operator_reserved_circuits,
            0,
            10_000_000,
        )?;
        let idle_evict_after = ms_within(
            "limits.idle_evict_after_ms",
            l.idle_evict_after_ms,
            1_000,
            30 * 24 * 3_600_000,
        )?;
        let max_report_batch = within("limits.max_report_batch", l.max_report_batch, 1, 1_000_000)?;
        let max_watch_names = within("limits.max_watch_names", l.max_watch_names, 1, 1_000_000)?;
        let watch_limits = WatchLimits {
            max_streams: within(
                "limits.max_watch_streams",
                l.max_watch_streams,
                0,
                1_000_000,
            )?,
            max_streams_per_client: within(
                "limits.max_watch_streams_per_client",
                l.max_watch_streams_per_client,
                0,
                1_000_000,
            )?,
            max_watch_all_streams: within(
                "limits.max_watch_all_streams",
                l.max_watch_all_streams,
                0,
                1_000_000,
            )?,
        };
        let client_limits = ClientLimitsConfig {
            requests_per_second: within(
                "limits.client_requests_per_second",
                l.client_requests_per_second,
                0,
                100_000_000,
            )? as u32,
            new_circuits_per_minute: within(
                "limits.client_new_circuits_per_minute",
                l.client_new_circuits_per_minute,
                0,
                100_000_000,
            )? as u32,
            max_tracked_clients: within(
                "limits.max_tracked_clients",
                l.max_tracked_clients,
                1,
                10_000_000,
            )?,
        };

        let mut http = file.http.check(cli)?;
        let auth = file.auth.check(&cli.env_tokens)?;
        let tls = file.tls.check()?;
        // One admin token for both ports unless [http] names its own.
        if http.admin_token.is_none() {
            http.admin_token = auth.admin_token.clone();
        }
        let (store_key, store_path) = match &cli.store {
            Some(p) => ("--store", p.as_str()),
            None => ("store.path", file.store.path.as_str()),
        };
        let store = match store_path.trim() {
            "" => {
                return Err(ConfigError::new(
                    store_key,
                    "is empty; give a directory, or `none` to keep state in memory only",
                ));
            }
            "none" => None,
            path => Some(PathBuf::from(path)),
        };
        let (log_format, log_level) = file.log.check(cli)?;

        let rules = file
            .circuits
            .into_iter()
            .map(|r| (r.pattern, r.policy))
            .collect();
        let resolver = PolicyResolver::new(file.defaults, rules).map_err(|e| {
            let policy_error = |prefix: String, e: InvalidPolicy| {
                ConfigError::new(format!("{prefix}.{}", e.field), e.reason)
            };
            match e {
                ResolverError::InvalidDefaults(e) => policy_error("defaults".to_owned(), e),
                ResolverError::InvalidPatternPolicy { index, source, .. } => {
                    policy_error(format!("circuits[{index}].policy"), source)
                }
                ResolverError::InvalidPattern { index, reason, .. } => {
                    ConfigError::new(format!("circuits[{index}].pattern"), reason)
                }
            }
        })?;

        Ok(Config {
            listen,
            max_message_bytes,
            http2_max_concurrent_streams,
            http2_keepalive_interval,
            http2_keepalive_timeout,
            http2_max_header_list_size,
            http2_max_pending_accept_reset_streams,
            http2_max_local_error_reset_streams,
            max_connection_age,
            max_connection_age_grace,
            client_limits,
            client_limits_clock: None,
            request_timeout,
            tcp_nodelay: s.tcp_nodelay,
            connections,
            shutdown_drain,
            max_circuits,
            operator_reserved_circuits,
            idle_evict_after,
            max_report_batch,
            max_watch_names,
            watch_limits,
            log_format,
            log_level,
            resolver,
            http,
            store,
            auth,
            tls,
        })
    }

    /// The limits of the core registry.
    pub fn registry_config(&self) -> RegistryConfig {
        let defaults = RegistryConfig::default();
        RegistryConfig {
            max_circuits: self.max_circuits,
            operator_reserve: self.operator_reserved_circuits,
            idle_evict_after: self.idle_evict_after,
            // Look for idle circuits often enough that one is evicted within
            // about 1.5 × idle_evict_after.
            evict_interval: defaults.evict_interval.min(self.idle_evict_after / 2),
            max_report_batch: self.max_report_batch,
            max_watch_circuits: self.max_watch_names,
            ..defaults
        }
    }
}
