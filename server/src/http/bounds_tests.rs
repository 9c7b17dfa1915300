//! The side port's bounds over a real socket on loopback: paged event
//! snapshots, stream caps per peer and in total, stalled streams closed
//! and forgotten, the `Host` check, the per-peer connection cap, the
//! header timeout, and list pages cut from a cached copy. No sleeps as waits: conditions are polled with a
//! deadline, and every wait is bounded.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};

use super::{sse::PAGE_BYTES, *};
use breakerd_core::Registry;

const DEADLINE: Duration = Duration::from_secs(20);

struct Side {
    addr: SocketAddr,
    registry: Arc<Registry>,
    state: Arc<HttpState>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start(limits: HttpLimits) -> Side {
    let config = crate::config::Config::default();
    let registry = Registry::new(config.registry_config(), config.resolver.clone());
    let (stop_tx, stop) = ShutdownSignal::new();
    let http = HttpConfig {
        limits,
        ..HttpConfig::new(10)
    };
    let state = HttpState::new(registry.clone(), RpcMetrics::new(), http, stop);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state.clone(), Duration::from_secs(1)));
    Side {
        addr,
        registry,
        state,
        _stop: stop_tx,
    }
}

/// A connection from `from` (another loopback address), or `None` where
/// the system does not route 127.0.0.2 to loopback.
async fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{from}:0").parse().ok()?).ok()?;
    socket.connect(to).await.ok()
}

