//! `[http]`: the operators' side port, with its `--http-*` flags and
//! variables, checked into the [`HttpConfig`] the side port is served with.

use std::{fmt, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{cli::Cli, error::ConfigError};
use crate::{
    http::{AllowedHosts, HttpConfig, HttpLimits},
    token::Token,
};

/// Default address of the side port: loopback only, like the gRPC default.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";
/// Default cap on per-circuit metric series.
pub const DEFAULT_MAX_CIRCUIT_SERIES: u64 = 200;
/// Largest configurable cap on per-circuit metric series (one registry page).
pub const MAX_CIRCUIT_SERIES: u64 = breakerd_core::MAX_PAGE_SIZE as u64;

/// `[http]` as written in the config file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Address of the side port; `""` or `"off"` disables it.
    pub listen: String,
    /// Bearer token the dashboard's write actions require; empty refuses
    /// every write.
    pub admin_token: String,
    /// Most circuits given their own `circuit` label in `/metrics`; the rest
    /// are summed under `circuit="_other"`.
    pub metrics_max_circuit_series: u64,
    /// Host names served besides localhost and IP addresses (`name` for
    /// any port, `name:port` for one; `"*"`: any `Host`, no DNS-rebinding
    /// guard).
    pub allowed_hosts: Vec<String>,
    /// Most connections at once.
    pub max_connections: u64,
    /// Most connections from one IP address.
    pub max_connections_per_peer: u64,
    /// Time a client has to send a request's headers, in ms.
    pub header_timeout_ms: u64,
    /// Most `/events` streams at once.
    pub sse_max_clients: u64,
    /// Most `/events` streams from one IP address.
    pub sse_max_clients_per_peer: u64,
    /// A stream whose client reads nothing this long is closed, in ms.
    pub sse_stall_timeout_ms: u64,
    /// Most age of the copy lists are served from, in ms.
    pub list_cache_ms: u64,
}

/// Ranges of the numeric keys: (key, min, max).
const RANGES: [(&str, u64, u64); 7] = [
    ("http.max_connections", 1, 65_536),
    ("http.max_connections_per_peer", 1, 65_536),
    ("http.header_timeout_ms", 100, 60_000),
    ("http.sse_max_clients", 1, 10_000),
    ("http.sse_max_clients_per_peer", 1, 10_000),
    ("http.sse_stall_timeout_ms", 100, 600_000),
    ("http.list_cache_ms", 0, 60_000),
];

fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for HttpSection {
    fn default() -> Self {
        let d = HttpLimits::default();
        Self {
            listen: DEFAULT_HTTP_LISTEN.to_owned(),
            admin_token: String::new(),
            metrics_max_circuit_series: DEFAULT_MAX_CIRCUIT_SERIES,
            allowed_hosts: Vec::new(),
            max_connections: d.max_connections as u64,
            max_connections_per_peer: d.max_connections_per_peer as u64,
            header_timeout_ms: ms_u64(d.header_timeout),
            sse_max_clients: d.sse_max_clients as u64,
            sse_max_clients_per_peer: d.sse_max_clients_per_peer as u64,
            sse_stall_timeout_ms: ms_u64(d.sse_stall_timeout),
            list_cache_ms: ms_u64(d.list_cache),
        }
    }
}

impl fmt::Debug for HttpSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSection")
            .field("listen", &self.listen)
            .field("admin_token", &Redacted(!self.admin_token.is_empty()))
            .field(
                "metrics_max_circuit_series",
                &self.metrics_max_circuit_series,
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("sse_max_clients", &self.sse_max_clients)
            .field("sse_max_clients_per_peer", &self.sse_max_clients_per_peer)
            .field("sse_stall_timeout_ms", &self.sse_stall_timeout_ms)
            .field("list_cache_ms", &self.list_cache_ms)
            .finish()
    }
}

