//! The side port under unauthenticated floods, next to the real gRPC server
//! (`app::serve_with_http`), with the figures of issue 11 printed (run with
//! `--nocapture`; memory is VmRSS of this test process, which is the
//! server and its clients): non-reading `/events` clients against the
//! stream cap at 30k circuits, trickling sockets from one peer against the
//! per-peer connection cap, and (ignored by default: it creates 100k
//! circuits) gRPC Acquire latency while 8 loops list circuits. Nothing is
//! asserted on time; every wait has a deadline.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use breakerd_e2e::{config, within};
use breakerd_proto::v1::{self as pb, breaker_client::BreakerClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::oneshot,
    task::JoinSet,
};
use tonic::transport::Channel;

/// A server with `toml`, its gRPC client, the side port's address, and the
/// sender that stops it.
async fn start(toml: &str) -> (BreakerClient<Channel>, SocketAddr, oneshot::Sender<()>) {
    let cfg = config(toml);
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(breakerd::app::serve_with_http(
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
    (BreakerClient::new(channel), http_addr, stop)
}

/// Creates `n` circuits over gRPC, 16 calls at a time.
async fn create(client: &BreakerClient<Channel>, n: usize) {
    let mut tasks = JoinSet::new();
    for t in 0..16 {
        let mut c = client.clone();
        tasks.spawn(async move {
            for i in (t..n).step_by(16) {
                c.acquire(pb::AcquireRequest {
                    circuit: format!("svc-{i:06}/{}", "n".repeat(40)),
                    node_id: "loader".into(),
                })
                .await
                .expect("acquire");
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(300), tasks.join_all())
        .await
        .expect("circuits created in time");
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One GET on a new connection, read to the end: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(&format!("GET {path}"), async {
        let mut s = TcpStream::connect(addr).await.expect("connect http");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_owned())
    })
    .await
}

fn sse_clients(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("breakerd_connected_clients{kind=\"sse\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_event_clients_at_30k_circuits_stay_bounded() {
    let (client, http, _stop) = start(
        "[limits]\nclient_requests_per_second = 0\nclient_new_circuits_per_minute = 0\n\
         [http]\nsse_max_clients = 64\nsse_max_clients_per_peer = 64\n\
         sse_stall_timeout_ms = 3000\nmax_connections_per_peer = 128\n",
    )
    .await;
    create(&client, 30_000).await;
    let before = rss_mb();
    let first = flood(http).await;
    let between = rss_mb();
    let second = flood(http).await;
    let after = rss_mb();
    println!(
        "SSE flood, 30k circuits, 80 non-reading clients (64 accepted, 16 refused 503), \
         twice: VmRSS before {before:.0} MB, peak {first:.0} MB (+{:.0} MB), after the \
         stalled streams were dropped {between:.0} MB; second round peak {second:.0} MB, \
         after {after:.0} MB",
        first - before
    );
    // Issue 11 measured 581 MB here; per stream the server now holds two
    // frames of at most ~36 KiB besides hyper's one, and all streams share
    // one copy of the circuits.
    assert!(
        first - before < 128.0,
        "the flood grew memory by {:.0} MB",
        first - before
    );
    // Nothing is kept per client: a second flood reuses the first's memory.
    assert!(
        second - first < 32.0,
        "a second flood grew memory by {:.0} MB more",
        second - first
    );
}

/// 80 clients read their answer's first bytes, then nothing, until the
/// server has dropped every stalled stream; returns the peak VmRSS, MB.
async fn flood(http: SocketAddr) -> f64 {
    let mut open = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..80 {
        let mut s = TcpStream::connect(http).await.expect("connect");
        s.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        within("an answer", s.read_exact(&mut head)).await.unwrap();
        match &head[9..12] {
            b"200" => accepted += 1,
            b"503" => refused += 1,
            other => panic!("{}", String::from_utf8_lossy(other)),
        }
        open.push(s);
    }
    // 64 fill the cap and 16 are refused; should the machine be so slow
    // that the first stalled streams were already dropped (after
    // `sse_stall_timeout_ms`) before the last connected, their slots went
    // to later clients: the cap must still have refused some.
    assert_eq!(accepted + refused, 80);
    assert!(
        accepted >= 64 && refused > 0,
        "{accepted} accepted, {refused} refused at a cap of 64"
    );
    // Until the server drops the stalled streams, sample memory.
    let mut peak = rss_mb();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        peak = peak.max(rss_mb());
        let (_, m) = get(http, "/metrics").await;
        if sse_clients(&m) == 0.0 {
            break;
        }
        assert!(Instant::now() < until, "stalled streams still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_sockets_from_one_peer_leave_others_served() {
    let (_client, http, _stop) = start("[http]\n").await;
    let mut trickling = Vec::new();
    for _ in 0..260 {
        let socket = TcpSocket::new_v4().unwrap();
        if socket.bind("127.0.0.2:0".parse().unwrap()).is_err() {
            eprintln!("127.0.0.2 is not loopback here: skipping");
            return;
        }
        let Ok(mut s) = socket.connect(http).await else {
            eprintln!("127.0.0.2 is not loopback here: skipping");
            return;
        };
        s.write_all(b"GET /api/circuits HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        trickling.push(s);
    }
    let asked = Instant::now();
    let (status, body) = get(http, "/api/circuits").await;
    let waited = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    // The trickling ones: answered 429 at once past the per-peer cap, and
    // closed by the header timeout within it.
    let (mut refused, mut timed_out) = (0, 0);
    for mut s in trickling {
        let mut buf = Vec::new();
        let _ = within("the trickling socket closed", s.read_to_end(&mut buf)).await;
        if String::from_utf8_lossy(&buf).contains("429 Too Many Requests") {
            refused += 1;
        } else {
            timed_out += 1;
        }
    }
    println!(
        "260 trickling sockets from 127.0.0.2: {refused} refused 429, {timed_out} closed by \
         the 3 s header timeout; a request from 127.0.0.1 meanwhile answered in {waited:?}"
    );
    // 32 fill the per-peer cap and 228 are refused at once. On a machine
    // slow enough that connecting took longer than the header timeout,
    // early sockets were closed and their slots reused: then fewer are
    // refused, but never none, and the cap's 32 always time out.
    assert_eq!(refused + timed_out, 260);
    assert!(
        timed_out >= 32 && refused > 0,
        "{refused} refused, {timed_out} timed out at a per-peer cap of 32"
    );
}

/// Acquire latency of `n` sequential calls: (p50, p99, max).
async fn acquire_latency(client: &mut BreakerClient<Channel>, n: usize) -> [Duration; 3] {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .acquire(pb::AcquireRequest {
                circuit: "svc-000001/legit".into(),
                node_id: "legit".into(),
            })
            .await
            .expect("acquire");
        took.push(t.elapsed());
    }
    took.sort();
    [took[n / 2], took[n * 99 / 100], took[n - 1]]
}

/// Issue 11 item 9: at 100k circuits, 8 curl loops on `GET /api/circuits`
/// pushed Acquire p50 from 0.39 ms to 111 ms. Prints the figures; run with
/// `cargo test -p breakerd-e2e --test http_floods -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "creates 100k circuits; run for the figures"]
async fn acquire_latency_while_8_loops_list_100k_circuits() {
    let (mut client, http, _stop) =
        start("[limits]\nclient_requests_per_second = 0\nclient_new_circuits_per_minute = 0\n")
            .await;
    create(&client, 99_000).await;
    // The first list takes the copy: one scan of every circuit.
    let asked = Instant::now();
    assert_eq!(get(http, "/api/circuits").await.0, 200);
    let scan = asked.elapsed();
    let quiet = acquire_latency(&mut client, 2000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = JoinSet::new();
    for _ in 0..8 {
        let stop = stop.clone();
        loops.spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = get(http, "/api/circuits").await;
                assert_eq!(status, 200);
                n += 1;
            }
            n
        });
    }
    let busy = acquire_latency(&mut client, 2000).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lists: u64 = loops.join_all().await.iter().sum();
    println!(
        "Acquire at 100k circuits: quiet p50 {:?} p99 {:?} max {:?}; with 8 list loops \
         ({lists} lists) p50 {:?} p99 {:?} max {:?}; p99 ratio {:.2}; a list taking \
         the copy (one scan) answered in {scan:?}",
        quiet[0],
        quiet[1],
        quiet[2],
        busy[0],
        busy[1],
        busy[2],
        busy[1].as_secs_f64() / quiet[1].as_secs_f64()
    );
}
