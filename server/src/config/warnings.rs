//! Start-up warnings: what is unsafe about serving a checked config as it
//! is (listeners beyond loopback without tokens or without TLS), one
//! sentence each, logged by [`crate::app`] before it serves.

use std::net::SocketAddr;

use super::load::Config;

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// What is unsafe about serving `config` as it is, one sentence each:
/// listeners beyond loopback without tokens or without TLS. Logged as
/// warnings at start-up; empty for the default loopback-only run.
pub fn security_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let listen = config.listen;
    if !is_loopback(&listen) {
        if config.auth.admin_token.is_none() {
            warnings.push(format!(
                "gRPC listens on {listen}, beyond loopback, without an admin token: anyone who \
                 can reach it can force circuits open or closed (set [auth] admin_token_file or \
                 BREAKERD_ADMIN_TOKEN)"
            ));
        }
        if config.auth.data_token.is_none() {
            warnings.push(format!(
                "gRPC listens on {listen}, beyond loopback, without a data-plane token: anyone \
                 who can reach it can report failures and trip circuits (set [auth] \
                 data_token_file or BREAKERD_DATA_TOKEN)"
            ));
        }
        if config.tls.is_none() {
            warnings.push(format!(
                "gRPC listens on {listen}, beyond loopback, without TLS: calls{} travel in clear \
                 text (set [tls] cert_path and key_path)",
                if config.auth.is_enabled() {
                    " and bearer tokens"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(http) = config.http.listen
        && !is_loopback(&http)
    {
        warnings.push(format!(
            "the HTTP side port listens on {http}, beyond loopback, in clear text: metrics, \
             dashboard and circuit details are readable without a token{}",
            if config.http.admin_token.is_some() {
                ", and the admin token of its writes travels unencrypted"
            } else {
                ""
            }
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, FileConfig};

    const DATA: &str = "data-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn config(toml: &str) -> Config {
        Config::from_file(FileConfig::parse(toml).unwrap(), &Cli::default()).unwrap()
    }

    #[test]
    fn loopback_is_quiet_and_exposure_is_warned() {
        assert_eq!(security_warnings(&config("")), Vec::<String>::new());
        assert_eq!(
            security_warnings(&config("[server]\nlisten = \"[::1]:50051\"\n")),
            Vec::<String>::new()
        );
        let w = security_warnings(&config(
            "[server]\nlisten = \"0.0.0.0:50051\"\n[http]\nlisten = \"off\"\n",
        ));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("without an admin token"), "{w:?}");
        assert!(w[1].contains("without a data-plane token"), "{w:?}");
        assert!(w[2].contains("without TLS"), "{w:?}");
        let w = security_warnings(&config(&format!(
            "[server]\nlisten = \"10.0.0.1:50051\"\n[http]\nlisten = \"off\"\n\
             [auth]\nadmin_token = \"{ADMIN}\"\ndata_token = \"{DATA}\"\n"
        )));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("bearer tokens travel in clear text"), "{w:?}");
        let w = security_warnings(&config("[http]\nlisten = \"0.0.0.0:9464\"\n"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("HTTP side port"), "{w:?}");
    }
}
