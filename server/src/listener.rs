//! The gRPC port's accept loop: a cap on open connections, a deadline for a
//! new connection's first bytes, and a back-off on accept errors (EMFILE)
//! instead of a spin.
//!
//! tonic serves whatever stream of connections it is given; [`incoming`]
//! is that stream. Every connection it yields holds one permit of the cap
//! until hyper drops it. A connection accepted while every permit is taken
//! is closed at once (the peer reads EOF), so a flood cannot queue up in
//! the kernel's backlog in front of legitimate clients, and the ones already
//! connected go on being served. A connection that has not sent the first
//! [`PREFACE_LEN`] bytes (the HTTP/2 preface, or a TLS ClientHello) within
//! the preface timeout is closed: idle sockets cannot hold the cap.
//!
//! Accept errors about one connection (the peer reset it before it was
//! accepted) are skipped; any other (out of descriptors, out of memory) is
//! retried after a delay that doubles from [`MIN_ACCEPT_BACKOFF`] up to
//! [`MAX_ACCEPT_BACKOFF`], so the loop sleeps while the process is out of
//! descriptors instead of spinning on the listening socket.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures_util::{Stream, stream};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a new connection must send within the preface timeout: the length
/// of the HTTP/2 client preface (a TLS ClientHello is longer).
pub const PREFACE_LEN: usize = 24;

/// First delay after an accept error that is not about one connection.
pub const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// Longest delay between accept attempts while accepting fails.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connection limits of the gRPC port (checked by the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as accepted.
    pub max_connections: usize,
    /// A connection that sent fewer than [`PREFACE_LEN`] bytes by then is
    /// closed.
    pub preface_timeout: Duration,
    /// `TCP_NODELAY` on accepted connections.
    pub tcp_nodelay: bool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            preface_timeout: Duration::from_secs(10),
            tcp_nodelay: true,
        }
    }
}

/// What the accept loop did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    refused_at_cap: AtomicU64,
    preface_timeouts: AtomicU64,
    accept_errors: AtomicU64,
    /// Permits of the cap; `open` is computed from it.
    permits: Option<Arc<Semaphore>>,
    max: usize,
}

impl ConnectionStats {
    /// Connections accepted and kept (within the cap).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached.
    pub fn refused_at_cap(&self) -> u64 {
        self.refused_at_cap.load(Ordering::Relaxed)
    }

    /// Connections closed because they sent no preface in time.
    pub fn preface_timeouts(&self) -> u64 {
        self.preface_timeouts.load(Ordering::Relaxed)
    }

    /// Accept errors that were backed off (EMFILE and the like).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |p| self.max.saturating_sub(p.available_permits()))
    }
}

/// Accept errors that concern one connection only: skip them and go on.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

struct Accept {
    listener: TcpListener,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    stats: Arc<ConnectionStats>,
    backoff: Duration,
    /// When the last refusal at the cap was logged (one line per second).
    last_refusal_log: Option<Instant>,
}

/// The connections of `listener` under `limits`, as tonic's
/// `serve_with_incoming*` take them, and the counters of the loop. The
/// stream never yields an error and never ends.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> (
    impl Stream<Item = Result<GuardedStream, io::Error>> + Send + 'static,
    Arc<ConnectionStats>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let stats = Arc::new(ConnectionStats {
        permits: Some(permits.clone()),
        max: limits.max_connections,
        ..ConnectionStats::default()
    });
    let state = Accept {
        listener,
        limits,
        permits,
        stats: stats.clone(),
        backoff: Duration::ZERO,
        last_refusal_log: None,
    };
    let stream = stream::unfold(state, |mut st| async move {
        let conn = st.next().await;
        Some((Ok(conn), st))
    });
    (stream, stats)
}

