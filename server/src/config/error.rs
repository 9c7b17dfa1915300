//! [`ConfigError`], what every check of the config returns, and the range
//! checks most keys share.

use std::{fmt, time::Duration};

/// A configuration that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The offending key as a path (`circuits[1].policy.open_base_ms`), or
    /// the file when it cannot be read or parsed.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}: {}", self.key, self.reason)
    }
}

impl ConfigError {
    /// The error of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `v` when it is within `min..=max`, as a `usize`.
pub(super) fn within(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if !(min..=max).contains(&v) {
        return Err(ConfigError::new(
            key,
            format!("must be within {min}..={max}, not {v}"),
        ));
    }
    usize::try_from(v)
        .map_err(|_| ConfigError::new(key, format!("{v} is too large for this platform")))
}

/// `v` milliseconds when within `min..=max`.
pub(super) fn ms_within(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    within(key, v, min, max)?;
    Ok(Duration::from_millis(v))
}
