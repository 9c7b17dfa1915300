//! The side port's `Host` allow-list, against DNS rebinding: a page on
//! `evil.example` whose name is made to resolve to 127.0.0.1 reaches the
//! port with `Host: evil.example`, so only names known to be ours are
//! served. The others get 421 with the reason.
//!
//! Served by default: `localhost` (and `*.localhost`), the loopback
//! addresses and the listen address (every IP address when listening on
//! `0.0.0.0` or `[::]`, as each is then a listen address), with any port.
//! An IP address in `Host` is never a rebinding: a browser sends one only
//! for a page loaded from that very address. `[http] allowed_hosts` adds
//! names (`name` for any port, `name:port` for one); `"*"` serves every
//! `Host` (no protection). A request without `Host` (HTTP/1.0; browsers
//! always send one) is served.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use http::{StatusCode, header};

use super::{response::error, state::HttpState};

/// The hosts the side port serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowedHosts {
    any: bool,
    listen: Option<IpAddr>,
    /// Lower-case names, with the one port allowed (`None`: any).
    names: Vec<(String, Option<u16>)>,
}

/// `host[:port]` split, the host lower-cased without brackets or a
/// trailing dot; `None` if it is not that shape.
fn split(value: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (
            host,
            after
                .strip_prefix(':')
                .or_else(|| after.is_empty().then_some(""))?,
        )
    } else {
        match value.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, p),
            Some(_) => return None,
            None => (value, ""),
        }
    };
    let port = match port {
        "" => None,
        p => Some(p.parse::<u16>().ok()?),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

impl AllowedHosts {
    /// The defaults, the listen address and `extra` (`name`, `name:port`
    /// or `"*"`); an entry of another shape is the error.
    pub fn new(listen: Option<SocketAddr>, extra: &[String]) -> Result<Self, String> {
        let mut hosts = Self {
            listen: listen.map(|a| a.ip()),
            ..Self::default()
        };
        for e in extra {
            if e == "*" {
                hosts.any = true;
                continue;
            }
            let (name, port) =
                split(e).ok_or_else(|| format!("{e:?} is not a host name, name:port or \"*\""))?;
            hosts.names.push((name, port));
        }
        Ok(hosts)
    }

    /// Whether a request for `host` (a `Host` header value) is served.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((name, port)) = split(host) else {
            return false;
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || self.listen.is_some_and(|l| l.is_unspecified() || l == ip);
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.names
            .iter()
            .any(|(n, p)| *n == name && p.is_none_or(|p| Some(p) == port))
    }
}

/// Refuses a request for a host not allowed, before any handler runs.
pub async fn check(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let host = match req.uri().authority() {
        // An absolute-form target names the host itself.
        Some(a) => Some(a.as_str().rsplit('@').next().unwrap_or_default().to_owned()),
        None => match req.headers().get(header::HOST).map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) => Some(v.to_owned()),
            Some(Err(_)) => Some(String::new()),
        },
    };
    match host {
        Some(h) if !state.config.allowed_hosts.allows(&h) => error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "host {h:?} is not served here (DNS-rebinding guard): use localhost or an \
                 IP address, or add the name to [http] allowed_hosts"
            ),
        ),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_listed_hosts() {
        let d = AllowedHosts::default();
        for ok in [
            "localhost",
            "LOCALHOST:9464",
            "localhost.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:9464",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(d.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9464",
            "10.0.0.5:9464",
            "[::2]:1",
            "",
            "localhost:x",
            "localhost:99999",
            "::1",
            "a b",
            "localhost.evil.example",
        ] {
            assert!(!d.allows(bad), "{bad}");
        }
        let listed = AllowedHosts::new(
            Some("10.0.0.5:9464".parse().unwrap()),
            &["breakerd.internal".into(), "ops.example:8443".into()],
        )
        .unwrap();
        assert!(listed.allows("10.0.0.5:9464"));
        assert!(listed.allows("breakerd.INTERNAL:1234"));
        assert!(listed.allows("ops.example:8443"));
        assert!(!listed.allows("ops.example:9464"));
        assert!(!listed.allows("10.0.0.6"));
        let wild = AllowedHosts::new(Some("0.0.0.0:9464".parse().unwrap()), &[]).unwrap();
        assert!(wild.allows("10.1.2.3:9464") && !wild.allows("evil.example"));
        assert!(
            AllowedHosts::new(None, &["*".into()])
                .unwrap()
                .allows("evil.example")
        );
        assert!(AllowedHosts::new(None, &["a b".into()]).is_err());
        assert!(AllowedHosts::new(None, &["x:y".into()]).is_err());
    }
}
