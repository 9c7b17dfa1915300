//! Trace context of one request: read from the incoming `traceparent` (W3C)
//! or `x-trace-id` header, or started here, and forwarded on every outgoing
//! call (the upstream over HTTP, the coordinator over gRPC).

use std::fmt::Write;

use http::HeaderMap;

/// The trace of one request.
#[derive(Debug, Clone)]
pub struct TraceCtx {
    /// The id logged with every line of this request: the W3C trace id when
    /// there is one, else the caller's `x-trace-id`.
    pub trace_id: String,
    /// The incoming (or started) `traceparent`, when there is one.
    traceparent: Option<String>,
    /// The caller's `x-trace-id`, forwarded unchanged.
    x_trace_id: Option<String>,
}

impl TraceCtx {
    /// Read the context of an incoming request; start a new trace when it
    /// has none, so every log line and outgoing call still carries one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(str::to_owned)
        };
        let traceparent =
            header("traceparent").filter(|tp| breakerd_client::trace::is_traceparent(tp));
        let x_trace_id = header("x-trace-id");
        match (traceparent, x_trace_id) {
            (Some(tp), x) => Self {
                trace_id: tp[3..35].to_owned(),
                traceparent: Some(tp),
                x_trace_id: x,
            },
            (None, Some(x)) => Self {
                trace_id: x.clone(),
                traceparent: None,
                x_trace_id: Some(x),
            },
            (None, None) => {
                let trace_id = random_hex(16);
                Self {
                    traceparent: Some(format!("00-{trace_id}-{}-01", random_hex(8))),
                    trace_id,
                    x_trace_id: None,
                }
            }
        }
    }

    /// Headers for an outgoing call: `x-trace-id` unchanged, and a
    /// `traceparent` with the same trace id and this hop's new parent id
    /// (W3C: each hop is a new span of the same trace).
    pub fn outgoing(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(
            "x-trace-id",
            self.x_trace_id
                .clone()
                .unwrap_or_else(|| self.trace_id.clone()),
        )];
        if let Some(tp) = &self.traceparent {
            let flags = &tp[53..55];
            out.push((
                "traceparent",
                format!("00-{}-{}-{flags}", &tp[3..35], random_hex(8)),
            ));
        }
        out
    }

    /// What the coordinator RPCs of this request carry (see
    /// `breakerd_client::with_trace`): the `traceparent` when there is one.
    pub fn for_coordinator(&self) -> String {
        self.traceparent
            .clone()
            .unwrap_or_else(|| self.trace_id.clone())
    }
}

fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_keeps_the_trace_and_changes_the_parent() {
        let ctx = TraceCtx::from_headers(&headers(&[("traceparent", TP)]));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = ctx.outgoing();
        let tp = &out.iter().find(|(k, _)| *k == "traceparent").unwrap().1;
        assert!(breakerd_client::trace::is_traceparent(tp));
        assert_eq!(&tp[..36], &TP[..36]);
        assert_ne!(tp, TP);
        assert_eq!(ctx.for_coordinator(), TP);
    }

    #[test]
    fn x_trace_id_is_forwarded_unchanged() {
        let ctx = TraceCtx::from_headers(&headers(&[("x-trace-id", "req-42")]));
        assert_eq!(ctx.trace_id, "req-42");
        assert_eq!(ctx.outgoing(), vec![("x-trace-id", "req-42".to_owned())]);
    }

    #[test]
    fn a_new_trace_is_started_when_none_arrives() {
        let ctx = TraceCtx::from_headers(&HeaderMap::new());
        assert_eq!(ctx.trace_id.len(), 32);
        assert!(breakerd_client::trace::is_traceparent(
            &ctx.for_coordinator()
        ));
        let bad = TraceCtx::from_headers(&headers(&[("traceparent", "garbage")]));
        assert_eq!(
            bad.trace_id.len(),
            32,
            "an invalid traceparent is not trusted"
        );
    }
}
