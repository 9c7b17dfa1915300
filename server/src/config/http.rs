//! `[http]`: the operators' side port, with its `--http-*` flags and
//! variables, checked into the [`HttpConfig`] the side port is served with.

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use super::{cli::Cli, error::ConfigError};
use crate::{http::HttpConfig, token::Token};

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
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.to_owned(),
            admin_token: String::new(),
            metrics_max_circuit_series: DEFAULT_MAX_CIRCUIT_SERIES,
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
        Ok(HttpConfig {
            listen,
            listen_required,
            admin_token,
            max_circuit_series: n as usize,
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
