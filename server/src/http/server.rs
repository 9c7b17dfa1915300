//! Serving the side port: the accept loop with its connection cap, HTTP/1.1
//! connections with a header timeout and a per-request deadline, and the
//! graceful drain on shutdown. Requests go to the [`router`](super::router).
//!
//! The loop is ours rather than `axum::serve` because the bounds are: a cap
//! on connections (more wait in the listen backlog), a deadline for request
//! headers, and a bounded drain.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tower::ServiceExt;

use super::{response::error, router::router, state::HttpState};
use crate::shutdown::ShutdownSignal;

/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body included, `/events` streams excluded) must be answered
/// within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` until its shutdown signal fires, then lets
/// open requests finish for at most `drain`.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, drain: Duration) {
    let router = router(state.clone());
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            state.shutdown.clone(),
            permit,
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
    _permit: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
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
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
    }
}
