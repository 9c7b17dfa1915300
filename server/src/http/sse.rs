//! `GET /events`: every circuit, live, as Server-Sent Events.
//!
//! Each stream is one [`Registry::watch`](breakerd_core::Registry::watch) of
//! every circuit (an empty list, which creates none). The first event is
//! `snapshot` with all circuits; after it, `changed` events carry the
//! circuits that changed. A watcher that falls behind gets a fresh
//! `snapshot` (the core resyncs it), so memory per stream stays bounded
//! however slow the browser is. A comment line every
//! [`KEEPALIVE`] keeps proxies from closing an idle stream; the stream
//! ends when the server shuts down.
//!
//! ```text
//! event: snapshot
//! data: {"circuits":[{"name":"payments","state":"open",...}]}
//! ```

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    response::Response,
};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    response::error,
    state::{HttpState, MAX_SSE_CLIENTS},
};
use breakerd_core::{CircuitSnapshot, WatchUpdate};

/// Interval of keep-alive comments on an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Counts an open stream for as long as it lives.
struct Client(Arc<HttpState>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One SSE frame.
fn frame(event: &str, update: &[Arc<CircuitSnapshot>]) -> Bytes {
    let circuits: Vec<&CircuitSnapshot> = update.iter().map(|s| &**s).collect();
    // serde_json never writes a raw newline, so `data:` is one line.
    Bytes::from(format!(
        "event: {event}\ndata: {}\n\n",
        json!({ "circuits": circuits })
    ))
}

/// `GET /events`: opens a stream (503 past [`MAX_SSE_CLIENTS`]).
pub async fn events(State(state): State<Arc<HttpState>>) -> Response {
    let taken = state
        .sse_clients
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_SSE_CLIENTS).then_some(n + 1)
        });
    if taken.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many event streams (at most {MAX_SSE_CLIENTS})"),
        );
    }
    let client = Client(state.clone());
    let mut sub = match state.registry.watch(&[]) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // A small buffer: when the browser does not read, the producer waits,
    // the core's broadcast runs ahead, and the next update is a resync.
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut stop = state.shutdown.clone();
    tokio::spawn(async move {
        let _client = client;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        // Tells EventSource how soon to reconnect after a drop.
        if tx
            .send(Bytes::from_static(b"retry: 2000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let chunk = tokio::select! {
                () = stop.wait() => break,
                // The browser went away.
                () = tx.closed() => break,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                update = sub.next() => match update {
                    Some(WatchUpdate::Resync(s)) => frame("snapshot", &s),
                    Some(WatchUpdate::Changed(s)) => frame("changed", &s),
                    None => break,
                },
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Asks reverse proxies (nginx) not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
