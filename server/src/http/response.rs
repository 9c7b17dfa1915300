//! The side port's responses: never cached, typed, and errors as
//! `{"error": message}` JSON, so a client can always parse what it gets.

use axum::{
    body::{Body, Bytes},
    response::Response,
};
use http::{HeaderValue, Method, StatusCode, Uri, header};

/// A response with `status`, `content_type` and `body`, never cached.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut res = Response::new(Body::from(body.into()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// A JSON response. The API's types only hold strings, numbers and
/// string-keyed maps, which always serialize; should one ever fail, the
/// client gets a 500 saying so rather than a truncated body.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            serde_json::json!({ "error": format!("response did not serialize: {e}") }).to_string(),
        ),
    }
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// 405 for `method` on `path`, naming the methods it `allow`s (RFC 9110
/// asks for the `Allow` header; the router would add one anyway).
pub fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Response {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {path}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// 404 for a path no route serves.
pub async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}
