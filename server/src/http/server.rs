//! Serving the side port: the accept loop with its connection cap, HTTP/1.1
//! connections with a header timeout and a per-request deadline, and the
//! graceful drain on shutdown. Requests go to the [`router`](super::router).
//!
//! The loop is ours rather than `axum::serve` because the bounds are: a cap
//! on connections (more wait in the listen backlog), a cap per peer address
//! (more are answered 429 and closed at once, so 260 trickling sockets from
//! one peer hold at most its share), a deadline for request headers, and a
//! bounded drain.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};
use tower::ServiceExt;

use super::{response::error, router::router, state::HttpState};
use crate::shutdown::ShutdownSignal;

/// Default of [`HttpLimits::max_connections`](super::HttpLimits).
pub const MAX_CONNECTIONS: usize = 256;
/// Default of [`HttpLimits::header_timeout`](super::HttpLimits).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// A request (body included, `/events` streams excluded) must be answered
/// within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler knows of its connection (a request extension): the
/// peer, and a way to close the connection at once (an `/events` stream
/// whose client stopped reading, which no graceful end would reach).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Who is at the other end.
    pub peer: SocketAddr,
    close: Arc<Notify>,
}

impl Connection {
    /// Closes the connection now, whatever it is writing.
    pub fn close(&self) {
        self.close.notify_one();
    }
}

/// Open connections per peer address; an address is forgotten with its
/// last connection.
#[derive(Debug, Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its peer.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection over its peer's cap with 429 and closes it,
/// without waiting: a peer that does not read loses the answer, not a slot.
fn refuse(stream: &TcpStream, ip: IpAddr, cap: usize) {
    let body = serde_json::json!({
        "error": format!(
            "too many connections from {ip}: at most {cap} per client ([http] max_connections_per_peer)"
        )
    })
    .to_string();
    let text = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Read what already came, so that closing does not reset the answer away.
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(text.as_bytes());
}

/// Serves `state` on `listener` until its shutdown signal fires, then lets
/// open requests finish for at most `drain`.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, drain: Duration) {
    let router = router(state.clone());
    let limits = state.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let peers = Arc::new(Peers::default());
    let mut stop = state.shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop.wait() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_peer) else {
            tracing::debug!(%peer, "http: connection over the per-peer cap refused");
            refuse(&stream, peer.ip(), limits.max_connections_per_peer);
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            state.shutdown.clone(),
            limits.header_timeout,
            (permit, slot),
        ));
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut stop: ShutdownSignal,
    header_timeout: Duration,
    _slots: (OwnedSemaphorePermit, PeerSlot),
) {
    let close = Arc::new(Notify::new());
    let handle = Connection {
        peer,
        close: close.clone(),
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let router = router.clone();
        req.extensions_mut().insert(handle.clone());
        async move {
            if req.uri().path() == "/events" {
                // A stream: the handler returns at once, the body lives on.
                router.oneshot(req).await
            } else {
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, router.oneshot(req)).await;
                answer
                    .unwrap_or_else(|_| Ok(error(StatusCode::REQUEST_TIMEOUT, "request timed out")))
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = close.notified() => {
            tracing::debug!(%peer, "http: connection closed by its handler");
            return;
        }
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn => r,
                () = close.notified() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
    }
}
