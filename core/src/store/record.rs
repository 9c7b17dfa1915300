//! What the store holds, and how one record became one line of the old
//! log format (`state.log`, read once at start to import it).
//!
//! A line is `CRC32-hex SPACE JSON NEWLINE`, the checksum taken over the JSON
//! bytes. JSON keeps the log readable with `tail` and `jq`; the checksum and
//! the trailing newline let recovery tell a torn or corrupted write from a
//! good record, and keep every record before it.
//!
//! Instants never reach disk: deadlines are saved as Unix milliseconds and
//! turned back into instants on the coordinator's monotonic clock at load,
//! so downtime counts against an open circuit's remaining time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakerd_policy::{Override, OverrideKind, Persisted, PolicySpec, State};
use serde::{Deserialize, Serialize};

/// One entry of the state log.
// Records are transient (built, written, dropped); boxing the large variant
// would only add an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A coordinator run started. Generations handed out in a run start
    /// above every generation of earlier runs (see [`generation_floor`]).
    Epoch(u64),
    /// The durable state of one circuit, replacing any earlier record of it.
    Circuit(CircuitRecord),
    /// The circuit was deleted (or no longer has anything worth keeping).
    Forget(String),
}

/// The durable state of one circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitRecord {
    /// Circuit name.
    pub name: String,
    /// Breaker state when saved.
    pub state: State,
    /// Generation when saved.
    pub generation: u64,
    /// Open deadline, Unix milliseconds, while open with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
    /// Trips since the last full recovery.
    #[serde(default)]
    pub consecutive_trips: u32,
    /// Policy changes made through the admin API (merged onto the
    /// configured policy at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_policy: Option<PolicySpec>,
    /// Operator override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_: Option<OverrideRecord>,
    /// Policy version when saved (1 when absent: records written before
    /// versions were kept), so that it never goes back across a restart.
    #[serde(default = "first_policy_version")]
    pub policy_version: u64,
}

fn first_policy_version() -> u64 {
    1
}

/// An operator override on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRecord {
    /// What it does.
    pub kind: OverrideKind,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When it lapses, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// A clock pair taken at one moment, to move deadlines between the
/// monotonic clock and wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// Monotonic now.
    pub mono: Instant,
    /// Wall-clock now, Unix milliseconds.
    pub unix_ms: u64,
}

impl Clocks {
    /// Both clocks now (`mono` from tokio's clock, which tests may pause).
    pub fn now() -> Self {
        Self::at(tokio::time::Instant::now().into_std())
    }

    /// Wall-clock now paired with the given monotonic instant.
    pub fn at(mono: Instant) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self { mono, unix_ms }
    }

    fn to_unix(self, t: Instant) -> u64 {
        let ahead =
            u64::try_from(t.saturating_duration_since(self.mono).as_millis()).unwrap_or(u64::MAX);
        self.unix_ms.saturating_add(ahead)
    }

    fn to_mono(self, unix_ms: u64) -> Instant {
        self.mono + Duration::from_millis(unix_ms.saturating_sub(self.unix_ms))
    }
}

impl CircuitRecord {
    /// The record of a breaker's durable parts.
    pub fn from_persisted(
        name: &str,
        saved: &Persisted,
        admin_policy: Option<PolicySpec>,
        clocks: Clocks,
    ) -> Self {
        Self {
            name: name.to_owned(),
            state: saved.state,
            generation: saved.generation,
            open_until_ms: saved.open_until.map(|t| clocks.to_unix(t)),
            consecutive_trips: saved.consecutive_trips,
            admin_policy,
            override_: saved.override_.as_ref().map(|o| OverrideRecord {
                kind: o.kind,
                reason: o.reason.clone(),
                actor: o.actor.clone(),
                expires_at_ms: o.expires_at.map(|t| clocks.to_unix(t)),
            }),
            policy_version: 1,
        }
    }

    /// The breaker's durable parts, with deadlines moved onto the monotonic
    /// clock of `clocks` (a deadline that passed while the coordinator was
    /// down becomes `clocks.mono`, i.e. due now).
    pub fn to_persisted(&self, clocks: Clocks) -> Persisted {
        Persisted {
            state: self.state,
            generation: self.generation,
            open_until: self.open_until_ms.map(|t| clocks.to_mono(t)),
            consecutive_trips: self.consecutive_trips,
            override_: self.override_.as_ref().map(|o| Override {
                kind: o.kind,
                reason: o.reason.clone(),
                actor: o.actor.clone(),
                expires_at: o.expires_at_ms.map(|t| clocks.to_mono(t)),
            }),
        }
    }

    /// Whether anything in it must survive a restart: an admin policy, an
    /// override, or a state other than closed.
    pub fn worth_keeping(&self) -> bool {
        self.admin_policy.is_some() || self.override_.is_some() || self.state != State::Closed
    }
}

