//! Trace context forwarded to the coordinator.
//!
//! A caller either passes a trace id to
//! [`Circuit::acquire_traced`](crate::Circuit::acquire_traced), or runs its
//! work inside [`with_trace`] so that every coordinator RPC made from that
//! task carries it. The id goes out as `x-trace-id`; when it is a W3C
//! `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`) it also goes out as
//! `traceparent`, so the coordinator's log spans join the caller's trace.

use std::future::Future;
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

tokio::task_local! {
    static TRACE: Arc<str>;
}

/// Run `fut` with `trace_id` as the trace context of every coordinator RPC
/// it causes (on this task).
pub async fn with_trace<F: Future>(trace_id: impl Into<Arc<str>>, fut: F) -> F::Output {
    TRACE.scope(trace_id.into(), fut).await
}

/// The trace id of the current [`with_trace`] scope, if any.
pub fn current_trace() -> Option<Arc<str>> {
    TRACE.try_with(Arc::clone).ok()
}

/// Whether `s` is a W3C `traceparent` header value (version 00).
pub fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// Put `trace_id` (or the current scope's) on an outgoing request. Values
/// that are not valid header text are skipped rather than failing the call.
pub(crate) fn inject(md: &mut MetadataMap, trace_id: Option<&str>) {
    let scoped;
    let id = match trace_id {
        Some(id) => id,
        None => match current_trace() {
            Some(t) => {
                scoped = t;
                &*scoped
            }
            None => return,
        },
    };
    let Ok(v) = AsciiMetadataValue::try_from(id) else {
        return;
    };
    if is_traceparent(id) {
        md.insert("traceparent", v.clone());
    }
    md.insert("x-trace-id", v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_traceparent() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("req-42"));
        assert!(!is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"
        ));
    }

    #[tokio::test]
    async fn scope_and_explicit_ids_reach_metadata() {
        let mut md = MetadataMap::new();
        inject(&mut md, None);
        assert!(md.get("x-trace-id").is_none());

        with_trace("abc", async {
            let mut md = MetadataMap::new();
            inject(&mut md, None);
            assert_eq!(
                md.get("x-trace-id").map(|v| v.to_str().ok()),
                Some(Some("abc"))
            );
            assert!(md.get("traceparent").is_none());
        })
        .await;

        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut md = MetadataMap::new();
        inject(&mut md, Some(tp));
        assert_eq!(
            md.get("traceparent").map(|v| v.to_str().ok()),
            Some(Some(tp))
        );
        assert_eq!(
            md.get("x-trace-id").map(|v| v.to_str().ok()),
            Some(Some(tp))
        );
    }
}