/// Sends `request`, reads until the peer closes (or `until` shows up);
/// returns what came.
async fn exchange(s: &mut TcpStream, request: &[u8], until: Option<&str>) -> String {
    s.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    let fut = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if until.is_some_and(|u| String::from_utf8_lossy(&seen).contains(u)) {
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("an answer in time");
    String::from_utf8_lossy(&seen).into_owned()
}

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn status(reply: &str) -> u16 {
    reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls `cond` until it holds, failing after [`DEADLINE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every `data:` line of an event stream, with its event name.
fn events(text: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut event = String::new();
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            assert!(d.len() < PAGE_BYTES + 4096, "a frame of {} bytes", d.len());
            out.push((event.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn the_snapshot_comes_in_bounded_pages_that_cover_every_circuit() {
    let side = start(HttpLimits::default()).await;
    let n = 3000;
    for i in 0..n {
        let name = format!("service-{i:05}/{}", "x".repeat(60));
        side.registry.acquire(&name, "n").unwrap();
    }
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    let text = exchange(
        &mut s,
        b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Some("\"more\":false}"),
    )
    .await;
    let pages = events(&text);
    assert!(pages.len() > 3, "{} pages", pages.len());
    let mut names = HashSet::new();
    for (i, (event, page)) in pages.iter().enumerate() {
        assert_eq!(event, "snapshot");
        assert_eq!(page["part"], i);
        assert_eq!(page["more"], i + 1 < pages.len());
        for c in page["circuits"].as_array().unwrap() {
            assert!(names.insert(c["name"].as_str().unwrap().to_owned()), "{c}");
        }
    }
    assert_eq!(names.len(), n, "every circuit once");
    // Changes follow the snapshot.
    side.registry
        .set_override(
            "service-00007/x",
            breakerd_policy::OverrideKind::ForcedOpen,
            "ops",
            "t",
            None,
        )
        .await
        .unwrap();
    let more = exchange(&mut s, b"", Some("service-00007/x\"")).await;
    assert!(more.contains("event: changed"), "{more}");
}

#[tokio::test]
async fn event_streams_are_capped_per_peer_and_in_total() {
    let side = start(HttpLimits {
        sse_max_clients: 3,
        sse_max_clients_per_peer: 2,
        ..HttpLimits::default()
    })
    .await;
    let open = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(side.addr).await.unwrap();
        let head = exchange(&mut s, open, Some("retry:")).await;
        assert_eq!(status(&head), 200, "{head}");
        held.push(s);
    }
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    let refused = exchange(&mut s, open, None).await;
    assert_eq!(status(&refused), 429, "{refused}");
    assert!(
        refused.contains("too many event streams from 127.0.0.1: at most 2 per client"),
        "{refused}"
    );
    if let Some(mut other) = connect_from("127.0.0.2", side.addr).await {
        let head = exchange(&mut other, open, Some("retry:")).await;
        assert_eq!(status(&head), 200, "{head}");
        let mut third = connect_from("127.0.0.2", side.addr).await.unwrap();
        let refused = exchange(&mut third, open, None).await;
        assert_eq!(status(&refused), 503, "{refused}");
        assert!(refused.contains("3 open, at most 3"), "{refused}");
        held.push(other);
    } else {
        eprintln!("127.0.0.2 is not loopback here: the total cap is not checked");
    }
    // Closed streams are forgotten, peers included.
    drop(held);
    let state = side.state.clone();
    wait_for("every stream forgotten", || {
        sse::open_streams(&state) == (0, 0)
    })
    .await;
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    assert_eq!(status(&exchange(&mut s, open, Some("retry:")).await), 200);
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_disconnected_and_forgotten() {
    let side = start(HttpLimits {
        sse_stall_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    })
    .await;
    // Far more than the socket buffers hold.
    for i in 0..30_000 {
        side.registry
            .acquire(&format!("c-{i:06}-{}", "y".repeat(180)), "n")
            .unwrap();
    }
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let state = side.state.clone();
    wait_for("the stream opened", || sse::open_streams(&state).0 == 1).await;
    wait_for("the stalled stream closed", || {
        sse::open_streams(&state) == (0, 0)
    })
    .await;
    // The connection is closed: reading drains what was sent, then ends
    // short of the whole snapshot.
    let text = exchange(&mut s, b"", None).await;
    assert!(!text.contains("\"more\":false"), "the snapshot was cut off");
}

#[tokio::test]
async fn hosts_not_ours_are_refused() {
    let side = start(HttpLimits::default()).await;
    for host in ["localhost:9464", "127.0.0.1", "[::1]:1"] {
        let mut s = TcpStream::connect(side.addr).await.unwrap();
        let r = exchange(&mut s, &get("/api/circuits", host), None).await;
        assert_eq!(status(&r), 200, "{host}: {r}");
    }
    for host in ["evil.example", "evil.example:9464", "10.0.0.1"] {
        for path in ["/api/circuits", "/events", "/metrics", "/"] {
            let mut s = TcpStream::connect(side.addr).await.unwrap();
            let r = exchange(&mut s, &get(path, host), None).await;
            assert_eq!(status(&r), 421, "{host}{path}: {r}");
            assert!(r.contains("DNS-rebinding guard"), "{r}");
        }
    }
    // The absolute form names its host too.
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    let r = exchange(
        &mut s,
        b"GET http://evil.example/api/circuits HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        None,
    )
    .await;
    assert_eq!(status(&r), 421, "{r}");
}

#[tokio::test]
async fn one_peer_cannot_hold_every_connection() {
    let side = start(HttpLimits {
        max_connections: 16,
        max_connections_per_peer: 4,
        header_timeout: Duration::from_secs(60),
        ..HttpLimits::default()
    })
    .await;
    // Four trickling requests hold their peer's share...
    let mut trickling = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(side.addr).await.unwrap();
        s.write_all(b"GET /api/circuits HTTP/1.1\r\nHo")
            .await
            .unwrap();
        trickling.push(s);
    }
    // ...so a fifth from it is refused at once, with the reason.
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    let r = exchange(&mut s, &get("/api/circuits", "127.0.0.1"), None).await;
    assert_eq!(status(&r), 429, "{r}");
    assert!(
        r.contains("too many connections from 127.0.0.1: at most 4 per client"),
        "{r}"
    );
    // Another peer is served meanwhile.
    match connect_from("127.0.0.2", side.addr).await {
        Some(mut s) => {
            let r = exchange(&mut s, &get("/api/circuits", "127.0.0.1"), None).await;
            assert_eq!(status(&r), 200, "{r}");
        }
        None => eprintln!("127.0.0.2 is not loopback here: skipping the other peer"),
    }
    // Closing the trickling ones frees the share.
    drop(trickling);
    let addr = side.addr;
    let until = Instant::now() + DEADLINE;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let r = exchange(&mut s, &get("/api/circuits", "127.0.0.1"), None).await;
        if status(&r) == 200 {
            break;
        }
        assert!(Instant::now() < until, "the share was never freed: {r}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn headers_sent_too_slowly_end_the_connection() {
    let side = start(HttpLimits {
        header_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    })
    .await;
    let mut s = TcpStream::connect(side.addr).await.unwrap();
    // Never finishes its headers: the server closes it (bounded by DEADLINE).
    let r = exchange(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1",
        None,
    )
    .await;
    assert!(!r.contains("200 OK"), "{r}");
}

#[tokio::test]
async fn lists_are_cut_from_a_cached_copy_until_it_ages_or_the_port_writes() {
    let mut http = HttpConfig::new(10);
    http.limits.list_cache = Duration::from_secs(600);
    http.admin_token = Some(AdminToken::new("s3cret-token-0123456789").unwrap());
    let config = crate::config::Config::default();
    let registry = Registry::new(config.registry_config(), config.resolver.clone());
    let (_stop, stop) = ShutdownSignal::new();
    let state = HttpState::new(registry.clone(), RpcMetrics::new(), http, stop);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, Duration::from_secs(1)));
    let list = |path: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let r = exchange(&mut s, &get(path, "127.0.0.1"), None).await;
        assert_eq!(status(&r), 200, "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1.to_owned();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    for n in ["a", "b", "c"] {
        registry.acquire(n, "n").unwrap();
    }
    let first = list("/api/circuits?limit=2").await;
    assert_eq!(first["total_matching"], 3);
    assert_eq!(first["next_page_token"], "b");
    assert!(first["as_of_ms_ago"].is_u64());
    let rest = list("/api/circuits?limit=2&after=b").await;
    assert_eq!(rest["circuits"][0]["name"], "c");
    assert_eq!(rest["next_page_token"], "");
    // A circuit created meanwhile is not in the copy: no scan per request.
    registry.acquire("d", "n").unwrap();
    assert_eq!(list("/api/circuits").await["total_matching"], 3);
    // A write through the port drops the copy: its writer sees it.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"kind":"forced_open","reason":"t"}"#;
    let post = format!(
        "POST /api/circuits/a/override HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer s3cret-token-0123456789\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(status(&exchange(&mut s, post.as_bytes(), None).await), 200);
    let after = list("/api/circuits?state=open").await;
    assert_eq!(after["total_matching"], 1);
    assert_eq!(after["circuits"][0]["name"], "a");
    assert_eq!(list("/api/circuits").await["total_matching"], 4);
}
