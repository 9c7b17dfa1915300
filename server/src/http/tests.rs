//! The side port over a real socket on 127.0.0.1:0, driven with raw
//! HTTP/1.1 requests: metrics after a trip, cardinality caps, auth, bad
//! input, and the event stream.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use breakerd_policy::{Decision, Outcome, OverrideKind, State};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;
use breakerd_core::{OutcomeIn, Registry};

const TOKEN: &str = "s3cret-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(10);

struct Side {
    addr: SocketAddr,
    registry: Arc<Registry>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start(token: Option<&str>, max_circuit_series: usize) -> Side {
    let config = crate::config::Config::default();
    let registry = Registry::new(config.registry_config(), config.resolver.clone());
    let (stop_tx, stop) = ShutdownSignal::new();
    let http = HttpConfig {
        admin_token: token.map(|t| AdminToken::new(t).unwrap()),
        // These tests read what they just changed: no cached copy.
        limits: HttpLimits {
            list_cache: Duration::ZERO,
            ..HttpLimits::default()
        },
        ..HttpConfig::new(max_circuit_series)
    };
    let state = HttpState::new(registry.clone(), RpcMetrics::new(), http, stop);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, Duration::from_secs(1)));
    Side {
        addr,
        registry,
        _stop: stop_tx,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("reply in time")
}

