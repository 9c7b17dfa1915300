//! Bearer-token authentication of the gRPC API: the tower layer that checks
//! `authorization: Bearer <token>` on every request against the tokens
//! checked by `[auth]` in the config.
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
//! ([`Token::matches`]) and never logged: their `Debug` is redacted and
//! refusals name only the RPC.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::HeaderMap;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::{ADMIN_SERVICE_NAME, BREAKER_SERVICE_NAME};
use crate::token::Token;

/// The checked tokens. Both `None`: no authentication, as before `[auth]`
/// existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Required by the `Breaker` service (the admin token is accepted too).
    pub data_token: Option<Token>,
    /// Required by the `Admin` service.
    pub admin_token: Option<Token>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const DATA: &str = "data-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn auth() -> AuthConfig {
        AuthConfig {
            data_token: Some(Token::new(DATA).unwrap()),
            admin_token: Some(Token::new(ADMIN).unwrap()),
        }
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
        let admin_only = AuthConfig {
            admin_token: Some(Token::new(ADMIN).unwrap()),
            data_token: None,
        };
        assert_eq!(admin_only.check(Access::Data, &HeaderMap::new()), Ok(()));
        assert_eq!(
            admin_only.check(Access::Admin, &HeaderMap::new()),
            Err(Denied::MissingToken)
        );
        assert_eq!(admin_only.mode(), "admin");
    }

    /// Refusals name the RPC at most, never a token.
    #[test]
    fn refusals_never_print_a_token() {
        for d in [
            Denied::AdminOnly,
            Denied::UnknownToken,
            Denied::MissingToken,
        ] {
            assert!(!d.status().message().contains("token-0123"));
        }
        assert!(!format!("{:?}", auth()).contains("token-0123"));
    }
}
