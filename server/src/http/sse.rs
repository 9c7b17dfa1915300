//! `GET /events`: every circuit, live, as Server-Sent Events.
//!
//! A stream starts with the `snapshot` of every circuit, sent in pages of
//! at most [`PAGE_BYTES`] (a page's `more` is false on the last one; a
//! circuit absent from every page of a snapshot is gone). After it,
//! `changed` events carry the circuits that changed, in frames of the same
//! bound. The pages are cut from the port's shared copy of the circuits
//! ([`SnapshotCache`](super::cache::SnapshotCache)), taken after the
//! stream subscribed to changes, so nothing falls between and a thousand
//! streams cost one scan.
//!
//! Memory per stream is bounded whatever the client does: a queue of
//! [`QUEUE_FRAMES`] frames. A client that reads slowly falls behind the
//! change feed and gets a fresh snapshot; one that reads nothing for
//! `[http] sse_stall_timeout_ms` while its queue is full is disconnected.
//! Streams are capped in total (503) and per peer address (429). A comment
//! line every [`KEEPALIVE`] keeps proxies from closing an idle stream; the
//! stream ends when the server shuts down.
//!
//! ```text
//! event: snapshot
//! data: {"circuits":[{"name":"payments","state":"open",...}],"part":0,"more":false}
//! ```

use std::{
    borrow::Cow,
    convert::Infallible,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Extension,
    body::{Body, Bytes},
    extract::State,
    response::Response,
};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use tokio::{
    sync::{
        broadcast::error::{RecvError, TryRecvError},
        mpsc,
    },
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{cache::Taken, response::error, server::Connection, state::HttpState};
use breakerd_core::CircuitSnapshot;

/// Interval of keep-alive comments on an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A frame stops growing once its data passes this (one circuit is at
/// most a few KiB, so no frame is much larger).
pub const PAGE_BYTES: usize = 32 * 1024;
/// Most circuits in one frame, however small.
pub const PAGE_CIRCUITS: usize = 1000;
/// Frames queued for a client that has not taken them yet.
pub const QUEUE_FRAMES: usize = 2;

/// Counts an open stream, in total and for its peer, for as long as it lives.
struct Client {
    state: Arc<HttpState>,
    ip: IpAddr,
}

impl Client {
    fn take(state: &Arc<HttpState>, ip: IpAddr) -> Result<Self, (StatusCode, String)> {
        let limits = &state.config.limits;
        let mut open = state.sse_clients.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= limits.sse_max_clients {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many event streams: {} open, at most {} ([http] sse_max_clients)",
                    open.total, limits.sse_max_clients
                ),
            ));
        }
        let mine = open.per_peer.get(&ip).copied().unwrap_or(0);
        if mine >= limits.sse_max_clients_per_peer {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many event streams from {ip}: at most {} per client \
                     ([http] sse_max_clients_per_peer)",
                    limits.sse_max_clients_per_peer
                ),
            ));
        }
        open.total += 1;
        *open.per_peer.entry(ip).or_insert(0) += 1;
        Ok(Self {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut open = self
            .state
            .sse_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&self.ip);
            }
        }
    }
}

/// Open streams in total and peers with one (for tests and metrics).
pub fn open_streams(state: &HttpState) -> (usize, usize) {
    let open = state.sse_clients.lock().unwrap_or_else(|e| e.into_inner());
    (open.total, open.per_peer.len())
}

/// A circuit as the JSON text of one array item (its `Serialize` derive,
/// which only holds strings and numbers, so it cannot fail).
fn snapshot_text(s: &CircuitSnapshot) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Appends circuits as JSON array items until the frame is full; returns
/// how many were taken.
fn fill<S: AsRef<str>>(out: &mut String, snaps: impl Iterator<Item = S>) -> usize {
    let mut n = 0;
    for s in snaps {
        if n > 0 {
            out.push(',');
        }
        // serde_json never writes a raw newline, so `data:` is one line.
        out.push_str(s.as_ref());
        n += 1;
        if out.len() >= PAGE_BYTES || n >= PAGE_CIRCUITS {
            break;
        }
    }
    n
}

/// A frame's buffer, sized once for a full frame (growing by doubling
/// would leave up to twice the bound allocated per queued frame).
fn frame_buffer(start: &str) -> String {
    let mut data = String::with_capacity(PAGE_BYTES + 4096);
    data.push_str(start);
    data
}

