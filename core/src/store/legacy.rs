//! The old store format (`state.log` of checksummed lines plus
//! `audit.jsonl`), read once at start to import it into the database, and
//! then moved aside so it is never imported twice.
//!
//! Reading keeps what is valid: the state log up to its first bad record,
//! and every audit line that parses (a torn or non-UTF-8 line is skipped
//! and counted, never fatal).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, CircuitRecord, Record};
use super::{AuditRecord, StoreError, io_err};

pub(super) const STATE_FILE: &str = "state.log";
pub(super) const AUDIT_FILE: &str = "audit.jsonl";
/// The rotated (older) audit file of the old format.
const AUDIT_ROTATED: &str = "audit.jsonl.1";

/// What the old files held.
#[derive(Debug, Default)]
pub(super) struct Legacy {
    /// Highest epoch line.
    pub(super) epoch: u64,
    /// Latest record of each circuit worth keeping, by name.
    pub(super) live: HashMap<String, CircuitRecord>,
    /// Valid state records read.
    pub(super) valid_records: usize,
    /// Offset and reason of the first bad state record.
    pub(super) damage: Option<(u64, String)>,
    /// Whether `state.log` was missing or empty.
    pub(super) state_empty: bool,
    /// Audit records, oldest first.
    pub(super) audit: Vec<AuditRecord>,
    /// Audit lines that could not be read.
    pub(super) audit_skipped: usize,
}

/// The old-format files present in `dir` (empty when there are none).
pub(super) fn files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == STATE_FILE
            || name == AUDIT_FILE
            || name == AUDIT_ROTATED
            || name == "state.log.tmp"
            || name.starts_with("state.log.corrupt-")
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the old files of `dir`.
pub(super) fn read(dir: &Path) -> Result<Legacy, StoreError> {
    let mut out = Legacy::default();
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    out.state_empty = bytes.is_empty();
    let mut offset = 0;
    while offset < bytes.len() {
        match record::decode(&bytes[offset..]) {
            Ok((rec, len)) => {
                match rec {
                    Record::Epoch(e) => out.epoch = out.epoch.max(e),
                    Record::Circuit(c) => {
                        out.live.insert(c.name.clone(), c);
                    }
                    Record::Forget(name) => {
                        out.live.remove(&name);
                    }
                }
                out.valid_records += 1;
                offset += len;
            }
            Err(e) => {
                out.damage = Some((offset as u64, e.to_string()));
                break;
            }
        }
    }
    for name in [AUDIT_ROTATED, AUDIT_FILE] {
        let path = dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        for line in bytes.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<AuditRecord>(line) {
                Ok(rec) => out.audit.push(rec),
                Err(_) => out.audit_skipped += 1,
            }
        }
    }
    Ok(out)
}

/// Moves the old files into a fresh `imported-<unix ms>/` folder of `dir`
/// and makes the move durable. Returns the folder.
pub(super) fn move_aside(
    dir: &Path,
    files: &[PathBuf],
    unix_ms: u64,
) -> Result<PathBuf, StoreError> {
    let to = dir.join(format!("imported-{unix_ms}"));
    fs::create_dir_all(&to).map_err(io_err(&to))?;
    for file in files {
        let Some(name) = file.file_name() else {
            continue;
        };
        let target = to.join(name);
        fs::rename(file, &target).map_err(io_err(&target))?;
    }
    super::sync_dir(&to)?;
    super::sync_dir(dir)?;
    Ok(to)
}
