//! The dashboard's JSON API: list and read circuits, set and clear
//! overrides (the writes need the admin token as `Authorization: Bearer`).
//!
//! Circuit names may hold `/` and `:`, so `{name}` is everything between
//! `/api/circuits/` and, for the override routes, `/override`; it may be
//! percent-encoded (`encodeURIComponent`), and the router's `Path`
//! extractor decodes it. The core checks it like any name.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{
        Path, Query,
        rejection::{PathRejection, QueryRejection},
    },
    response::Response,
};
use breakerd_policy::{Counters, OverrideKind, State};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::{
    cache::{PageQuery, Row, Taken},
    response::{error, json, respond},
    state::{HttpState, MAX_BODY_BYTES},
};
use breakerd_core::{
    CircuitSnapshot, CoreError, DEFAULT_PAGE_SIZE, ListQuery, MAX_PAGE_SIZE, validate_circuit_name,
};

/// Where the per-circuit routes start.
pub const CIRCUIT_PREFIX: &str = "/api/circuits/";

/// Actor recorded in the audit log for changes made from the dashboard.
pub const ACTOR: &str = "dashboard";
/// Longest operator name accepted with a change.
pub const MAX_OPERATOR_LEN: usize = 64;

/// One circuit of a list page: its snapshot, and its counters for the
/// dashboard's sparklines.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    snapshot: &'a CircuitSnapshot,
    counters: &'a Counters,
}

/// The HTTP status of a core error (the gRPC adapter has its own mapping).
fn core_status(e: &CoreError) -> StatusCode {
    match e {
        CoreError::InvalidName { .. }
        | CoreError::InvalidPolicy(_)
        | CoreError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        CoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        CoreError::TooManyCircuits { .. } => StatusCode::TOO_MANY_REQUESTS,
        CoreError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A refused request: its status and message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// Ask for credentials (`WWW-Authenticate: Bearer`).
    challenge: bool,
    /// For a 405: the methods the path allows.
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            challenge: false,
            allow: None,
        }
    }

    fn into_response(self) -> Response {
        let mut res = error(self.status, self.message);
        if self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self::new(core_status(&e), e.to_string())
    }
}

/// `GET /api/circuits?prefix=&state=&page_size=&page_token=`: one page of
/// circuits, ordered by name, each with its counters. `limit` and `after`
/// are other names of `page_size` and `page_token`. A page holds
/// [`DEFAULT_PAGE_SIZE`] circuits unless asked, at most [`MAX_PAGE_SIZE`]
/// (a larger size is clamped); `next_page_token` is the name to ask
/// `page_token=` for the next one (empty on the last). Unknown keys are
/// ignored; a repeated key counts its last value.
///
/// Pages are cut from the port's shared copy of the circuits, at most
/// `[http] list_cache_ms` old (`as_of_ms_ago` says how old), never by a
/// scan per request.
pub async fn list(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = match query {
        Ok(Query(pairs)) => pairs,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let mut q = ListQuery::default();
    for (k, v) in pairs {
        match k.as_str() {
            "prefix" => q.prefix = v,
            "page_token" | "after" => q.page_token = v,
            "page_size" | "limit" => match v.parse() {
                Ok(n) => q.page_size = n,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{k} {v:?} is not a number"),
                    );
                }
            },
            "state" => {
                q.state = match v.as_str() {
                    "" => None,
                    "closed" => Some(State::Closed),
                    "open" => Some(State::Open),
                    "half_open" => Some(State::HalfOpen),
                    other => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("state {other:?} is not closed, open or half_open"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if !q.page_token.is_empty() && validate_circuit_name(&q.page_token).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid page token {:?}", q.page_token),
        );
    }
    let limit = match q.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let taken = state.cache.fresh().await;
    let page = taken.page(&PageQuery {
        prefix: &q.prefix,
        state: q.state,
        after: &q.page_token,
        limit,
    });
    // A row's JSON is made once per copy for every reader, unless it holds
    // a remaining time.
    let item = |row: &Row| -> String {
        let snapshot = match Taken::timeless(row) {
            true => std::borrow::Cow::Borrowed(&row.snapshot),
            false => std::borrow::Cow::Owned(taken.current(row)),
        };
        // The derives only hold strings and numbers: serializing cannot fail.
        serde_json::to_string(&Listed {
            snapshot: &snapshot,
            counters: &row.counters,
        })
        .unwrap_or_default()
    };
    let mut body = String::from("{\"circuits\":[");
    for (i, row) in page.rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        if Taken::timeless(row) {
            body.push_str(row.list_text.get_or_init(|| item(row).into()));
        } else {
            body.push_str(&item(row));
        }
    }
    let tail = serde_json::json!({
        "next_page_token": page.next.unwrap_or_default(),
        "total_matching": page.total_matching,
        "as_of_ms_ago": u64::try_from(taken.age().as_millis()).unwrap_or(u64::MAX),
    })
    .to_string();
    // `tail` is an object: its fields follow the list.
    body.push_str("],");
    body.push_str(tail.strip_prefix('{').unwrap_or(&tail));
    respond(StatusCode::OK, "application/json", body)
}

/// Body of `POST /api/circuits/{name}/override`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOverride {
    kind: String,
    reason: String,
    #[serde(default)]
    expires_in_ms: Option<u64>,
    /// Who, shown in the audit log as `dashboard:<operator>`.
    #[serde(default)]
    operator: Option<String>,
}