impl HttpSection {
    /// Checks the table with the flag / environment overrides of `cli`.
    pub fn check(&self, cli: &Cli) -> Result<HttpConfig, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(key, reason);
        let (key, listen) = match &cli.http_listen {
            Some(v) => ("--http-listen", v.as_str()),
            None => ("http.listen", self.listen.as_str()),
        };
        let listen = match listen.trim() {
            "" | "off" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                err(
                    key,
                    format!("{addr:?} is not an IP:port address or \"off\" ({e})"),
                )
            })?),
        };
        let listen_required = listen.is_some()
            && (cli.http_listen.is_some() || self.listen.trim() != DEFAULT_HTTP_LISTEN);
        let (key, token) = match &cli.http_admin_token {
            Some(v) => ("--http-admin-token", v.as_str()),
            None => ("http.admin_token", self.admin_token.as_str()),
        };
        let admin_token = match token {
            "" => None,
            t => Some(Token::new(t).map_err(|reason| err(key, reason))?),
        };
        let n = self.metrics_max_circuit_series;
        if n > MAX_CIRCUIT_SERIES {
            return Err(err(
                "http.metrics_max_circuit_series",
                format!("must be within 0..={MAX_CIRCUIT_SERIES}, not {n}"),
            ));
        }
        let values = [
            self.max_connections,
            self.max_connections_per_peer,
            self.header_timeout_ms,
            self.sse_max_clients,
            self.sse_max_clients_per_peer,
            self.sse_stall_timeout_ms,
            self.list_cache_ms,
        ];
        for ((key, min, max), v) in RANGES.iter().zip(values) {
            if !(*min..=*max).contains(&v) {
                return Err(err(key, format!("must be within {min}..={max}, not {v}")));
            }
        }
        let allowed_hosts = AllowedHosts::new(listen, &self.allowed_hosts)
            .map_err(|reason| err("http.allowed_hosts", reason))?;
        // Within the ranges above: every value fits a usize.
        let limits = HttpLimits {
            max_connections: self.max_connections as usize,
            max_connections_per_peer: self.max_connections_per_peer as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            sse_max_clients: self.sse_max_clients as usize,
            sse_max_clients_per_peer: self.sse_max_clients_per_peer as usize,
            sse_stall_timeout: Duration::from_millis(self.sse_stall_timeout_ms),
            list_cache: Duration::from_millis(self.list_cache_ms),
        };
        Ok(HttpConfig {
            listen,
            listen_required,
            admin_token,
            max_circuit_series: n as usize,
            limits,
            allowed_hosts,
        })
    }
}

/// Says whether a secret is set, never what it is.
struct Redacted(bool);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "<redacted>" } else { "<unset>" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn listen_can_be_turned_off_and_flags_win() {
        let section = HttpSection::default();
        let c = section.check(&Cli::default()).unwrap();
        assert_eq!(c.listen, Some(DEFAULT_HTTP_LISTEN.parse().unwrap()));
        assert_eq!(c.admin_token, None);
        assert_eq!(c.max_circuit_series, 200);
        assert!(!c.listen_required);
        for off in ["off", ""] {
            let cli = Cli::try_parse_from(["breakerd", "--http-listen", off]).unwrap();
            assert_eq!(section.check(&cli).unwrap().listen, None);
        }
        let cli = Cli::try_parse_from(["breakerd", "--http-listen", "127.0.0.1:0"]).unwrap();
        let c = section.check(&cli).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(c.listen_required);
        let cli = Cli::try_parse_from(["breakerd", "--http-listen", "nowhere"]).unwrap();
        assert_eq!(section.check(&cli).unwrap_err().key, "--http-listen");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = HttpSection {
            admin_token: "short".into(),
            ..HttpSection::default()
        };
        assert_eq!(
            bad.check(&Cli::default()).unwrap_err().key,
            "http.admin_token"
        );
        let bad = HttpSection {
            metrics_max_circuit_series: 5000,
            ..HttpSection::default()
        };
        assert_eq!(
            bad.check(&Cli::default()).unwrap_err().key,
            "http.metrics_max_circuit_series"
        );
        let bad = HttpSection {
            listen: "localhost".into(),
            ..HttpSection::default()
        };
        assert_eq!(bad.check(&Cli::default()).unwrap_err().key, "http.listen");
        for (key, section) in [
            (
                "http.max_connections_per_peer",
                HttpSection {
                    max_connections_per_peer: 0,
                    ..HttpSection::default()
                },
            ),
            (
                "http.header_timeout_ms",
                HttpSection {
                    header_timeout_ms: 99,
                    ..HttpSection::default()
                },
            ),
            (
                "http.sse_max_clients",
                HttpSection {
                    sse_max_clients: 10_001,
                    ..HttpSection::default()
                },
            ),
            (
                "http.allowed_hosts",
                HttpSection {
                    allowed_hosts: vec!["a b".into()],
                    ..HttpSection::default()
                },
            ),
        ] {
            assert_eq!(section.check(&Cli::default()).unwrap_err().key, key);
        }
    }

    #[test]
    fn limits_default_and_convert() {
        let c = HttpSection::default().check(&Cli::default()).unwrap();
        assert_eq!(c.limits, HttpLimits::default());
        assert_eq!(c.limits.header_timeout, Duration::from_secs(3));
        let section = HttpSection {
            list_cache_ms: 0,
            sse_stall_timeout_ms: 250,
            allowed_hosts: vec!["breakerd.internal".into()],
            ..HttpSection::default()
        };
        let c = section.check(&Cli::default()).unwrap();
        assert_eq!(c.limits.list_cache, Duration::ZERO);
        assert_eq!(c.limits.sse_stall_timeout, Duration::from_millis(250));
        assert!(c.allowed_hosts.allows("breakerd.internal:9464"));
        assert!(!c.allowed_hosts.allows("evil.example"));
    }

    #[test]
    fn tokens_compare_exactly_and_never_print() {
        let t = Token::new("0123456789abcdef").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcdeF",
            b"0123456789abcde",
            b"0123456789abcdef0",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "<redacted>");
        let section = HttpSection {
            admin_token: "0123456789abcdef".into(),
            ..HttpSection::default()
        };
        assert!(!format!("{section:?}").contains("0123"));
        assert!(Token::new("0123456789 abcdef").is_err());
    }
}
