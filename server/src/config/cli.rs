//! The command line ([`Cli`], clap) and the token variables read beside it
//! ([`EnvTokens`]). Every option can also come from the `BREAKERD_*`
//! variable named next to it; flags and variables win over the file.

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::Parser;

use crate::telemetry::LogFormat;

/// Environment variable holding the data-plane token.
pub const DATA_TOKEN_ENV: &str = "BREAKERD_DATA_TOKEN";
/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "BREAKERD_ADMIN_TOKEN";

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

/// The token variables of the environment, read by [`EnvTokens::from_env`]
/// when the command line is parsed. `None`: the variable is not set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvTokens {
    /// `BREAKERD_DATA_TOKEN`.
    pub data: Option<String>,
    /// `BREAKERD_ADMIN_TOKEN`.
    pub admin: Option<String>,
}

impl fmt::Debug for EnvTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| if s.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("EnvTokens")
            .field("data", &secret(&self.data))
            .field("admin", &secret(&self.admin))
            .finish()
    }
}

impl EnvTokens {
    /// Reads [`DATA_TOKEN_ENV`] and [`ADMIN_TOKEN_ENV`]. A value that is not
    /// Unicode is kept as an empty string, which the check refuses.
    pub fn from_env() -> Self {
        let var = |name| std::env::var_os(name).map(|v| v.into_string().unwrap_or_default());
        Self {
            data: var(DATA_TOKEN_ENV),
            admin: var(ADMIN_TOKEN_ENV),
        }
    }
}