/// Body of `DELETE /api/circuits/{name}/override`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearOverride {
    reason: String,
    #[serde(default)]
    operator: Option<String>,
}

fn actor(operator: Option<&str>) -> Result<String, ApiError> {
    match operator.map(str::trim).filter(|o| !o.is_empty()) {
        None => Ok(ACTOR.to_owned()),
        Some(o) if o.len() > MAX_OPERATOR_LEN || o.chars().any(char::is_control) => {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("operator must be at most {MAX_OPERATOR_LEN} bytes of printable text"),
            ))
        }
        Some(o) => Ok(format!("{ACTOR}:{o}")),
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token.
fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "write actions are disabled: no admin token is configured \
             (set [http] admin_token, --http-admin-token or BREAKERD_HTTP_ADMIN_TOKEN)",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        None => Err(ApiError {
            challenge: true,
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this action needs the admin token as `Authorization: Bearer <token>`",
            )
        }),
        Some(p) if token.matches(p) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong admin token")),
    }
}

async fn read_json<T>(body: Body) -> Result<T, ApiError>
where
    T: for<'de> Deserialize<'de>,
{
    let bytes = http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                )
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Everything under `/api/circuits/`: read one circuit, set or clear its
/// override. One route, because a name may hold `/`: the method and a raw
/// `/override` suffix say which action it is.
pub async fn circuit(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let name = name.map(|Path(name)| name);
    circuit_inner(&state, method, &uri, &headers, name, body)
        .await
        .unwrap_or_else(ApiError::into_response)
}

/// `/api/circuits/` itself: a circuit with an empty name, which the core
/// refuses like any bad name.
pub async fn unnamed(
    state: axum::extract::State<Arc<HttpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    circuit(state, method, uri, headers, Ok(Path(String::new())), body).await
}

