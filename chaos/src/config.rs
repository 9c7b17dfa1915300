//! The config file the suite gives the coordinator: policies for the
//! suite's circuit names, and per-client rate limits raised out of the way
//! when this coordinator has them (the flood is meant to meet the circuit
//! cap, and the legitimate load must not be throttled by its own volume).

use std::path::Path;
use std::process::Command;

/// Policies of the suite's circuits.
pub const POLICIES: &str = r#"
# chaos-trip-*: one failure trips it, and it stays open ten minutes, far
# longer than the suite: after a restart it must still be OPEN with the
# remaining time it had (minus the downtime).
[[circuits]]
pattern = "chaos-trip-*"
policy = { consecutive_failures = 1, open_base_ms = 600000, open_max_ms = 600000, open_jitter = 0.0 }

# chaos-flaky-*: trips after three failures in a row and reopens soon, so
# nodes keep asking for probe leases (unary RPCs).
[[circuits]]
pattern = "chaos-flaky-*"
policy = { consecutive_failures = 3, open_base_ms = 300, open_max_ms = 1000, open_jitter = 0.2, probe_lease_ms = 1000 }
"#;

/// Rate limits raised far above anything the suite sends, for a
/// coordinator that has `[limits] client_requests_per_second` and
/// `client_new_circuits_per_minute`.
pub const RAISED_LIMITS: &str = r#"
[limits]
client_requests_per_second = 10000000
client_new_circuits_per_minute = 100000000
"#;

/// Write the suite's config to `path`: with the rate limits raised when
/// `breakerd --check-config` accepts them, without otherwise. Returns
/// whether the limits were included.
pub fn write(bin: &Path, path: &Path) -> Result<bool, String> {
    let with = format!("{RAISED_LIMITS}{POLICIES}");
    std::fs::write(path, &with).map_err(|e| format!("write {}: {e}", path.display()))?;
    if check(bin, path)? {
        return Ok(true);
    }
    std::fs::write(path, POLICIES).map_err(|e| format!("write {}: {e}", path.display()))?;
    if check(bin, path)? {
        Ok(false)
    } else {
        Err(format!(
            "breakerd --check-config refuses the suite's config {}",
            path.display()
        ))
    }
}

fn check(bin: &Path, path: &Path) -> Result<bool, String> {
    let out = Command::new(bin)
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    Ok(out.status.success())
}
