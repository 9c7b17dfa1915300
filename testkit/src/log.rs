//! breakerd's JSON log lines (`--log-format json`, tracing-subscriber's
//! json format) as the harnesses read them: a field may sit at the top level
//! or under `"fields"`, depending on the formatter's flattening.

use std::net::SocketAddr;

use serde_json::Value;

/// Field `key` of a parsed log line: top level first, then `fields.key`.
pub fn field<'a>(line: &'a Value, key: &str) -> Option<&'a Value> {
    line.get(key)
        .or_else(|| line.get("fields").and_then(|f| f.get(key)))
}

/// The `listen_addr` field of a parsed log line (the "breakerd listening"
/// line), as an address.
pub fn listen_addr_in(line: &Value) -> Option<SocketAddr> {
    field(line, "listen_addr")?.as_str()?.parse().ok()
}

/// The `listen_addr` field of a log line's text; `None` for any other line
/// or text that is not JSON.
pub fn listen_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    listen_addr_in(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_is_found_in_the_json_log_line() {
        let line = r#"{"timestamp":"x","level":"INFO","message":"breakerd listening","listen_addr":"127.0.0.1:40123"}"#;
        assert_eq!(listen_addr(line), Some("127.0.0.1:40123".parse().unwrap()));
        let nested = r#"{"fields":{"message":"breakerd listening","listen_addr":"127.0.0.1:9"}}"#;
        assert_eq!(listen_addr(nested), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(listen_addr("not json"), None);
    }

    #[test]
    fn top_level_fields_win_over_nested_ones() {
        let v: Value =
            serde_json::from_str(r#"{"circuits":1,"fields":{"circuits":2,"store_load_ms":7}}"#)
                .unwrap();
        assert_eq!(field(&v, "circuits").and_then(Value::as_u64), Some(1));
        assert_eq!(field(&v, "store_load_ms").and_then(Value::as_u64), Some(7));
        assert_eq!(field(&v, "missing"), None);
        assert_eq!(listen_addr_in(&v), None);
    }
}