async fn req(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>, body: &str) -> Reply {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(addr, text.as_bytes()).await
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn trip(registry: &Registry, name: &str) {
    for _ in 0..5 {
        let Decision::Allow { generation, .. } = registry.acquire(name, "web-1").unwrap().decision
        else {
            panic!("{name} should allow");
        };
        let out = OutcomeIn {
            circuit: name.to_owned(),
            generation,
            lease: None,
            outcome: Outcome::Failure,
            latency: Duration::from_millis(3),
            age: Duration::ZERO,
        };
        registry.report("web-1", &[out]).await.unwrap();
    }
    assert_eq!(registry.get(name).unwrap().snapshot.state, State::Open);
}

#[tokio::test]
async fn metrics_follow_a_trip() {
    let side = start(None, 200).await;
    let before = req(side.addr, "GET", "/metrics", None, "").await;
    assert_eq!(before.status, 200);
    assert!(
        before.head.contains("text/plain; version=0.0.4"),
        "{}",
        before.head
    );
    assert_eq!(
        sample(&before.body, "breakerd_circuits{state=\"open\"}"),
        Some(0.0)
    );

    trip(&side.registry, "payments").await;
    side.registry.acquire("search", "web-1").unwrap();
    assert!(
        !side
            .registry
            .acquire("payments", "web-1")
            .unwrap()
            .decision
            .is_allowed()
    );

    let m = req(side.addr, "GET", "/metrics", None, "").await.body;
    let v = |s: &str| sample(&m, s).unwrap_or_else(|| panic!("no {s} in\n{m}"));
    assert_eq!(v("breakerd_circuits{state=\"open\"}"), 1.0);
    assert_eq!(v("breakerd_circuits{state=\"closed\"}"), 1.0);
    assert_eq!(
        v("breakerd_transitions_total{from=\"closed\",to=\"open\",cause=\"consecutive_failures\"}"),
        1.0
    );
    assert_eq!(v("breakerd_outcomes_total{kind=\"failure\"}"), 5.0);
    assert_eq!(v("breakerd_rejections_total{reason=\"open\"}"), 1.0);
    assert_eq!(v("breakerd_acquires_total"), 7.0);
    assert_eq!(
        v("breakerd_circuit_state{circuit=\"payments\",state=\"open\"}"),
        1.0
    );
    assert_eq!(
        v("breakerd_circuit_state{circuit=\"search\",state=\"closed\"}"),
        1.0
    );
    assert!(!m.contains("circuit=\"_other\",state"), "{m}");
    // Every sample line is `name{labels} number` or `name number`.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn per_circuit_series_are_capped_with_open_ones_first() {
    let side = start(None, 2).await;
    for name in ["a", "b", "c", "d"] {
        side.registry.acquire(name, "web-1").unwrap();
    }
    trip(&side.registry, "z-open").await;
    let m = req(side.addr, "GET", "/metrics", None, "").await.body;
    let circuits: std::collections::BTreeSet<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("breakerd_circuit_state{circuit=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        circuits.into_iter().collect::<Vec<_>>(),
        ["_other", "a", "z-open"],
        "{m}"
    );
    let v = |s: &str| sample(&m, s).unwrap_or_else(|| panic!("no {s} in\n{m}"));
    assert_eq!(
        v("breakerd_circuit_state{circuit=\"_other\",state=\"closed\"}"),
        3.0
    );
    assert_eq!(
        v("breakerd_circuit_state{circuit=\"_other\",state=\"open\"}"),
        0.0
    );
    assert_eq!(v("breakerd_circuits{state=\"closed\"}"), 4.0);

    let none = start(None, 0).await;
    none.registry.acquire("a", "web-1").unwrap();
    let m = req(none.addr, "GET", "/metrics", None, "").await.body;
    assert_eq!(
        sample(
            &m,
            "breakerd_circuit_state{circuit=\"_other\",state=\"closed\"}"
        ),
        Some(1.0)
    );
    assert!(!m.contains("circuit=\"a\""), "{m}");
}

const FORCE_CLOSED: &str = r#"{"kind":"forced_closed","reason":"failover done","operator":"ann"}"#;

#[tokio::test]
async fn writes_are_refused_without_a_configured_token() {
    let side = start(None, 200).await;
    side.registry.acquire("payments", "web-1").unwrap();
    let r = req(
        side.addr,
        "POST",
        "/api/circuits/payments/override",
        Some(TOKEN),
        FORCE_CLOSED,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("no admin token is configured"),
        "{}",
        r.body
    );
    assert!(
        side.registry
            .get("payments")
            .unwrap()
            .snapshot
            .override_
            .is_none()
    );
}

#[tokio::test]
async fn writes_need_the_right_token() {
    let side = start(Some(TOKEN), 200).await;
    let path = "/api/circuits/recs%3Av2/override";
    let r = req(side.addr, "POST", path, None, FORCE_CLOSED).await;
    assert_eq!(r.status, 401);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    let r = req(
        side.addr,
        "POST",
        path,
        Some("s3cret-token-0123456788"),
        FORCE_CLOSED,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(side.registry.get("recs:v2").is_err(), "nothing was created");

    let r = req(side.addr, "POST", path, Some(TOKEN), FORCE_CLOSED).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let detail: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(detail["override"]["kind"], "forced_closed");
    assert_eq!(detail["override"]["actor"], "dashboard:ann");
    let ov = side
        .registry
        .get("recs:v2")
        .unwrap()
        .snapshot
        .override_
        .unwrap();
    assert_eq!(
        (ov.kind, ov.reason.as_str()),
        (OverrideKind::ForcedClosed, "failover done")
    );

    // A reason is required to clear it too.
    let r = req(side.addr, "DELETE", path, Some(TOKEN), r#"{"reason":" "}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = req(
        side.addr,
        "DELETE",
        path,
        Some(TOKEN),
        r#"{"reason":"done"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        side.registry
            .get("recs:v2")
            .unwrap()
            .snapshot
            .override_
            .is_none()
    );
}

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_changes_nothing() {
    let side = start(Some(TOKEN), 200).await;
    let a = side.addr;
    let o = "/api/circuits/payments/override";
    for (method, path, body, status) in [
        ("POST", o, "{", 400),
        ("POST", o, r#"{"kind":"forced_sideways","reason":"x"}"#, 400),
        (
            "POST",
            o,
            r#"{"kind":"forced_open","reason":"x","extra":1}"#,
            400,
        ),
        ("POST", o, r#"{"kind":"forced_open","reason":""}"#, 400),
        (
            "POST",
            o,
            r#"{"kind":"forced_open","reason":"x","expires_in_ms":0}"#,
            400,
        ),
        (
            "POST",
            "/api/circuits/bad%20name/override",
            FORCE_CLOSED,
            400,
        ),
        ("POST", "/api/circuits/%ff/override", FORCE_CLOSED, 400),
        ("GET", "/api/circuits/nope", "", 404),
        ("GET", "/api/circuits?state=purple", "", 400),
        ("GET", "/api/circuits?page_size=x", "", 400),
        ("PUT", o, "", 405),
        ("POST", "/metrics", "", 405),
        ("GET", "/nowhere", "", 404),
    ] {
        let r = req(a, method, path, Some(TOKEN), body).await;
        assert_eq!(r.status, status, "{method} {path} {body}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            r.body
        );
    }
    assert!(side.registry.is_empty(), "no request created a circuit");

    let big = format!(
        r#"{{"kind":"forced_open","reason":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let r = req(a, "POST", o, Some(TOKEN), &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = raw(a, b"\x00\x01garbage\r\n\r\n").await;
    assert_eq!(r.status, 400);
    // Still serving.
    assert_eq!(req(a, "GET", "/metrics", None, "").await.status, 200);
}

#[tokio::test]
async fn pages_and_listing() {
    let side = start(None, 200).await;
    for name in ["a", "b", "c"] {
        side.registry.acquire(name, "web-1").unwrap();
    }
    let page: serde_json::Value = serde_json::from_str(
        &req(side.addr, "GET", "/api/circuits?page_size=2", None, "")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(page["total_matching"], 3);
    assert_eq!(page["next_page_token"], "b");
    assert_eq!(page["circuits"][0]["counters"]["total_allowed"], 1);
    let page: serde_json::Value = serde_json::from_str(
        &req(
            side.addr,
            "GET",
            "/api/circuits?page_size=2&page_token=b",
            None,
            "",
        )
        .await
        .body,
    )
    .unwrap();
    assert_eq!(page["circuits"][0]["name"], "c");
    assert_eq!(page["next_page_token"], "");
    for path in ["/", "/dashboard.js", "/dashboard.css"] {
        let r = req(side.addr, "GET", path, None, "").await;
        assert_eq!(r.status, 200, "{path}");
    }
}

#[tokio::test]
async fn events_stream_a_snapshot_then_changes() {
    let side = start(None, 200).await;
    side.registry.acquire("payments", "web-1").unwrap();
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "\"payments\"").await;
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: snapshot"), "{seen}");

    trip(&side.registry, "payments").await;
    read_until(&mut s, &mut seen, "\"state\":\"open\"").await;
    assert!(seen.contains("event: changed"), "{seen}");
    let m = req(side.addr, "GET", "/metrics", None, "").await.body;
    assert_eq!(
        sample(&m, "breakerd_connected_clients{kind=\"sse\"}"),
        Some(1.0)
    );
}

/// Reads from `s` into `seen` until it holds `needle`, within [`DEADLINE`].
async fn read_until(s: &mut TcpStream, seen: &mut String, needle: &str) {
    let fut = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended; got {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("no {needle} within {DEADLINE:?}"));
}
