//! The whole node over real sockets: the simulated upstream, the HTTP
//! server and a breakerd client whose coordinator is unreachable (so the
//! circuit decides locally with the real policy engine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;

use super::*;

struct Node {
    addr: SocketAddr,
    chaos: Arc<Chaos>,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Node {
    let chaos = Arc::new(Chaos::new(0.0, 0.0, Duration::from_millis(1)));
    let upstream = upstream::spawn_simulated("127.0.0.1:0".parse().unwrap(), Arc::clone(&chaos))
        .await
        .unwrap();
    let coordinator = Coordinator::builder()
        .endpoint("http://127.0.0.1:1")
        .node_id("web-test")
        .build()
        .unwrap();
    let app = Arc::new(App {
        circuit: coordinator.circuit("pricing").unwrap(),
        coordinator,
        retry: RetryPolicy::builder()
            .base_delay(Duration::from_millis(5))
            .build()
            .unwrap(),
        fallback: Fallback::new()
            .last_known_good(Duration::from_secs(60))
            .alternative(|s: String| async move {
                upstream::reference_price(&s)
                    .filter(|_| s != "ACME")
                    .map(Some)
                    .ok_or("none")
            })
            .static_value(None),
        upstream: UpstreamClient::new(format!("http://{upstream}")),
        timeout: Duration::from_millis(500),
        chaos: Arc::clone(&chaos),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, async {
        let _ = stopped.await;
    }));
    Node {
        addr,
        chaos,
        _stop: stop,
    }
}

async fn get(addr: SocketAddr, path: &str, trace: Option<&str>) -> (u16, Option<String>, Value) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(t) = trace {
        req = req.header("x-trace-id", t);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("answer within 10 s")
    .unwrap();
    let status = res.status().as_u16();
    let trace = res
        .headers()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, trace, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_degrade_through_the_tiers() {
    let node = start().await;

    let (status, trace, body) = get(node.addr, "/quote?symbol=acme", Some("req-1")).await;
    assert_eq!(status, 200);
    assert_eq!(trace.as_deref(), Some("req-1"), "the trace id comes back");
    assert_eq!(body["source"], "primary");
    assert_eq!(body["symbol"], "ACME");
    assert!(body["price"].as_f64().is_some());

    let (status, _, body) = get(node.addr, "/quote?symbol=NOPE", None).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &Value::from("unknown symbol"))
    );
    let (status, _, _) = get(node.addr, "/quote?symbol=no%20pe", None).await;
    assert_eq!(status, 400);

    // The upstream goes down: the cached price, then the reference table,
    // then the static answer.
    node.chaos.set(Some(1.0), None);
    let (_, _, body) = get(node.addr, "/quote?symbol=ACME", None).await;
    assert_eq!(
        (&body["source"], &body["degraded"]),
        (&Value::from("last_known_good"), &Value::from(true))
    );
    let (_, _, body) = get(node.addr, "/quote?symbol=GLOBEX", None).await;
    assert_eq!(body["source"], "alternative");
    assert_eq!(body["price"], 47.8);
    let (_, _, body) = get(node.addr, "/quote?symbol=NOPE", None).await;
    assert_eq!(
        (&body["source"], &body["price"]),
        (&Value::from("static"), &Value::Null)
    );

    // Five consecutive failures opened the circuit: even with the upstream
    // healthy again, the node answers without calling it until the open
    // duration (60 s) has passed.
    node.chaos.set(Some(0.0), None);
    let (_, _, body) = get(node.addr, "/quote?symbol=ACME", None).await;
    assert_eq!(body["source"], "last_known_good");

    let (_, _, health) = get(node.addr, "/healthz", None).await;
    assert_eq!(health["status"], "degraded", "no coordinator here");
}
