//! The HTTP side port next to the real gRPC server (`app::serve_with_http`,
//! what the binary runs): a circuit tripped over gRPC shows up in
//! `/metrics` (state counts, transitions, rejections, per-method latency
//! histograms, connected watchers) with per-circuit series capped, and in
//! the JSON API; shutdown stops both ports. Every wait has a deadline.

use std::net::SocketAddr;

use breakerd_e2e::{config, within};
use breakerd_proto::v1::{self as pb, breaker_client::BreakerClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tonic::transport::Channel;

/// One HTTP/1.1 GET, read to the end; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(&format!("GET {path}"), async {
        let mut s = TcpStream::connect(addr).await.expect("connect http");
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_owned())
    })
    .await
}

/// The value of `series` (name and labels exactly as exposed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn acquire(client: &mut BreakerClient<Channel>, circuit: &str) -> pb::AcquireResponse {
    client
        .acquire(pb::AcquireRequest {
            circuit: circuit.into(),
            node_id: "web-1".into(),
        })
        .await
        .expect("acquire")
        .into_inner()
}

#[tokio::test]
async fn metrics_and_api_follow_a_trip_over_grpc() {
    let cfg = config(
        "[server]\nshutdown_drain_ms = 2000\n[http]\nmetrics_max_circuit_series = 1\n\
         list_cache_ms = 0\n",
    );
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(breakerd::app::serve_with_http(
        cfg,
        grpc,
        Some(http),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = within(
        "connecting",
        Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("connect");
    let mut client = BreakerClient::new(channel);

    let (status, before) = get(http_addr, "/metrics").await;
    assert_eq!(status, 200);
    let trips =
        "breakerd_transitions_total{from=\"closed\",to=\"open\",cause=\"consecutive_failures\"}";
    assert_eq!(sample(&before, trips), 0.0);

    // A watcher, then a trip: 5 failures reported over gRPC.
    let mut watch = client
        .watch(pb::WatchRequest {
            circuits: vec!["payments".into()],
            node_id: "web-1".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    within("the first watch event", watch.message())
        .await
        .expect("watch event")
        .expect("watch open");
    acquire(&mut client, "search").await;
    for _ in 0..5 {
        let a = acquire(&mut client, "payments").await;
        assert!(a.allowed);
        client
            .report(pb::ReportRequest {
                node_id: "web-1".into(),
                outcomes: vec![pb::OutcomeReport {
                    circuit: "payments".into(),
                    generation: a.generation,
                    lease_id: 0,
                    outcome: pb::Outcome::Failure.into(),
                    latency_us: 2000,
                    age_us: 0,
                }],
            })
            .await
            .expect("report");
    }
    let rejected = acquire(&mut client, "payments").await;
    assert!(!rejected.allowed);

    let (_, m) = get(http_addr, "/metrics").await;
    assert_eq!(sample(&m, "breakerd_circuits{state=\"open\"}"), 1.0, "{m}");
    assert_eq!(
        sample(&m, "breakerd_circuits{state=\"closed\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, trips), sample(&before, trips) + 1.0, "{m}");
    assert!(
        sample(&m, "breakerd_rejections_total{reason=\"open\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "breakerd_outcomes_total{kind=\"failure\"}"),
        5.0,
        "{m}"
    );
    let acquires = "breakerd_rpc_duration_seconds_count{method=\"breakerd.v1.Breaker/Acquire\"}";
    assert_eq!(sample(&m, acquires), 7.0, "{m}");
    assert_eq!(
        sample(&m, "breakerd_connected_clients{kind=\"grpc_watch\"}"),
        1.0,
        "{m}"
    );
    // The cap is 1: the open circuit keeps its own series, the closed one
    // is counted under _other.
    assert_eq!(
        sample(
            &m,
            "breakerd_circuit_state{circuit=\"payments\",state=\"open\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(!m.contains("circuit=\"search\""), "{m}");
    assert_eq!(
        sample(
            &m,
            "breakerd_circuit_state{circuit=\"_other\",state=\"closed\"}"
        ),
        1.0,
        "{m}"
    );

    // The JSON API agrees.
    let (status, body) = get(http_addr, "/api/circuits/payments").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"open\""), "{body}");
    assert!(
        body.contains("\"cause\":\"consecutive_failures\""),
        "{body}"
    );

    // Closing the watch is seen too.
    drop(watch);
    within("the watch to be counted as closed", async {
        loop {
            let (_, m) = get(http_addr, "/metrics").await;
            if sample(&m, "breakerd_connected_clients{kind=\"grpc_watch\"}") == 0.0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    let _ = stop.send(());
    within("serve to return", server)
        .await
        .expect("serve task")
        .expect("serve");
    assert!(
        TcpStream::connect(http_addr).await.is_err(),
        "the side port is closed after shutdown"
    );
}
