//! Bearer-token authentication of the gRPC API: the `[auth]` config table,
//! the tower layer that checks `authorization: Bearer <token>` on every
//! request, and the start-up warnings about an exposed, unauthenticated
//! listener.
//!
//! Two tokens, each optional:
//!
//! | RPC | no token configured | token configured |
//! |---|---|---|
//! | `breakerd.v1.Admin/*` | open | the admin token only; the data-plane token is `PERMISSION_DENIED` |
//! | `breakerd.v1.Breaker/*` | open | the data-plane token or the admin token (admin may do everything) |
//! | health, reflection, anything else | open | open (probes carry no secret) |
//!
//! A missing, malformed or unknown token is `UNAUTHENTICATED`. Refusals are
//! answered by the layer before the handler runs, so a refused call never
//! changes state. Tokens are compared in constant time
//! ([`crate::http::AdminToken::matches`]) and never logged: their `Debug`
//! is redacted and refusals name only the RPC.
//!
//! Tokens come from the environment (`BREAKERD_DATA_TOKEN`,
//! `BREAKERD_ADMIN_TOKEN`), a file (`auth.*_token_file`) or the config file
//! (`auth.*_token`), in that order: never from the command line, where any
//! local user could read them in the process list.

use std::{
    fmt,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::{ADMIN_SERVICE_NAME, BREAKER_SERVICE_NAME};
use crate::config::{Config, ConfigError};

/// A bearer token: 16..=512 visible ASCII characters, `Debug` redacted,
/// compared in constant time. The same type guards the HTTP side port.
pub type Token = crate::http::AdminToken;

/// Environment variable holding the data-plane token.
pub const DATA_TOKEN_ENV: &str = "BREAKERD_DATA_TOKEN";
/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "BREAKERD_ADMIN_TOKEN";

/// `[auth]` as written in the config file. Empty strings mean unset.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Token the `Breaker` service requires (the admin token works too).
    pub data_token: String,
    /// File whose content is the data-plane token (one trailing newline
    /// ignored); exclusive with `data_token`.
    pub data_token_file: String,
    /// Token the `Admin` service requires.
    pub admin_token: String,
    /// File whose content is the admin token; exclusive with `admin_token`.
    pub admin_token_file: String,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &str| {
            if s.is_empty() {
                "<unset>"
            } else {
                "<redacted>"
            }
        };
        f.debug_struct("AuthSection")
            .field("data_token", &secret(&self.data_token))
            .field("data_token_file", &self.data_token_file)
            .field("admin_token", &secret(&self.admin_token))
            .field("admin_token_file", &self.admin_token_file)
            .finish()
    }
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

/// The checked tokens. Both `None`: no authentication, as before `[auth]`
/// existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Required by the `Breaker` service (the admin token is accepted too).
    pub data_token: Option<Token>,
    /// Required by the `Admin` service.
    pub admin_token: Option<Token>,
}

impl AuthSection {
    /// Resolves and checks both tokens, `env` first.
    pub fn check(&self, env: &EnvTokens) -> Result<AuthConfig, ConfigError> {
        let data_token = resolve(
            DATA_TOKEN_ENV,
            env.data.as_deref(),
            ("auth.data_token", &self.data_token),
            ("auth.data_token_file", &self.data_token_file),
        )?;
        let admin_token = resolve(
            ADMIN_TOKEN_ENV,
            env.admin.as_deref(),
            ("auth.admin_token", &self.admin_token),
            ("auth.admin_token_file", &self.admin_token_file),
        )?;
        match (&data_token, &admin_token) {
            (Some(_), None) => Err(config_error(
                "auth.admin_token",
                "must be set when a data-plane token is (auth.data_token, auth.data_token_file \
                 or BREAKERD_DATA_TOKEN); without it the Admin service would stay open to every client",
            )),
            (Some((_, data)), Some((key, admin))) if data == admin => Err(config_error(
                key,
                "must differ from the data-plane token, or every node could change circuits",
            )),
            _ => Ok(AuthConfig {
                data_token: data_token.map(|(_, t)| t),
                admin_token: admin_token.map(|(_, t)| t),
            }),
        }
    }
}

