//! The side port's routes, on axum: which handler serves which path and
//! method, and the JSON 404 and 405 answers for everything else.
//!
//! Every route is behind the `Host` check ([`hosts`]).
//!
//! `get` routes answer `HEAD` too, as before; `/events` and
//! `/api/circuits` never did (a `HEAD` there is 405), so they say so.

use std::sync::Arc;

use axum::{
    Router,
    handler::Handler,
    response::Response,
    routing::{MethodRouter, any, get},
};
use http::{Method, Uri};

use super::{
    api, dashboard, hosts, metrics,
    response::{method_not_allowed, not_found},
    sse,
    state::HttpState,
};

/// Every route of the side port over `state`.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(metrics::scrape).fallback(not_allowed("GET, HEAD")),
        )
        .route("/", get(dashboard::page).fallback(not_allowed("GET, HEAD")))
        // The page's own files have no 405: any other method is a 404.
        .route("/dashboard.js", get(dashboard::script).fallback(not_found))
        .route("/dashboard.css", get(dashboard::style).fallback(not_found))
        .route("/events", get_only(sse::events))
        .route("/api/circuits", get_only(api::list))
        .route("/api/circuits/", any(api::unnamed))
        .route("/api/circuits/{*name}", any(api::circuit))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hosts::check,
        ))
        .with_state(state)
}

/// `handler` for `GET` alone: `HEAD` and the rest are 405.
fn get_only<H, T>(handler: H) -> MethodRouter<Arc<HttpState>>
where
    H: Handler<T, Arc<HttpState>>,
    T: 'static,
{
    let refuse = not_allowed("GET");
    get(handler).head(refuse.clone()).fallback(refuse)
}

/// A handler answering 405, naming the methods in `allow`.
fn not_allowed(
    allow: &'static str,
) -> impl Fn(Method, Uri) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |method: Method, uri: Uri| {
        std::future::ready(method_not_allowed(&method, uri.path(), allow))
    }
}
