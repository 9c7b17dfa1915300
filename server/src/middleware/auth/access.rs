//! Who may call what: the [`Access`] an RPC needs, by its service, and the
//! checked tokens ([`AuthConfig`]) that decide whether a request's
//! `authorization` header grants it.

use http::HeaderMap;

use super::error::Denied;
use crate::{
    grpc::{ADMIN_SERVICE_NAME, BREAKER_SERVICE_NAME},
    token::Token,
};

/// The checked tokens. Both `None`: no authentication, as before `[auth]`
/// existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Required by the `Breaker` service (the admin token is accepted too).
    pub data_token: Option<Token>,
    /// Required by the `Admin` service.
    pub admin_token: Option<Token>,
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
