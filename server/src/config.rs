//! Configuration: a TOML file (`--config PATH`), command-line flags and
//! `BREAKERD_*` environment variables, merged and checked once at start-up.
//!
//! Precedence, highest first: flag or environment variable, then the file,
//! then the built-in defaults (so running with no file at all works). Every
//! table refuses unknown keys, and every value is checked before anything is
//! served: a bad config stops the start with a [`ConfigError`] that names the
//! offending key, e.g. `config error: circuits[1].policy.half_open_max_probes:
//! must be within 1..=1000, not 0`.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use breakerd_core::{PolicyResolver, RegistryConfig, ResolverError};
use breakerd_policy::{InvalidPolicy, PolicySpec};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::grpc::{
    auth::{AuthConfig, AuthSection, EnvTokens},
    tls::{TlsConfig, TlsSection},
};

/// Default listen address: loopback only, so an unconfigured coordinator is
/// never reachable from the network by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The `breakerd` command line. Every option can also come from the
/// `BREAKERD_*` variable named next to it.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "breakerd",
    version,
    about = "Centralized circuit-breaker coordinator (gRPC)"
)]
pub struct Cli {
    /// TOML config file; without one the built-in defaults are used.
    #[arg(long, env = "BREAKERD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on (`127.0.0.1:0` picks a free port; the bound
    /// address is logged as `listen_addr`). Overrides `server.listen`.
    #[arg(long, env = "BREAKERD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Log format. Overrides `log.format`.
    #[arg(long, env = "BREAKERD_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `breakerd=debug,tower=warn`. Overrides `log.level`.
    #[arg(long, env = "BREAKERD_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Most circuits held at once. Overrides `limits.max_circuits`.
    #[arg(long, env = "BREAKERD_MAX_CIRCUITS", value_name = "N")]
    pub max_circuits: Option<u64>,
    /// Directory of the embedded store (durable overrides, admin policies,
    /// open circuits, audit log); `none` runs in memory only. Overrides
    /// `store.path`.
    #[arg(long, env = "BREAKERD_STORE", value_name = "DIR|none")]
    pub store: Option<String>,
    /// Check the configuration, print `config ok` and exit (0 when valid, 2 when not).
    #[arg(long)]
    pub check_config: bool,
    /// Address of the HTTP side port (`/metrics`, dashboard); `off` or empty
    /// disables it. The bound address is logged as `http_addr`. Overrides
    /// `http.listen`.
    #[arg(long, env = "BREAKERD_HTTP_LISTEN", value_name = "ADDR|off")]
    pub http_listen: Option<String>,
    /// Bearer token the dashboard's write actions require. Overrides
    /// `http.admin_token`.
    #[arg(
        long,
        env = "BREAKERD_HTTP_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_admin_token: Option<String>,
    /// `BREAKERD_DATA_TOKEN` and `BREAKERD_ADMIN_TOKEN`, read from the
    /// environment only: secrets on a command line are visible to every
    /// local user. They win over `[auth]`.
    #[arg(skip = EnvTokens::from_env())]
    pub env_tokens: EnvTokens,
}

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default; what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

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
    pub http: crate::http::HttpSection,
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
    /// Idle CLOSED circuits without an override are forgotten after this.
    pub idle_evict_after_ms: u64,
    /// Most outcomes in one Report batch.
    pub max_report_batch: u64,
    /// Most circuit names in one Watch request.
    pub max_watch_names: u64,
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
            idle_evict_after_ms: 600_000,
            max_report_batch: 10_000,
            max_watch_names: 10_000,
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

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `json` or `text`.
    pub format: LogFormat,
    /// An `EnvFilter` directive string, e.g. `info` or `breakerd=debug`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
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
    pub client_limits: crate::grpc::ClientLimitsConfig,
    /// Deadline of a unary call.
    pub request_timeout: Duration,
    /// `TCP_NODELAY` on accepted connections.
    pub tcp_nodelay: bool,
    /// Bound of the graceful drain on shutdown.
    pub shutdown_drain: Duration,
    /// Most circuits held at once.
    pub max_circuits: usize,
    /// Idle closed circuits are evicted after this.
    pub idle_evict_after: Duration,
    /// Most outcomes per Report batch.
    pub max_report_batch: usize,
    /// Most names per Watch request.
    pub max_watch_names: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directives (already checked to parse).
    pub log_level: String,
    /// The configured policy of every circuit name: `[defaults]` and the
    /// `[[circuits]]` rules, checked.
    pub resolver: PolicyResolver,
    /// The HTTP side port.
    pub http: crate::http::HttpConfig,
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

