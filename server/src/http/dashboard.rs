//! `GET /`: the dashboard, one page of vanilla HTML, JS and CSS embedded in
//! the binary (no build step, nothing fetched from elsewhere).
//!
//! The page lists every circuit with its state, generation, override and a
//! failure-rate sparkline; it follows `/events` for live state, polls
//! `/api/circuits` every few seconds for counters (the sparklines are the
//! failure rate of each interval), and sets or clears overrides through the
//! API with the admin token the operator types in (kept in
//! `sessionStorage`, never in the page's URL).

use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::response::respond;

const HTML: &str = include_str!("assets/dashboard.html");
const JS: &str = include_str!("assets/dashboard.js");
const CSS: &str = include_str!("assets/dashboard.css");

/// Only our own files, no inline script, no framing by other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// One of our files, with the headers that keep it to itself.
fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut res = respond(StatusCode::OK, content_type, text);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