async fn circuit_inner(
    state: &HttpState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    name: Result<String, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let path = uri.path();
    // The suffix is looked for before decoding, so a name holding an
    // encoded `%2Foverride` stays a name.
    let raw = path.strip_prefix(CIRCUIT_PREFIX).unwrap_or_default();
    let is_override = method != Method::GET && raw.ends_with("/override");
    let name = name.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the circuit name is not valid percent-encoded UTF-8",
        )
    })?;
    let name = match is_override {
        true => name.strip_suffix("/override").unwrap_or(&name),
        false => &name,
    };
    let detail = match (method, is_override) {
        (Method::GET, false) => state.registry.get(name)?,
        (Method::POST, true) => {
            authorize(state, headers)?;
            let body: SetOverride = read_json(body).await?;
            let kind = match body.kind.as_str() {
                "forced_open" => OverrideKind::ForcedOpen,
                "forced_closed" => OverrideKind::ForcedClosed,
                "disabled" => OverrideKind::Disabled,
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("kind {other:?} is not forced_open, forced_closed or disabled"),
                    ));
                }
            };
            let actor = actor(body.operator.as_deref())?;
            let expires_in = body.expires_in_ms.map(Duration::from_millis);
            let d = state
                .registry
                .set_override(name, kind, &actor, &body.reason, expires_in)
                .await?;
            // Its writer reads the list back at once.
            state.cache.invalidate();
            d
        }
        (Method::DELETE, true) => {
            authorize(state, headers)?;
            let body: ClearOverride = read_json(body).await?;
            let actor = actor(body.operator.as_deref())?;
            let d = state
                .registry
                .clear_override(name, &actor, &body.reason)
                .await?;
            state.cache.invalidate();
            d
        }
        (m, is_override) => {
            return Err(ApiError {
                allow: Some(if is_override {
                    "GET, POST, DELETE"
                } else {
                    "GET"
                }),
                ..ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{m} is not allowed on {path}"),
                )
            });
        }
    };
    Ok(json(StatusCode::OK, &detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Names and queries are decoded by the router's extractors: `%XX` in
    /// both, `+` as a space in queries only, and a name that is not UTF-8
    /// once decoded is refused.
    #[tokio::test]
    async fn percent_decoding() {
        use tower::ServiceExt;

        let config = crate::config::Config::default();
        let registry =
            breakerd_core::Registry::new(config.registry_config(), config.resolver.clone());
        let (_stop, shutdown) = crate::shutdown::ShutdownSignal::new();
        let http = crate::http::HttpConfig::new(10);
        let state = HttpState::new(
            registry.clone(),
            crate::middleware::metrics::RpcMetrics::new(),
            http,
            shutdown,
        );
        let get = |path: &str| {
            let req = http::Request::get(path).body(Body::empty()).unwrap();
            let router = crate::http::router(state.clone());
            async move {
                let res = router.oneshot(req).await.unwrap();
                let status = res.status();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&body).unwrap();
                (status, body)
            }
        };
        registry.acquire("recs:v2/x", "web-1").unwrap();
        let (status, body) = get("/api/circuits/recs%3Av2%2Fx").await;
        assert_eq!(
            (status, &body["name"]),
            (StatusCode::OK, &json!("recs:v2/x"))
        );
        // `+` stays itself in a path (and is then no valid name byte)...
        let (status, body) = get("/api/circuits/a+b").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("0x2b"), "{body}");
        // ...and is a space in a query.
        let (status, body) = get("/api/circuits?state=half+open").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().contains("\"half open\""),
            "{body}"
        );
        for bad in ["%zz", "%4", "%ff"] {
            let (status, body) = get(&format!("/api/circuits/{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        assert_eq!(registry.len(), 1, "no request created a circuit");
    }

    /// The JSON the API serves for a circuit is the core types' derives;
    /// this pins its shape (names, units, enum spellings, `null`s), which
    /// the dashboard and scripts read, so a change to a derive shows here.
    #[tokio::test(start_paused = true)]
    async fn a_circuit_reads_as_the_documented_json() {
        use breakerd_core::{PolicyResolver, Registry, RegistryConfig};
        use breakerd_policy::PolicySpec;

        let r = Registry::new(RegistryConfig::default(), PolicyResolver::default());
        let tuned = PolicySpec {
            consecutive_failures: Some(9),
            ..Default::default()
        };
        r.set_policy("c", &tuned, "ops", "noisy").await.unwrap();
        r.set_override(
            "c",
            OverrideKind::ForcedOpen,
            "ops",
            "why",
            Some(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
        let d = r.get("c").unwrap();
        let v = serde_json::to_value(&d).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "admin_policy",
                "counters",
                "deleted",
                "generation",
                "history",
                "name",
                "open_remaining_ms",
                "override",
                "policy",
                "policy_version",
                "state",
            ]
        );
        assert_eq!(v["name"], json!("c"));
        assert_eq!(v["state"], json!("open"));
        assert_eq!(v["deleted"], json!(false));
        assert_eq!(v["generation"], json!(d.snapshot.generation));
        assert_eq!(
            v["override"],
            json!({
                "kind": "forced_open",
                "reason": "why",
                "actor": "ops",
                "expires_in_ms": 1500,
            })
        );
        assert_eq!(v["admin_policy"]["consecutive_failures"], json!(9));
        assert_eq!(v["policy"]["consecutive_failures"], json!(9));
        let counters = v["counters"].as_object().unwrap();
        assert_eq!(counters.len(), Counters::LEN);
        for (name, value) in d.counters.fields() {
            assert_eq!(counters[name], json!(value), "counters.{name}");
        }
        let h = &v["history"][0];
        assert_eq!(
            (&h["from"], &h["to"], &h["cause"]),
            (&json!("closed"), &json!("open"), &json!("override_set"))
        );
        assert_eq!(h["age_ms"], json!(0));

        // A circuit with nothing set reads `null` where the admin policy
        // and the override would be.
        r.acquire("plain", "n").unwrap();
        let plain = serde_json::to_value(r.get("plain").unwrap()).unwrap();
        assert_eq!(plain["override"], Value::Null);
        assert_eq!(plain["admin_policy"], Value::Null);
        assert_eq!(plain["counters"]["total_allowed"], json!(1));
    }

    #[test]
    fn actors() {
        assert_eq!(actor(None).unwrap(), "dashboard");
        assert_eq!(actor(Some("  ")).unwrap(), "dashboard");
        assert_eq!(actor(Some("ann")).unwrap(), "dashboard:ann");
        assert!(actor(Some("a\nb")).is_err());
        assert!(actor(Some(&"x".repeat(65))).is_err());
    }
}
