//! [`Denied`]: why a request was refused, and the gRPC status it is
//! answered with. The status never contains the token.

use tonic::{Code, Status};

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
