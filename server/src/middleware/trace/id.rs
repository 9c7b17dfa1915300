//! Trace ids: picked from the request's `x-trace-id`, else from the
//! trace-id field of a W3C `traceparent`, else made fresh. Garbage is
//! ignored rather than refused: a bad header must never fail a call or
//! reach the logs unchecked.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

use http::HeaderMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