/// The lowest generation a circuit may hand out in run `epoch`: runs are
/// 2^32 generations apart, so no generation of an earlier run is reached
/// again (a circuit would need 4 billion transitions in one run).
pub fn generation_floor(epoch: u64) -> u64 {
    epoch.saturating_mul(1 << 32)
}

/// One log line for `record`.
pub fn encode(record: &Record) -> String {
    // Serialising these plain structs cannot fail.
    let json = serde_json::to_string(record).unwrap_or_default();
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

/// Why a line could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line has no newline: the write was torn.
    #[error("truncated record (no trailing newline)")]
    Truncated,
    /// The line does not start with a checksum and a space.
    #[error("malformed record header")]
    Header,
    /// The checksum does not match the contents.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Checksum in the line.
        stored: u32,
        /// Checksum of the contents.
        computed: u32,
    },
    /// The checksum matches but the contents are not a record this version
    /// understands.
    #[error("unreadable record: {0}")]
    Json(String),
}

/// Reads the record at the start of `bytes`; returns it and the length of
/// its line.
pub fn decode(bytes: &[u8]) -> Result<(Record, usize), LineError> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(LineError::Truncated)?;
    let line = &bytes[..end];
    if line.len() < 10 || line[8] != b' ' {
        return Err(LineError::Header);
    }
    let stored = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or(LineError::Header)?;
    let json = &line[9..];
    let computed = crc32fast::hash(json);
    if stored != computed {
        return Err(LineError::Checksum { stored, computed });
    }
    let record = serde_json::from_slice(json).map_err(|e| LineError::Json(e.to_string()))?;
    Ok((record, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CircuitRecord {
        CircuitRecord {
            name: "payments".into(),
            state: State::Open,
            generation: 7,
            open_until_ms: Some(1_000_000),
            consecutive_trips: 2,
            admin_policy: Some(PolicySpec {
                consecutive_failures: Some(3),
                ..Default::default()
            }),
            override_: Some(OverrideRecord {
                kind: OverrideKind::ForcedOpen,
                reason: "incident 42".into(),
                actor: "ops".into(),
                expires_at_ms: None,
            }),
            policy_version: 3,
        }
    }

    #[test]
    fn lines_round_trip() {
        for record in [
            Record::Epoch(3),
            Record::Circuit(sample()),
            Record::Forget("x".into()),
        ] {
            let line = encode(&record);
            assert!(line.ends_with('\n'));
            assert_eq!(decode(line.as_bytes()), Ok((record, line.len())));
        }
    }

    #[test]
    fn damage_is_detected() {
        let line = encode(&Record::Circuit(sample()));
        let bytes = line.as_bytes();
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(LineError::Truncated));
        let mut flipped = bytes.to_vec();
        flipped[20] ^= 0x01;
        assert!(matches!(decode(&flipped), Err(LineError::Checksum { .. })));
        assert_eq!(decode(b"zz\n"), Err(LineError::Header));
        let bogus = "{\"nope\":1}";
        let line = format!("{:08x} {bogus}\n", crc32fast::hash(bogus.as_bytes()));
        assert!(matches!(decode(line.as_bytes()), Err(LineError::Json(_))));
    }

    #[test]
    fn deadlines_count_downtime() {
        let mono = Instant::now();
        let saved_at = Clocks {
            mono,
            unix_ms: 1_000_000,
        };
        let persisted = Persisted {
            state: State::Open,
            generation: 4,
            open_until: Some(mono + Duration::from_secs(60)),
            consecutive_trips: 1,
            override_: None,
        };
        let rec = CircuitRecord::from_persisted("p", &persisted, None, saved_at);
        assert_eq!(rec.open_until_ms, Some(1_060_000));
        // Loaded 45 s later (wall clock) by a process whose monotonic clock
        // started elsewhere: 15 s remain.
        let other_mono = Instant::now() + Duration::from_secs(5);
        let loaded_at = Clocks {
            mono: other_mono,
            unix_ms: 1_045_000,
        };
        let back = rec.to_persisted(loaded_at);
        assert_eq!(back.open_until, Some(other_mono + Duration::from_secs(15)));
        // Loaded after the deadline: due now.
        let late = Clocks {
            mono: other_mono,
            unix_ms: 2_000_000,
        };
        assert_eq!(rec.to_persisted(late).open_until, Some(other_mono));
    }

    #[test]
    fn generation_floors_are_far_apart() {
        assert_eq!(generation_floor(0), 0);
        assert!(generation_floor(2) > generation_floor(1) + u64::from(u32::MAX));
        assert_eq!(generation_floor(u64::MAX), u64::MAX);
    }
}