/// One page of a snapshot: the frame, the name of its last circuit, and
/// whether more follow.
fn snapshot_page(taken: &Taken, after: Option<&str>, part: u64) -> (Bytes, Option<Arc<str>>, bool) {
    // One row more than a frame holds tells whether more follow.
    let rows = taken.after(after, PAGE_CIRCUITS + 1);
    let mut data = frame_buffer("event: snapshot\ndata: {\"circuits\":[");
    let n = fill(
        &mut data,
        rows.iter().map(|r| -> Cow<'_, str> {
            if Taken::timeless(r) {
                Cow::Borrowed(r.text.get_or_init(|| snapshot_text(&r.snapshot).into()))
            } else {
                Cow::Owned(snapshot_text(&taken.current(r)))
            }
        }),
    );
    let more = n < rows.len();
    let _ = write!(data, "],\"part\":{part},\"more\":{more}}}\n\n");
    let last = n.checked_sub(1).map(|i| rows[i].snapshot.name.clone());
    (Bytes::from(data), last, more)
}

/// A `changed` frame of the first of `changes` (at least one): the frame
/// and how many it holds.
fn changed_frame(changes: &[Arc<CircuitSnapshot>]) -> (Bytes, usize) {
    let mut data = frame_buffer("event: changed\ndata: {\"circuits\":[");
    let n = fill(&mut data, changes.iter().map(|s| snapshot_text(s))).max(1);
    data.push_str("]}\n\n");
    (Bytes::from(data), n)
}

/// Why a stream ends.
enum End {
    /// The client went away or the server stops.
    Gone,
    /// The client read nothing for the stall timeout.
    Stalled,
}

/// The producer side of one stream.
struct Stream {
    state: Arc<HttpState>,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    /// Queues `frame`, waiting at most the stall timeout for room.
    async fn send(&self, frame: Bytes) -> Result<(), End> {
        let stall = self.state.config.limits.sse_stall_timeout;
        match tokio::time::timeout(stall, self.tx.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Stalled),
        }
    }

    /// A whole snapshot, page by page, from copies taken after `since`.
    async fn snapshot(&self, since: Instant) -> Result<(), End> {
        let mut after: Option<Arc<str>> = None;
        for part in 0u64.. {
            let taken = self.state.cache.since(since).await;
            let (frame, last, more) = snapshot_page(&taken, after.as_deref(), part);
            drop(taken);
            after = last;
            self.send(frame).await?;
            if !more {
                break;
            }
        }
        Ok(())
    }

    async fn run(self, conn: Option<Connection>) {
        let end = self.serve().await;
        if let (Err(End::Stalled), Some(conn)) = (end, conn) {
            tracing::debug!(peer = %conn.peer, "http: event stream stalled; closing it");
            // The queue is full and hyper waits on the socket: only closing
            // the connection frees them.
            conn.close();
        }
    }

    async fn serve(&self) -> Result<(), End> {
        let mut stop = self.state.shutdown.clone();
        // Tells EventSource how soon to reconnect after a drop.
        self.send(Bytes::from_static(b"retry: 2000\n\n")).await?;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            // Subscribe, then snapshot: each copy used is taken after this.
            let mut feed = self.state.registry.change_feed();
            let since = Instant::now();
            tokio::select! {
                () = stop.wait() => return Err(End::Gone),
                () = self.tx.closed() => return Err(End::Gone),
                r = self.snapshot(since) => r?,
            }
            // Then changes, until the feed runs ahead of us.
            loop {
                let first = tokio::select! {
                    () = stop.wait() => return Err(End::Gone),
                    () = self.tx.closed() => return Err(End::Gone),
                    _ = keepalive.tick() => {
                        self.send(Bytes::from_static(b": keepalive\n\n")).await?;
                        continue;
                    }
                    r = feed.recv() => match r {
                        Ok(s) => s,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return Err(End::Gone),
                    },
                };
                let mut lagged = false;
                let mut queued = vec![first];
                let mut size = 0;
                while size < PAGE_BYTES && queued.len() < PAGE_CIRCUITS {
                    match feed.try_recv() {
                        Ok(s) => {
                            size += 128 + s.name.len();
                            queued.push(s);
                        }
                        Err(TryRecvError::Lagged(_)) => {
                            lagged = true;
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                let mut sent = 0;
                while sent < queued.len() {
                    let (frame, n) = changed_frame(&queued[sent..]);
                    sent += n;
                    self.send(frame).await?;
                }
                if lagged {
                    break;
                }
            }
        }
    }
}

/// `GET /events`: opens a stream (503 past `sse_max_clients` in total,
/// 429 past `sse_max_clients_per_peer` from one address).
pub async fn events(
    State(state): State<Arc<HttpState>>,
    conn: Option<Extension<Connection>>,
) -> Response {
    let conn = conn.map(|Extension(c)| c);
    let ip = conn
        .as_ref()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
    let client = match Client::take(&state, ip) {
        Ok(c) => c,
        Err((status, message)) => return error(status, message),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_FRAMES);
    let stream = Stream { state, tx };
    tokio::spawn(async move {
        let _client = client;
        stream.run(conn).await;
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