/// A configuration that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The offending key as a path (`circuits[1].policy.open_base_ms`), or
    /// the file when it cannot be read or parsed.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}: {}", self.key, self.reason)
    }
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
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
        let idle_evict_after = ms_within(
            "limits.idle_evict_after_ms",
            l.idle_evict_after_ms,
            1_000,
            30 * 24 * 3_600_000,
        )?;
        let max_report_batch = within("limits.max_report_batch", l.max_report_batch, 1, 1_000_000)?;
        let max_watch_names = within("limits.max_watch_names", l.max_watch_names, 1, 1_000_000)?;
        let client_limits = crate::grpc::ClientLimitsConfig {
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
        let log_format = cli.log_format.unwrap_or(file.log.format);
        let (level_key, log_level) = match &cli.log_level {
            Some(level) => ("--log-level", level.clone()),
            None => ("log.level", file.log.level.clone()),
        };
        crate::telemetry::parse_filter(&log_level).map_err(|e| ConfigError::new(level_key, e))?;

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
            request_timeout,
            tcp_nodelay: s.tcp_nodelay,
            shutdown_drain,
            max_circuits,
            idle_evict_after,
            max_report_batch,
            max_watch_names,
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

fn within(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if !(min..=max).contains(&v) {
        return Err(ConfigError::new(
            key,
            format!("must be within {min}..={max}, not {v}"),
        ));
    }
    usize::try_from(v)
        .map_err(|_| ConfigError::new(key, format!("{v} is too large for this platform")))
}

fn ms_within(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    within(key, v, min, max)?;
    Ok(Duration::from_millis(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakerd_policy::Policy;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        Config::from_file(FileConfig::parse(text)?, &Cli::default())
    }

    #[test]
    fn no_config_gives_the_built_in_defaults() {
        let c = Config::from_file(FileConfig::default(), &Cli::default()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.shutdown_drain, Duration::from_secs(5));
        assert_eq!(c.resolver.resolve("payments"), Policy::default());
        assert_eq!(c.max_circuits, 100_000);
        assert_eq!(c.registry_config().max_circuits, 100_000);
        assert_eq!(c.client_limits, crate::grpc::ClientLimitsConfig::default());
        assert_eq!(c.max_connection_age, None);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = load_text("").unwrap();
        let d = Config::default();
        assert_eq!(
            (c.listen, c.max_circuits, c.log_level),
            (d.listen, d.max_circuits, d.log_level)
        );
    }

    #[test]
    fn policy_errors_name_the_rule_and_field() {
        let err = load_text(
            "[[circuits]]\npattern = \"a*\"\n\n[[circuits]]\npattern = \"pay*\"\npolicy = { half_open_max_probes = 0 }\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error: circuits[1].policy.half_open_max_probes: must be within 1..=1000, not 0"
        );
        let err = load_text("[defaults]\nopen_base_ms = 0\n").unwrap_err();
        assert_eq!(err.key, "defaults.open_base_ms");
    }

    #[test]
    fn rules_layer_on_defaults() {
        let c = load_text(
            "[defaults]\nconsecutive_failures = 7\n\n[[circuits]]\npattern = \"pay*\"\n[circuits.policy]\nopen_base_ms = 1000\n",
        )
        .unwrap();
        let expected = Policy::default()
            .apply(&PolicySpec {
                consecutive_failures: Some(7),
                open_base_ms: Some(1000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.resolver.resolve("payments"), expected);
        let defaults = Policy::default()
            .apply(&PolicySpec {
                consecutive_failures: Some(7),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.resolver.resolve("search"), defaults);
    }

    #[test]
    fn unknown_keys_are_refused_everywhere() {
        for (text, word) in [
            ("bogus = 1\n", "bogus"),
            ("[server]\nlisten_addr = \"x\"\n", "listen_addr"),
            ("[limits]\nmax_circuit = 3\n", "max_circuit"),
            ("[log]\nlvl = \"info\"\n", "lvl"),
            (
                "[defaults]\nconsecutive_failure = 3\n",
                "consecutive_failure",
            ),
            (
                "[[circuits]]\npattern = \"a\"\nconsecutive_failures = 3\n",
                "consecutive_failures",
            ),
            (
                "[[circuits]]\npattern = \"a\"\npolicy = { nope = 1 }\n",
                "nope",
            ),
        ] {
            let err = load_text(text).unwrap_err();
            assert!(err.reason.contains(word), "{text:?} gave {err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            (
                "[server]\nmax_message_bytes = 10\n",
                "server.max_message_bytes",
            ),
            (
                "[server]\nhttp2_max_concurrent_streams = 0\n",
                "server.http2_max_concurrent_streams",
            ),
            ("[limits]\nmax_circuits = 0\n", "limits.max_circuits"),
            (
                "[server]\nhttp2_max_header_list_size = 10\n",
                "server.http2_max_header_list_size",
            ),
            (
                "[server]\nhttp2_max_pending_accept_reset_streams = 0\n",
                "server.http2_max_pending_accept_reset_streams",
            ),
            (
                "[server]\nhttp2_max_local_error_reset_streams = 0\n",
                "server.http2_max_local_error_reset_streams",
            ),
            (
                "[server]\nmax_connection_age_ms = 10\n",
                "server.max_connection_age_ms",
            ),
            (
                "[limits]\nmax_tracked_clients = 0\n",
                "limits.max_tracked_clients",
            ),
            (
                "[limits]\nclient_requests_per_second = 100000001\n",
                "limits.client_requests_per_second",
            ),
            (
                "[limits]\nmax_report_batch = 0\n",
                "limits.max_report_batch",
            ),
            ("[log]\nlevel = \"info,[[[\"\n", "log.level"),
            (
                "[[circuits]]\npattern = \"pay ments\"\n",
                "circuits[0].pattern",
            ),
            ("[[circuits]]\npattern = \"\"\n", "circuits[0].pattern"),
        ] {
            let err = load_text(text).unwrap_err();
            assert_eq!(err.key, key, "{text:?} gave {err}");
        }
        let err = load_text("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.reason.contains("xml"), "{err}");
        assert_eq!(err.key, "line 2");
    }

    #[test]
    fn flags_and_env_win_over_the_file() {
        let file = FileConfig::parse(
            "[server]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_circuits = 10\n[log]\nformat = \"text\"\nlevel = \"warn\"\n",
        )
        .unwrap();
        let from_file = Config::from_file(file.clone(), &Cli::default()).unwrap();
        assert_eq!(from_file.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(from_file.max_circuits, 10);
        assert_eq!(from_file.log_format, LogFormat::Text);

        let cli = Cli::try_parse_from([
            "breakerd",
            "--listen",
            "127.0.0.1:0",
            "--max-circuits",
            "3",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let c = Config::from_file(file, &cli).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.max_circuits, 3);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "debug");

        let bad = Cli {
            max_circuits: Some(0),
            ..Cli::default()
        };
        assert_eq!(
            Config::from_file(FileConfig::default(), &bad)
                .unwrap_err()
                .key,
            "--max-circuits"
        );
    }

    #[test]
    fn the_deploy_example_is_valid_and_documents_every_key() {
        let text = include_str!("../../deploy/breakerd.toml");
        let file = FileConfig::parse(text).unwrap();
        Config::from_file(file, &Cli::default()).unwrap();

        let mut keys: Vec<String> = Vec::new();
        let sections = toml::Table::try_from(FileConfig::default()).unwrap();
        for (_, section) in sections {
            if let toml::Value::Table(t) = section {
                keys.extend(t.keys().cloned());
            }
        }
        let policy = toml::Table::try_from(Policy::default().to_spec()).unwrap();
        keys.extend(policy.keys().cloned());
        keys.push("pattern".to_owned());
        for key in keys {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))),
                "deploy/breakerd.toml does not document `{key}`"
            );
        }
    }
}
