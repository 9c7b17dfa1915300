//! Logging: structured JSON lines (the default) or human-readable text on
//! stdout, filtered by an `EnvFilter` directive string.
//!
//! Per-request spans (with `rpc` and `trace_id`) come from
//! [`crate::middleware::trace`]; every event logged while handling a call
//! carries them. The format and filter arrive checked (`[log]` in
//! [`crate::config`]).

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing_subscriber::{
    EnvFilter,
    field::RecordFields,
    fmt::{self, FormatFields, FormattedFields, format::Writer},
    prelude::*,
};

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default; what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// Parses a log filter such as `info` or `breakerd=debug,h2=warn`.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(directives)
        .map_err(|e| format!("{directives:?} is not a log filter: {e}"))
}

/// Installs the global subscriber. Call once, before anything logs.
///
/// JSON lines are flattened, so an event's fields sit at the top level of
/// the object (`{"timestamp":…,"level":"INFO","message":"breakerd listening",
/// "listen_addr":"127.0.0.1:50051",…}`), with the current request span under
/// `span`.
pub fn init(format: LogFormat, directives: &str) -> Result<(), String> {
    let filter = parse_filter(directives)?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(json_layer(std::io::stdout)).try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    // Colours only for a terminal, never into a log file.
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// The JSON-lines layer: flattened events, the current span under `span`.
fn json_layer<S, W>(
    writer: W,
) -> fmt::Layer<S, JsonSpanFields, fmt::format::Format<fmt::format::Json>, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
        .with_writer(writer)
}

/// Formats span fields as the JSON object the JSON event formatter embeds
/// under `span`, written straight into the span's buffer.
///
/// tracing-subscriber's own `JsonFields` builds a map of owned values and
/// serialises it for every span; with a span per request that was one of
/// the largest costs of an `Acquire`. Events still go through the stock
/// JSON formatter; only span fields come from here.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        // Built here and copied once: the span's own buffer starts empty,
        // and growing it a few bytes at a time cost more than the rest.
        let mut object = String::with_capacity(128);
        let mut out = Writer::new(&mut object);
        let mut visitor = JsonObject {
            out: &mut out,
            first: true,
            result: Ok(()),
        };
        visitor.result = visitor.out.write_char('{');
        fields.record(&mut visitor);
        let JsonObject { out, result, .. } = visitor;
        result.and_then(|()| out.write_char('}'))?;
        writer.write_str(&object)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut more = String::new();
        self.format_fields(Writer::new(&mut more), fields)?;
        if more.len() <= 2 {
            return Ok(());
        }
        if current.fields.len() <= 2 {
            current.fields = more;
        } else {
            // `{"a":1}` + `{"b":2}` → `{"a":1,"b":2}`
            current.fields.pop();
            current.fields.push(',');
            current.fields.push_str(&more[1..]);
        }
        Ok(())
    }
}

/// Writes `"name":value` pairs of one JSON object.
struct JsonObject<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl JsonObject<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> std::fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let comma = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .out
            .write_str(comma)
            .and_then(|()| write_json_str(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl Visit for JsonObject<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities.
        if value.is_finite() {
            self.entry(field, |w| write!(w, "{value}"));
        } else {
            self.entry(field, |w| write_json_str(w, &value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.entry(field, |w| write_json_str(w, &format!("{value:?}")));
    }
}

/// `s` as a JSON string literal.
fn write_json_str(w: &mut Writer<'_>, s: &str) -> std::fmt::Result {
    let needs_escape = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    w.write_char('"')?;
    if !s.bytes().any(needs_escape) {
        // The common case (method paths, trace ids): one copy.
        w.write_str(s)?;
        return w.write_char('"');
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        // Only ASCII bytes are escaped, so `i` is on a char boundary.
        w.write_str(&s[plain..i])?;
        match b {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            _ => write!(w, "\\u{b:04x}")?,
        }
        plain = i + 1;
    }
    w.write_str(&s[plain..])?;
    w.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_explain() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("breakerd=debug,h2=warn").is_ok());
        let err = parse_filter("info,[[[").unwrap_err();
        assert!(err.contains("not a log filter"), "{err}");
    }

    /// Span fields come out as one valid JSON object, whatever they hold,
    /// and fields recorded later are merged into it.
    #[test]
    fn span_fields_are_a_json_object() {
        #[derive(Clone, Default)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        let weird = "quote\" back\\slash\nnew line\u{1} tab\t é";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                rpc = "/breakerd.v1.Breaker/Acquire",
                trace_id = weird,
                n = 42u64,
                neg = -3i64,
                ok = true,
                ratio = 0.5f64,
                inf = f64::INFINITY,
                dbg = ?Some("x"),
                later = tracing::field::Empty,
            );
            span.record("later", 7u64);
            span.in_scope(|| tracing::info!(answer = 1u64, "inside"));
        });
        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        let span = &line["span"];
        assert_eq!(span["name"], "rpc", "{out}");
        assert_eq!(span["rpc"], "/breakerd.v1.Breaker/Acquire");
        assert_eq!(span["trace_id"], weird);
        assert_eq!(span["n"], 42);
        assert_eq!(span["neg"], -3);
        assert_eq!(span["ok"], true);
        assert_eq!(span["ratio"], 0.5);
        assert_eq!(span["inf"], "inf");
        assert_eq!(span["dbg"], "Some(\"x\")");
        assert_eq!(span["later"], 7);
        assert_eq!(line["message"], "inside");
        assert_eq!(line["answer"], 1);
    }
}
