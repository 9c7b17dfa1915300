//! End-to-end tests of the server's hardening over real gRPC on a loopback
//! port: oversized messages, garbage on the socket, oversized headers,
//! connection age, and the per-client limits on requests and new circuits.
//! After every abuse the server must keep serving others. Every wait has a
//! deadline; nothing sleeps for a state change.

use breakerd::grpc::ManualClock;
use breakerd_e2e::{TestServer, config, within};
use breakerd_proto::v1::{self as pb, breaker_client::BreakerClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, Request, metadata::MetadataValue};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (length 0, type 4, no flags, stream 0).
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

fn acquire(circuit: &str, node_id: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        circuit: circuit.into(),
        node_id: node_id.into(),
    }
}

/// The server still answers a fresh Acquire.
async fn still_serving(server: &TestServer, circuit: &str) {
    let res = within("an acquire", server.breaker().acquire(acquire(circuit, "")))
        .await
        .expect("the server keeps serving");
    assert!(res.get_ref().allowed);
}

/// Reads until the server closes the connection (EOF or reset), returning
/// what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the server to close the connection", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start_with(config("[server]\nmax_message_bytes = 1024\n")).await;
    let outcomes = (0..200)
        .map(|i| pb::OutcomeReport {
            circuit: format!("big-{i}"),
            generation: 1,
            lease_id: 0,
            outcome: pb::Outcome::Success.into(),
            latency_us: 1,
            age_us: 0,
        })
        .collect();
    let err = within(
        "an oversized report",
        server.breaker().report(pb::ReportRequest {
            node_id: "n1".into(),
            outcomes,
        }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    still_serving(&server, "after-big").await;
}

#[tokio::test]
async fn garbage_bytes_close_the_connection_and_the_server_keeps_serving() {
    let server = TestServer::start().await;

    // Not HTTP/2 at all.
    let mut junk = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    junk.write_all(b"\x16\x03\x01\x00\xffGET / HTTP/1.1\r\n\xff\xfe\x00garbage\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut junk).await;

    // A valid preface, then nonsense frames: the server answers with its
    // SETTINGS and a GOAWAY, then closes.
    let mut bad_frames = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    bad_frames.write_all(PREFACE).await.unwrap();
    bad_frames.write_all(&[0xff; 64]).await.unwrap();
    let seen = read_until_closed(&mut bad_frames).await;
    // Some frame of type GOAWAY (7) on stream 0 came back.
    assert!(
        seen.windows(9)
            .any(|f| f[3] == 7 && f[5..9] == [0, 0, 0, 0]),
        "no GOAWAY in {seen:02x?}"
    );

    // Meanwhile, and afterwards, others are served.
    still_serving(&server, "after-junk").await;
}

#[tokio::test]
async fn headers_over_the_list_size_are_refused() {
    let server =
        TestServer::start_with(config("[server]\nhttp2_max_header_list_size = 2048\n")).await;
    let with_padding = |bytes: usize| {
        let mut req = Request::new(acquire("big-headers", "n1"));
        let pad = "x".repeat(bytes);
        req.metadata_mut()
            .insert("x-padding", MetadataValue::try_from(pad.as_str()).unwrap());
        req
    };
    // A little over: this stream is answered 431, the connection lives on.
    let err = within(
        "an acquire with large headers",
        server.breaker().acquire(with_padding(3000)),
    )
    .await
    .expect_err("headers over the limit must be refused");
    assert!(err.message().contains("431"), "{err:?}");
    still_serving(&server, "between-headers").await;
    // Far over: the connection is closed (GOAWAY ENHANCE_YOUR_CALM).
    let err = within(
        "an acquire with huge headers",
        server.breaker().acquire(with_padding(64 * 1024)),
    )
    .await
    .expect_err("headers far over the limit must be refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Refused before the handler: nothing was created.
    let get = server
        .admin()
        .get_circuit(pb::GetCircuitRequest {
            name: "big-headers".into(),
        })
        .await;
    assert_eq!(get.unwrap_err().code(), Code::NotFound);
    still_serving(&server, "after-headers").await;
}

#[tokio::test]
async fn connections_past_their_age_are_sent_away() {
    let server = TestServer::start_with(config(
        "[server]\nmax_connection_age_ms = 1000\nmax_connection_age_grace_ms = 1000\n",
    ))
    .await;
    let mut idle = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let opened = std::time::Instant::now();
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(&EMPTY_SETTINGS).await.unwrap();
    let seen = read_until_closed(&mut idle).await;
    // The server spoke HTTP/2 (its SETTINGS first), kept the idle
    // connection for its age, then closed it.
    assert_eq!(seen.get(3), Some(&4), "{seen:02x?}");
    let lived = opened.elapsed();
    assert!(
        lived >= std::time::Duration::from_millis(900),
        "closed after {lived:?}"
    );
    // New connections are served (the shared channel's own connection
    // aged too, so a fresh one is used).
    let channel = within(
        "connecting",
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let res = BreakerClient::new(channel)
        .acquire(acquire("after-age", ""))
        .await
        .unwrap();
    assert!(res.get_ref().allowed);
}

/// A config whose per-client limits run on a clock the test moves: how
/// long the machine takes to run the requests cannot refill a bucket.
fn frozen_limits(toml: &str) -> (breakerd::config::Config, ManualClock) {
    let mut c = config(toml);
    let clock = ManualClock::new();
    c.client_limits_clock = Some(clock.clone());
    (c, clock)
}

#[tokio::test]
async fn the_request_rate_limit_is_resource_exhausted_with_a_retry_hint() {
    let (c, clock) = frozen_limits("[limits]\nclient_requests_per_second = 5\n");
    let server = TestServer::start_with(c).await;
    let mut client = server.breaker();
    // Bursts of twice the rate go through.
    for _ in 0..10 {
        client.acquire(acquire("rate", "greedy")).await.unwrap();
    }
    let err = client.acquire(acquire("rate", "greedy")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let hint: u64 = err
        .metadata()
        .get("retry-after-ms")
        .expect("retry-after-ms metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The clock stood still: exactly one interval to wait.
    assert_eq!(hint, 200, "retry after {hint} ms");
    assert!(
        err.message().contains("peer 127.0.0.1 (node \"greedy\")")
            && err.message().contains("retry after 200 ms"),
        "{err:?}"
    );
    // Reports count too, per batch.
    let err = client
        .report(pb::ReportRequest {
            node_id: "greedy".into(),
            outcomes: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Limits are per address: another node id from the same one gets no
    // fresh bucket.
    let err = client.acquire(acquire("rate", "polite")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // After the hint, one more.
    clock.advance(std::time::Duration::from_millis(hint));
    client.acquire(acquire("rate", "greedy")).await.unwrap();
    client.acquire(acquire("rate", "greedy")).await.unwrap_err();

    // On ReportStream every batch is a request: the stream ends with the
    // refusal, the hint in its trailers.
    clock.advance(std::time::Duration::from_secs(10));
    let batches = (0..12).map(|_| pb::ReportRequest {
        node_id: "streamer".into(),
        outcomes: vec![],
    });
    let mut responses = client
        .report_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    let err = loop {
        match within("a report stream answer", responses.message()).await {
            Ok(Some(_)) => answered += 1,
            Ok(None) => panic!("the stream ended without a refusal"),
            Err(e) => break e,
        }
    };
    assert_eq!(answered, 10);
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.metadata().get("retry-after-ms").is_some(), "{err:?}");
}

#[tokio::test]
async fn the_new_circuit_limit_is_resource_exhausted_and_creates_nothing() {
    let server =
        TestServer::start_with(config("[limits]\nclient_new_circuits_per_minute = 2\n")).await;
    let mut client = server.breaker();
    client.acquire(acquire("new-a", "maker")).await.unwrap();
    client.acquire(acquire("new-b", "maker")).await.unwrap();
    let err = client.acquire(acquire("new-c", "maker")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("new circuits"), "{err:?}");
    let hint: u64 = err
        .metadata()
        .get("retry-after-ms")
        .expect("retry-after-ms metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30_000).contains(&hint), "retry after {hint} ms");

    // A watch that would create circuits is refused whole.
    let err = client
        .watch(pb::WatchRequest {
            circuits: vec!["new-a".into(), "new-d".into()],
            node_id: "maker".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let mut admin = server.admin();
    for name in ["new-c", "new-d"] {
        let err = admin
            .get_circuit(pb::GetCircuitRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name} was created");
    }
    // Circuits that exist cost nothing.
    client.acquire(acquire("new-a", "maker")).await.unwrap();
    let mut watch = client
        .watch(pb::WatchRequest {
            circuits: vec!["new-a".into(), "new-b".into()],
            node_id: "maker".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within("the first watch event", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.circuits.len(), 2);
    // Another node id from the same address gets no fresh budget.
    let err = client.acquire(acquire("new-c", "other")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_while_connected_clients_are_served() {
    // The shared channel holds one of the three slots.
    let server = TestServer::start_with(config(
        "[server]\nmax_connections = 3\npreface_timeout_ms = 600000\n",
    ))
    .await;
    still_serving(&server, "before-the-flood").await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = within("connecting", TcpStream::connect(server.addr))
            .await
            .unwrap();
        // A full HTTP/2 client: the server answers with its SETTINGS, which
        // proves the connection was kept.
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&EMPTY_SETTINGS).await.unwrap();
        let mut buf = [0u8; 9];
        within("the server's settings", s.read_exact(&mut buf))
            .await
            .unwrap();
        assert_eq!(buf[3], 4, "{buf:02x?}");
        idle.push(s);
    }
    // Past the cap: closed without a word.
    let mut over = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let _ = over.write_all(PREFACE).await;
    assert!(read_until_closed(&mut over).await.is_empty());
    // The connected client is still served.
    still_serving(&server, "during-the-flood").await;
    // A freed slot is used again.
    drop(idle.pop());
    let channel = within("connecting again", async {
        loop {
            let c = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
            // The server may not have seen the close yet: retry until a
            // call gets through (each refused connection fails its call).
            if BreakerClient::new(c.clone())
                .acquire(acquire("after-the-flood", ""))
                .await
                .is_ok()
            {
                return c;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(channel);
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_at_the_preface_timeout() {
    let server = TestServer::start_with(config("[server]\npreface_timeout_ms = 300\n")).await;
    let mut silent = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let opened = std::time::Instant::now();
    // The server speaks first (its SETTINGS), then gives up on the client.
    read_until_closed(&mut silent).await;
    let lived = opened.elapsed();
    assert!(
        lived >= std::time::Duration::from_millis(250),
        "closed after {lived:?}"
    );
    // Fewer bytes than the preface do not keep it either.
    let mut trickle = within("connecting", TcpStream::connect(server.addr))
        .await
        .unwrap();
    trickle.write_all(&PREFACE[..10]).await.unwrap();
    read_until_closed(&mut trickle).await;
    // A client that speaks is served well past the timeout: the shared
    // channel connected before both.
    still_serving(&server, "after-the-timeout").await;
}
