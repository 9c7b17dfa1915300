//! `[log]`: the log format and filter, with their `--log-*` overrides.
//! The filter is parsed here, so a bad one stops the start naming its key;
//! [`crate::telemetry`] installs the checked values.

use serde::{Deserialize, Serialize};

use super::{cli::Cli, error::ConfigError};
use crate::telemetry::{self, LogFormat};

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `json` or `text`.
    pub format: LogFormat,
    /// An `EnvFilter` directive string, e.g. `info` or `breakerd=debug`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl LogSection {
    /// The format and the filter (checked to parse), `cli` winning.
    pub fn check(&self, cli: &Cli) -> Result<(LogFormat, String), ConfigError> {
        let format = cli.log_format.unwrap_or(self.format);
        let (key, level) = match &cli.log_level {
            Some(level) => ("--log-level", level.clone()),
            None => ("log.level", self.level.clone()),
        };
        telemetry::parse_filter(&level).map_err(|e| ConfigError::new(key, e))?;
        Ok((format, level))
    }
}
