//! Logging: structured JSON lines (the default) or human-readable text on
//! stdout, filtered by an `EnvFilter` directive string.
//!
//! Per-request spans (with `rpc` and `trace_id`) come from
//! [`crate::grpc::trace`]; every event logged while handling a call carries
//! them.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

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
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
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
}
