//! Trace ids across services: a tower layer that opens one span per request
//! carrying the caller's trace id and the gRPC method, and echoes the id in
//! the `x-trace-id` response header.
//!
//! The id comes from `x-trace-id` if it is sane, else from the trace-id field
//! of a W3C `traceparent`, else a fresh random one is made. Garbage is
//! ignored rather than refused: a bad header must never fail a call or reach
//! the logs unchecked.

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, HeaderValue};
use tower::{Layer, Service};

/// Request and response header carrying the trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Longest accepted `x-trace-id`.
pub const MAX_TRACE_ID_LEN: usize = 64;

/// Picks the trace id of a request from its headers, if one is usable.
pub fn trace_id_from_headers(headers: &HeaderMap) -> Option<String> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    header(TRACE_ID_HEADER)
        .and_then(parse_x_trace_id)
        .or_else(|| header(TRACEPARENT_HEADER).and_then(parse_traceparent))
}

/// Accepts 1..=64 bytes of `[A-Za-z0-9._:-]` (hex ids, UUIDs and most
/// vendors' formats), surrounding whitespace trimmed.
pub fn parse_x_trace_id(value: &str) -> Option<String> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= MAX_TRACE_ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| v.to_owned())
}

/// The trace-id field of a W3C `traceparent`
/// (`version-traceid-parentid-flags`: 2, 32, 16 and 2 lower-case hex
/// digits; an all-zero trace id or parent id, or version `ff`, is invalid).
/// Later versions may append fields, which are ignored.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then(|| trace_id.to_owned())
}

/// A fresh 32-hex-digit trace id (W3C compatible), from the process's
/// randomly keyed hasher and a counter: unique and unpredictable enough for
/// correlating logs, which is all it is for.
pub fn new_trace_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut h = keys.build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let (hi, lo) = (half(0x5eed), half(0xfeed));
    // All zeros is not a valid W3C trace id.
    let lo = if hi == 0 && lo == 0 { 1 } else { lo };
    // Hex by hand: `format!` costs more than the hashing, on every request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for word in [hi, lo] {
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((word >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}

/// Wraps services with [`TraceService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// Runs each request inside an `rpc` span with `rpc` (the gRPC method path)
/// and `trace_id`, and returns the trace id in `x-trace-id`.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let trace_id = trace_id_from_headers(req.headers()).unwrap_or_else(new_trace_id);
        // `&str` fields, not `%` (Display), so the formatter copies them
        // rather than formatting each into a fresh string.
        let span = tracing::info_span!("rpc", rpc = req.uri().path(), trace_id = trace_id.as_str());
        let header = HeaderValue::from_str(&trace_id).ok();
        let started = Instant::now();
        let inner = span.in_scope(|| self.inner.call(req));
        TracedFuture {
            inner,
            span,
            header,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TraceService`]: polls the call inside its
    /// span and adds `x-trace-id` to the response. Written out rather than
    /// boxed, since it wraps every call.
    #[derive(Debug)]
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        header: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(header) = this.header.take() {
            res.headers_mut().insert(TRACE_ID_HEADER, header);
        }
        let grpc_status = res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        tracing::debug!(
            grpc_status,
            elapsed_us = this.started.elapsed().as_micros() as u64,
            "rpc answered"
        );
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_trace_id_is_checked() {
        assert_eq!(parse_x_trace_id("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(
            parse_x_trace_id("  4bf92f3577b34da6  ").as_deref(),
            Some("4bf92f3577b34da6")
        );
        assert_eq!(
            parse_x_trace_id("550e8400-e29b-41d4-a716-446655440000").as_deref(),
            Some("550e8400-e29b-41d4-a716-446655440000")
        );
        for bad in [
            "",
            "   ",
            "has space",
            "quote\"d",
            "new\nline",
            "é",
            "{\"json\":1}",
            &"a".repeat(65),
        ] {
            assert_eq!(parse_x_trace_id(bad), None, "{bad:?}");
        }
        assert!(parse_x_trace_id(&"a".repeat(64)).is_some());
    }

    #[test]
    fn traceparent_yields_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn x_trace_id_wins_and_garbage_falls_through() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT_HEADER, HeaderValue::from_static(tp));
        assert_eq!(
            trace_id_from_headers(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(TRACE_ID_HEADER, HeaderValue::from_static("not valid!"));
        assert_eq!(
            trace_id_from_headers(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(TRACE_ID_HEADER, HeaderValue::from_static("req-42"));
        assert_eq!(trace_id_from_headers(&h).as_deref(), Some("req-42"));
        assert_eq!(trace_id_from_headers(&HeaderMap::new()), None);
        // Non-UTF-8 bytes are ignored, not an error.
        let mut h = HeaderMap::new();
        h.insert(
            TRACE_ID_HEADER,
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(trace_id_from_headers(&h), None);
    }

    #[test]
    fn generated_ids_are_w3c_shaped_and_distinct() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            let tp = format!("00-{id}-00f067aa0ba902b7-01");
            assert_eq!(parse_traceparent(&tp).as_deref(), Some(id.as_str()));
        }
    }
}