fn config_error(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// One token from the environment, a file or inline, with the key it came
/// from (for later errors).
fn resolve(
    env_name: &'static str,
    env: Option<&str>,
    (inline_key, inline): (&'static str, &str),
    (file_key, file): (&'static str, &str),
) -> Result<Option<(&'static str, Token)>, ConfigError> {
    if !inline.is_empty() && !file.is_empty() {
        return Err(config_error(
            file_key,
            format!("set either {inline_key} or {file_key}, not both"),
        ));
    }
    let (key, text) = if let Some(v) = env {
        if v.is_empty() {
            // An empty secret usually means a failed secret injection:
            // refusing beats silently serving without authentication.
            return Err(config_error(
                env_name,
                "is set but empty (unset it to turn the token off)",
            ));
        }
        (env_name, v.to_owned())
    } else if !file.is_empty() {
        let text = std::fs::read_to_string(Path::new(file))
            .map_err(|e| config_error(file_key, format!("cannot read {file:?}: {e}")))?;
        // Editors and `echo` add a final newline; nothing else is trimmed.
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned();
        if text.is_empty() {
            return Err(config_error(file_key, format!("{file:?} is empty")));
        }
        (file_key, text)
    } else if !inline.is_empty() {
        (inline_key, inline.to_owned())
    } else {
        return Ok(None);
    };
    Token::new(&text)
        .map(|t| Some((key, t)))
        .map_err(|reason| config_error(key, reason))
}

/// What an RPC requires, by its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, reflection and unknown paths: no token.
    Open,
    /// `breakerd.v1.Breaker`: the data-plane token (or the admin token).
    Data,
    /// `breakerd.v1.Admin`: the admin token.
    Admin,
}

impl Access {
    /// The access an HTTP/2 request path (`/package.Service/Method`) needs.
    pub fn for_path(path: &str) -> Self {
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        match service {
            Some(ADMIN_SERVICE_NAME) => Access::Admin,
            Some(BREAKER_SERVICE_NAME) => Access::Data,
            _ => Access::Open,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization` metadata, more than one, or not `Bearer <token>`.
    MissingToken,
    /// A bearer token that is neither configured token.
    UnknownToken,
    /// The data-plane token on an Admin RPC.
    AdminOnly,
}

impl Denied {
    /// The gRPC status answered for it.
    pub fn code(self) -> Code {
        match self {
            Denied::MissingToken | Denied::UnknownToken => Code::Unauthenticated,
            Denied::AdminOnly => Code::PermissionDenied,
        }
    }

    /// The status answered for it. It never contains the token.
    pub fn status(self) -> Status {
        let message = match self {
            Denied::MissingToken => "missing credentials: send `authorization: Bearer <token>`",
            Denied::UnknownToken => "invalid bearer token",
            Denied::AdminOnly => "the data-plane token may not call the Admin service",
        };
        Status::new(self.code(), message)
    }
}

impl AuthConfig {
    /// Whether any token is configured.
    pub fn is_enabled(&self) -> bool {
        self.data_token.is_some() || self.admin_token.is_some()
    }

    /// A short description for the start-up log line.
    pub fn mode(&self) -> &'static str {
        match (&self.data_token, &self.admin_token) {
            (None, None) => "off",
            (None, Some(_)) => "admin",
            (Some(_), _) => "admin+data",
        }
    }

    /// Checks the `authorization` metadata of a request needing `access`.
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), Denied> {
        let admin = self.admin_token.as_ref();
        let data = self.data_token.as_ref();
        let required = match access {
            Access::Open => return Ok(()),
            Access::Admin => admin,
            Access::Data => data,
        };
        if required.is_none() {
            return Ok(());
        }
        let presented = bearer_token(headers).ok_or(Denied::MissingToken)?;
        // Both comparisons always run, so timing says nothing about which
        // token came close.
        let is_admin = admin.is_some_and(|t| t.matches(presented));
        let is_data = data.is_some_and(|t| t.matches(presented));
        match access {
            Access::Admin if is_admin => Ok(()),
            Access::Admin if is_data => Err(Denied::AdminOnly),
            Access::Data if is_admin || is_data => Ok(()),
            _ => Err(Denied::UnknownToken),
        }
    }
}

/// The token of the single `authorization: Bearer <token>` header (scheme
/// case-insensitive, RFC 7235). Several `authorization` headers are
/// ambiguous and refused.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// Wraps the gRPC router with [`AuthService`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    config: Arc<AuthConfig>,
}

impl AuthLayer {
    /// A layer enforcing `config`.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Answers a refused request itself (`UNAUTHENTICATED` or
/// `PERMISSION_DENIED`, trailers-only) and passes the others on.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    config: Arc<AuthConfig>,
}

impl<S, B, ResBody> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let access = Access::for_path(req.uri().path());
        match self.config.check(access, req.headers()) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(denied) => {
                tracing::info!(
                    rpc = %req.uri().path(),
                    code = ?denied.code(),
                    reason = ?denied,
                    "rpc refused"
                );
                Either::Left(ready(Ok(denied.status().into_http())))
            }
        }
    }
}

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
    use http::HeaderValue;

    const DATA: &str = "data-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn auth() -> AuthConfig {
        AuthSection {
            data_token: DATA.into(),
            admin_token: ADMIN.into(),
            ..Default::default()
        }
        .check(&EnvTokens::default())
        .unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("authorization", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn paths_map_to_access() {
        assert_eq!(
            Access::for_path("/breakerd.v1.Admin/SetOverride"),
            Access::Admin
        );
        assert_eq!(
            Access::for_path("/breakerd.v1.Breaker/Acquire"),
            Access::Data
        );
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/breakerd.v1.Adminx/Get",
            "/",
            "",
            "breakerd.v1.Admin/GetCircuit",
        ] {
            assert_eq!(Access::for_path(open), Access::Open, "{open:?}");
        }
    }

    #[test]
    fn the_matrix() {
        let a = auth();
        let admin = format!("Bearer {ADMIN}");
        let data = format!("Bearer {DATA}");
        let cases: &[(Access, &[&str], Result<(), Denied>)] = &[
            (Access::Admin, &[&admin], Ok(())),
            (Access::Admin, &[&data], Err(Denied::AdminOnly)),
            (Access::Admin, &[], Err(Denied::MissingToken)),
            (
                Access::Admin,
                &["Bearer wrong-token-0123456789"],
                Err(Denied::UnknownToken),
            ),
            (Access::Admin, &[ADMIN], Err(Denied::MissingToken)),
            (
                Access::Admin,
                &[&format!("Basic {ADMIN}")],
                Err(Denied::MissingToken),
            ),
            (Access::Admin, &[&admin, &admin], Err(Denied::MissingToken)),
            (Access::Admin, &[&format!("bearer  {ADMIN}")], Ok(())),
            (
                Access::Admin,
                &[&format!("Bearer {ADMIN}x")],
                Err(Denied::UnknownToken),
            ),
            (Access::Data, &[&data], Ok(())),
            (Access::Data, &[&admin], Ok(())),
            (Access::Data, &[], Err(Denied::MissingToken)),
            (Access::Data, &["Bearer "], Err(Denied::MissingToken)),
            (Access::Data, &["Bearer nope"], Err(Denied::UnknownToken)),
            (Access::Open, &[], Ok(())),
            (Access::Open, &["Bearer nope"], Ok(())),
        ];
        for (access, values, want) in cases {
            assert_eq!(
                a.check(*access, &headers(values)),
                *want,
                "{access:?} {values:?}"
            );
        }
        assert_eq!(Denied::AdminOnly.code(), Code::PermissionDenied);
        assert_eq!(Denied::UnknownToken.code(), Code::Unauthenticated);
        assert_eq!(Denied::MissingToken.code(), Code::Unauthenticated);
    }

    #[test]
    fn no_tokens_leaves_everything_open_and_admin_only_leaves_data_open() {
        let off = AuthConfig::default();
        assert!(!off.is_enabled());
        for access in [Access::Admin, Access::Data, Access::Open] {
            assert_eq!(off.check(access, &HeaderMap::new()), Ok(()));
        }
        let admin_only = AuthSection {
            admin_token: ADMIN.into(),
            ..Default::default()
        }
        .check(&EnvTokens::default())
        .unwrap();
        assert_eq!(admin_only.check(Access::Data, &HeaderMap::new()), Ok(()));
        assert_eq!(
            admin_only.check(Access::Admin, &HeaderMap::new()),
            Err(Denied::MissingToken)
        );
        assert_eq!(admin_only.mode(), "admin");
    }

    #[test]
    fn sources_env_then_file_then_inline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "file-token-0123456789\n").unwrap();
        let section = AuthSection {
            admin_token_file: file.display().to_string(),
            ..Default::default()
        };
        let from_file = section.check(&EnvTokens::default()).unwrap();
        assert!(
            from_file
                .admin_token
                .unwrap()
                .matches(b"file-token-0123456789")
        );
        let env = EnvTokens {
            admin: Some("env-token-0123456789".into()),
            data: None,
        };
        let from_env = section.check(&env).unwrap();
        assert!(
            from_env
                .admin_token
                .unwrap()
                .matches(b"env-token-0123456789")
        );
    }

    #[test]
    fn bad_tokens_name_their_key() {
        let check = |s: AuthSection, env: EnvTokens| s.check(&env).unwrap_err();
        let none = EnvTokens::default;
        let short = check(
            AuthSection {
                admin_token: "short".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(short.key, "auth.admin_token");
        assert!(short.reason.contains("16"), "{short}");
        let err = check(
            AuthSection {
                data_token: DATA.into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token");
        let err = check(
            AuthSection {
                data_token: ADMIN.into(),
                admin_token: ADMIN.into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token");
        let err = check(
            AuthSection {
                admin_token: ADMIN.into(),
                admin_token_file: "/x".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token_file");
        let err = check(
            AuthSection {
                admin_token_file: "/nonexistent/breakerd/token".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token_file");
        assert!(err.reason.contains("cannot read"), "{err}");
        let err = check(
            AuthSection::default(),
            EnvTokens {
                admin: Some(String::new()),
                data: None,
            },
        );
        assert_eq!(err.key, ADMIN_TOKEN_ENV);
        let err = check(
            AuthSection::default(),
            EnvTokens {
                admin: Some("short".into()),
                data: None,
            },
        );
        assert_eq!(err.key, ADMIN_TOKEN_ENV);
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let section = AuthSection {
            data_token: DATA.into(),
            admin_token: ADMIN.into(),
            ..Default::default()
        };
        let env = EnvTokens {
            data: Some(DATA.into()),
            admin: Some(ADMIN.into()),
        };
        for text in [
            format!("{section:?}"),
            format!("{env:?}"),
            format!("{:?}", auth()),
        ] {
            assert!(!text.contains("token-0123"), "{text}");
        }
        for d in [
            Denied::AdminOnly,
            Denied::UnknownToken,
            Denied::MissingToken,
        ] {
            assert!(!d.status().message().contains("token-0123"));
        }
    }

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