impl Accept {
    async fn next(&mut self) -> GuardedStream {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => {
                    self.backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    self.backoff = (self.backoff * 2).clamp(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
                    let n = self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    // The first error and then one in 64 (at most ~1 a second
                    // once the delay has reached its bound).
                    if n.is_multiple_of(64) {
                        tracing::warn!(error = %e, retry_ms = self.backoff.as_millis() as u64, errors = n + 1, "cannot accept connections; backing off");
                    }
                    tokio::time::sleep(self.backoff).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                let n = self.stats.refused_at_cap.fetch_add(1, Ordering::Relaxed) + 1;
                let now = Instant::now();
                if self
                    .last_refusal_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_refusal_log = Some(now);
                    tracing::warn!(%peer, max_connections = self.limits.max_connections, refused = n, "connection cap reached; closing new connections");
                }
                drop(tcp);
                continue;
            };
            if let Err(e) = tcp.set_nodelay(self.limits.tcp_nodelay) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            return GuardedStream::new(tcp, permit, self.limits.preface_timeout, &self.stats);
        }
    }
}

pin_project_lite::pin_project! {
    /// An accepted connection: holds its permit of the cap, and fails its
    /// reads once the preface timeout passes before [`PREFACE_LEN`] bytes
    /// came in (hyper then closes it).
    pub struct GuardedStream {
        #[pin]
        tcp: TcpStream,
        preface: Option<Pin<Box<Sleep>>>,
        received: usize,
        info: TcpConnectInfo,
        stats: Arc<ConnectionStats>,
        _permit: OwnedSemaphorePermit,
    }
}

impl GuardedStream {
    fn new(
        tcp: TcpStream,
        permit: OwnedSemaphorePermit,
        preface_timeout: Duration,
        stats: &Arc<ConnectionStats>,
    ) -> Self {
        let info = TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        };
        Self {
            tcp,
            preface: Some(Box::pin(tokio::time::sleep(preface_timeout))),
            received: 0,
            info,
            stats: stats.clone(),
            _permit: permit,
        }
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(deadline) = this.preface.as_mut() else {
            return this.tcp.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.tcp.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                *this.received += buf.filled().len() - before;
                if *this.received >= PREFACE_LEN {
                    *this.preface = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                this.stats.preface_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = ?this.info.remote_addr, received = *this.received, "no preface in time; closing the connection");
                *this.preface = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection sent no HTTP/2 preface in time",
                )))
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test]
    async fn past_the_cap_connections_are_closed_and_a_freed_permit_is_reused() {
        let (l, addr) = listener().await;
        let limits = ConnectionLimits {
            max_connections: 1,
            preface_timeout: Duration::from_secs(3600),
            tcp_nodelay: true,
        };
        let (incoming, stats) = incoming(l, limits);
        let mut incoming = Box::pin(incoming);
        let _first = TcpStream::connect(addr).await.unwrap();
        let kept = incoming.next().await.unwrap().unwrap();
        assert_eq!(stats.open(), 1);
        // The second is accepted and closed while the stream waits for a
        // third; the peer reads EOF.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move {
            let c = incoming.next().await.unwrap().unwrap();
            (c, incoming)
        });
        let mut buf = [0u8; 8];
        assert_eq!(second.read(&mut buf).await.unwrap(), 0);
        assert_eq!(stats.refused_at_cap(), 1);
        // Once the kept one is gone its permit serves the next.
        drop(kept);
        let _third = TcpStream::connect(addr).await.unwrap();
        let (_c, _incoming) = next.await.unwrap();
        assert_eq!(stats.accepted(), 2);
        assert_eq!(stats.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_its_read_at_the_preface_timeout() {
        let (l, addr) = listener().await;
        let limits = ConnectionLimits {
            max_connections: 4,
            preface_timeout: Duration::from_secs(10),
            tcp_nodelay: true,
        };
        let (incoming, stats) = incoming(l, limits);
        let mut incoming = Box::pin(incoming);
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        let mut buf = [0u8; 64];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(stats.preface_timeouts(), 1);

        // One that speaks in time is left alone.
        let mut speaker = TcpStream::connect(addr).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        speaker.write_all(&[b'x'; PREFACE_LEN]).await.unwrap();
        let mut got = 0;
        while got < PREFACE_LEN {
            got += conn.read(&mut buf).await.unwrap();
        }
        let read = tokio::spawn(async move { conn.read(&mut buf).await.map(|_| ()) });
        tokio::time::advance(Duration::from_secs(60)).await;
        speaker.write_all(b"later").await.unwrap();
        read.await.unwrap().unwrap();
        assert_eq!(stats.preface_timeouts(), 1);
    }
}
