//! The access matrix: which token opens which service, and what a refusal
//! says.

use http::{HeaderMap, HeaderValue};
use tonic::Code;

use super::*;
use crate::token::Token;

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
